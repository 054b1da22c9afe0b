"""Anomaly and out-of-distribution scoring: the detection metrics on known cases, the scores against `evaluate`'s
numbers, the class filter, and `vaekit score / ood / oneclass` end to end on the digits, bad input included."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.config import DataConfig
from vaekit.data import Batches, TensorImages, load_dataset
from vaekit.data.classes import class_indices, keep_classes, other_classes
from vaekit.data.sets import Dataset
from vaekit.data.shifts import corrupt, fit_shape
from vaekit.errors import VaekitError
from vaekit.evaluation.detection import detection, flagged, threshold_for
from vaekit.evaluation.evaluate import EvalSettings, likelihood_metrics
from vaekit.evaluation.results import OneClassReport, OodReport
from vaekit.evaluation.scores import ScoreSettings, png_bits, score_all


def test_auroc_is_one_for_separable_sets_one_half_for_identical_ones_and_below_for_reversed_ones():
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    same = detection(inside, outside)
    assert abs(same["auroc"] - 0.5) < 0.02 and abs(same["auprc"] - 0.5) < 0.03 and same["fpr_at_95_tpr"] > 0.9
    apart = detection(inside, outside + 20)
    assert apart == {"auroc": 1.0, "auprc": 1.0, "fpr_at_95_tpr": 0.0}
    assert detection(inside, outside - 2)["auroc"] < 0.1  # the score ranks them the wrong way round
    shifted = detection(inside, outside + 1)["auroc"]  # Phi(1 / sqrt(2)) for unit Gaussians one apart
    assert abs(shifted - 0.7602) < 0.015
    with pytest.raises(VaekitError):
        detection(inside, outside[:0])
    ties = np.arange(20.0)  # the same tied scores on both sides: 95% of the positives cost 95% false positives
    assert detection(ties, ties) == pytest.approx({"auroc": 0.5, "auprc": 0.5, "fpr_at_95_tpr": 0.95})


def test_a_threshold_chosen_on_held_out_scores_keeps_the_false_positive_rate_on_fresh_ones():
    rng = np.random.default_rng(1)
    held_out, fresh = rng.normal(0, 1, 4000), rng.normal(0, 1, 20000)
    for fpr in (0.01, 0.05, 0.2):
        t = threshold_for(held_out, fpr)
        assert flagged(held_out, t).mean() <= fpr
        assert abs(flagged(fresh, t).mean() - fpr) < 0.02
    # an image a model cannot explain at all (NaN or infinite score) counts as the most anomalous
    assert flagged(np.array([np.nan, np.inf, -np.inf, 0.0]), 1.0).tolist() == [True, True, False, False]


def test_png_length_measures_complexity():
    flat = torch.full((1, 1, 28, 28), 0.5)
    noise = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    bits = png_bits(torch.cat([flat, noise]))
    assert bits[0] < 800 < 28 * 28 * 6 < bits[1]  # a flat image packs into a few bytes; noise does not shrink


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory):
    from vaekit.config import ModelConfig, RunConfig, TrainConfig
    from vaekit.models import load_model
    from vaekit.training import train

    root = tmp_path_factory.mktemp("anomaly")
    models = {}
    for kind in ("ae", "vae"):
        run = RunConfig(ModelConfig(kind=kind), DataConfig(name="digits"), TrainConfig(epochs=4, two_stage_epochs=0))
        train(run, root / kind, quiet=True)
        models[kind] = load_model(root / kind).eval()
    return models, load_dataset(DataConfig(name="digits"))


def test_scores_agree_with_evaluate(digits_models):
    """The mean scores over the test split are `evaluate`'s numbers: the AE's reconstruction exactly, the VAE's
    -ELBO and IS-NLL within Monte Carlo noise."""
    models, data = digits_models
    for kind, model in models.items():
        s = EvalSettings(k=200, is_images=len(data.test))
        torch.manual_seed(0)
        test, is_nll = likelihood_metrics(model, data, s)
        scores = score_all(model, data.test, ScoreSettings(k=200, batch_size=64), quiet=True)
        assert set(scores) >= {"recon", "png_bits", "complexity"}
        if kind == "ae":
            assert "is_nll" not in scores and "nelbo" not in scores
            assert scores["recon"].mean() == pytest.approx(test.recon, rel=1e-5) and is_nll is None
            continue
        assert abs(scores["is_nll"].mean() - is_nll.nll) < 0.05 + 3 * is_nll.stderr / np.sqrt(len(data.test))
        assert abs(scores["nelbo"].mean() - test.nelbo) < 0.5
        assert (scores["is_nll"] <= scores["nelbo"] + 2.0).mean() > 0.95  # the IS estimate tightens the ELBO
        assert np.allclose(scores["bpd"], scores["is_nll"] / (64 * np.log(2)))
        assert np.allclose(scores["complexity"], scores["is_nll"] / np.log(2) - scores["png_bits"])


def test_inverted_images_are_anomalous_and_copies_of_the_test_set_are_not(digits_models):
    models, data = digits_models
    vae = models["vae"]
    x = torch.cat([xb for xb, _ in Batches(data.test, 1000)])
    test = TensorImages((x * 255).round().to(torch.uint8), data.test.labels)
    inverted = TensorImages((corrupt(x, "invert") * 255).round().to(torch.uint8))
    s = ScoreSettings(k=50)
    a, b, c = (score_all(vae, images, s, quiet=True) for images in (test, inverted, test))
    assert detection(a["is_nll"], b["is_nll"])["auroc"] > 0.99
    assert detection(a["recon"], b["recon"])["auroc"] > 0.99
    assert abs(detection(a["recon"], c["recon"])["auroc"] - 0.5) < 1e-9  # the same images: exactly chance


def toy_dataset(classes=("cat", "dog", "bird")) -> Dataset:
    labels = torch.arange(30) % 3
    images = TensorImages(torch.zeros(30, 1, 4, 4, dtype=torch.uint8) + labels.view(-1, 1, 1, 1).to(torch.uint8),
                          labels)
    return Dataset("toy", images, images.subset(torch.arange(6)), images.subset(torch.arange(12)), list(classes))


def test_classes_are_chosen_by_index_or_name_and_the_rest_is_the_anomaly():
    data = toy_dataset()
    assert class_indices("dog, 0", data) == [0, 1] and class_indices("BIRD", data) == [2]
    kept = keep_classes(data, "bird")
    assert set(kept.train.labels.tolist()) == {2} and len(kept.train) == 10 and kept.classes == data.classes
    assert "only classes 2 (bird)" in kept.notes[-1]
    rest = other_classes(data, "bird")
    assert set(rest.labels.tolist()) == {0, 1} and len(rest) == 8
    for spec, message in (("horse", "no class 'horse' in toy (its classes: 0 (cat), 1 (dog), 2 (bird))"),
                          ("3", "no class '3'"), ("1,1", "must name each class once"), ("", "no class ''")):
        with pytest.raises(VaekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
            class_indices(spec, data)
    unlabelled = Dataset("plain", TensorImages(torch.zeros(3, 1, 2, 2, dtype=torch.uint8)), *[None] * 2)
    with pytest.raises(VaekitError, match="has no labels"):
        class_indices("0", unlabelled)


def test_other_sets_are_brought_to_the_models_shape():
    grey8 = TensorImages(torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8))
    big, note = fit_shape(grey8, (3, 28, 28))
    assert big.images.shape == (5, 3, 28, 28) and "1x8x8 to the model's 3x28x28" in note
    assert torch.equal(big.images[:, 0], big.images[:, 2])  # grey repeated into RGB
    same, none = fit_shape(grey8, (1, 8, 8))
    assert same is grey8 and none is None


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_score_ood_and_thresholds_on_digits_end_to_end(cli, tmp_path):
    cli("train", "--data", "digits", "--classes", "0,1,2,3,4", "--epochs", "6", "--out", "vae")
    out = cli("ood", "vae", "--ood", "held-out", "--ood", "invert", "--ood", "digits", "--out", "ood", "-k",
              "50").stdout
    assert "test vs held-out" in out and "best on average" in out
    m = json.loads((tmp_path / "ood" / "metrics.json").read_text())
    assert m["scores"] == ["recon", "nelbo", "is_nll", "bpd", "code_nll", "png_bits", "complexity"]
    assert m["sets"]["invert"]["recon"]["auroc"] > 0.95 and m["sets"]["held-out"]["is_nll"]["auroc"] > 0.6
    assert m["sizes"]["held-out"] + m["sizes"]["test"] == 180  # the digits' test split, cut by class
    assert OodReport.from_json(m).to_json() == m  # the file is the typed report, whole
    page = (tmp_path / "ood" / "report.html").read_text()
    assert page.count("<img") >= 5 and "What the scores say" in page and 'name="viewport"' in page
    best = m["best"]  # a gallery per set of its most anomalous images, each with its score under it
    assert f"invert: the 8 most anomalous by {best}" in page and page.count('class="thumb"') >= 8 * 2 * 3
    held = read_csv(tmp_path / "ood" / "scores" / "held-out.csv")
    assert len(held) == m["sizes"]["held-out"] and {r["label"] for r in held} == {"5", "6", "7", "8", "9"}

    cli("score", "vae", "--threshold", "ood/thresholds.json", "--out", "test.csv")
    rows = read_csv(tmp_path / "test.csv")
    assert len(rows) == m["sizes"]["test"] and {r["label"] for r in rows} <= {"0", "1", "2", "3", "4"}
    assert sum(int(r["flagged"]) for r in rows) / len(rows) < 0.25  # chosen for 5% on the validation images
    best = m["best"]
    threshold = json.loads((tmp_path / "ood" / "thresholds.json").read_text())["thresholds"][best]
    assert all(int(r["flagged"]) == (float(r[best]) > threshold) for r in rows)

    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(folder / f"{i}.png")
    cli("score", "vae", "--data", f"folder:{tmp_path / 'imgs'}", "--out", "folder.csv", "-k", "5")
    files = sorted(r["file"] for r in read_csv(tmp_path / "folder.csv"))
    assert files == [str(folder / f"{i}.png") for i in range(3)]  # every image of another set, by file name

    again = cli("score", "vae", "--out", "test.csv", check=False)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


def test_what_goes_wrong_gets_one_line(cli, tmp_path):
    cli("train", "--data", "digits", "--epochs", "1", "--out", "all", "--gmm-components", "0",
        "--two-stage-epochs", "0")
    cli("train", "--data", "digits", "--epochs", "1", "--out", "other", "--seed", "1", "--two-stage-epochs", "0")
    cli("ood", "other", "--ood", "noise", "--out", "o", "-k", "5")
    cli("ood", "other", "--ood", "vflip", "--out", "o0", "-k", "0")
    cli("score", "other", "--threshold", "o0/thresholds.json", "--out", "k0.csv")  # K = 0 kept from the file
    assert "is_nll" not in read_csv(tmp_path / "k0.csv")[0]
    np.save(tmp_path / "big.npy", np.zeros((4, 16, 16), np.uint8))
    np.save(tmp_path / "none.npy", np.zeros((0, 8, 8), np.uint8))
    np.save(tmp_path / "plain.npy", np.zeros((20, 8, 8), np.uint8))
    (tmp_path / "junk.json").write_text('{"kind": "something else"}')
    cases = [
        (["train", "--data", "digits", "--classes", "12"], "no class '12' in digits (its classes: 0 (0)"),
        (["train", "--data", "digits", "--classes", "0,0"], "must name each class once"),
        (["train", "--data", "digits", "--classes", "\u00b2"], "no class '\u00b2' in digits"),  # a digit to isdigit
        (["train", "--data", "npy:plain.npy", "--classes", "0"], "has no labels"),
        (["ood", "all", "--ood", "held-out"], "the model was trained on every class"),
        (["ood", "all", "--ood", "nowhere"], "--ood 'nowhere': unknown data set"),
        (["ood", "all", "--ood", "noise", "--ood", "noise"], "names a set twice"),
        (["ood", "all", "--ood", "npy:none.npy"], "holds no images"),
        (["ood", "all", "--ood", "noise", "--fpr", "0"], "--fpr"),
        (["score", "all", "--threshold", "o/thresholds.json"], "chosen for another model"),
        (["score", "all", "--threshold", "junk.json"], "junk.json: not a valid thresholds file written by `vaekit "
                                                       "ood`: kind"),
        (["score", "other", "--threshold", "o/thresholds.json", "-k", "7"], "were chosen with K = 5"),
        (["score", "other", "--threshold", "o/thresholds.json", "--by", "fame"], "--by fame: no threshold"),
        (["score", "all", "--data", "npy:big.npy"], "images are (1, 16, 16), the model wants (1, 8, 8)"),
        (["score", "all", "-k", "-1"], "-k"),
    ]
    for args, message in cases:
        result = cli(*args, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # a model without a saved mixture gets one fitted from its own training codes
    cli("score", "all", "--out", "s.csv", "-k", "0")
    assert "code_nll" in read_csv(tmp_path / "s.csv")[0]


def test_oneclass_gives_an_auroc_per_class_and_score(cli, tmp_path):
    out = cli("oneclass", "--data", "digits", "--epochs", "3", "--out", "oc", "-k", "20").stdout
    m = json.loads((tmp_path / "oc" / "metrics.json").read_text())
    assert [r["class"] for r in m["classes"]] == list(range(10)) and "mean" in out
    assert m["mean_auroc"]["is_nll"] > 0.75 and m["mean_auroc"]["recon"] > 0.75  # far above chance, 3 epochs
    assert OneClassReport.from_json(m).to_json() == m
    assert all((tmp_path / "oc" / f"class-{c}" / "checkpoints").is_dir() for c in range(10))
    one = json.loads((tmp_path / "oc" / "class-7" / "run.json").read_text())
    assert one["data"]["classes"] == "7"
    page = (tmp_path / "oc" / "report.html").read_text()
    assert "AUROC per class and score" in page and 'alt="AUROC per class"' in page
    assert "<b>bpd</b>" not in page  # the table leaves out bpd (it ranks as is_nll), and so does its legend


@pytest.mark.parametrize("size", [1, 5])
def test_an_ood_set_of_a_few_images_is_scored_whole_not_split(cli, tmp_path, size):
    cli("train", "--data", "digits", "--epochs", "1", "--two-stage-epochs", "0", "--out", "run")
    np.save(tmp_path / "few.npy", np.random.default_rng(0).integers(0, 256, (size, 8, 8), dtype=np.uint8))
    cli("ood", "run", "--ood", "npy:few.npy", "--out", "o", "-k", "2")
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["sizes"]["npy:few.npy"] == size


def test_labels_of_a_single_class_score_no_samples_rather_than_perfect_ones(cli, tmp_path):
    """A classifier trained on one class is sure of every image: precision and confidence would read 1.000 for
    anything. Such a set gets no classifier measures, and says why."""
    np.savez(tmp_path / "one.npz", x=np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8),
             y=np.full(60, 7))
    cli("train", "--data", "npz:one.npz", "--epochs", "1", "--two-stage-epochs", "0", "--out", "run")
    out = cli("evaluate", "run", "--quick", "--json", "m.json").stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert "precision" not in json.dumps(m.get("samples", {})) and "confidence" not in out
