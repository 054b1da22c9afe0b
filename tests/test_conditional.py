"""Conditional generation: labels through the data path as (x, y) batches, the label as a part of any preset
(`--conditional`), `sample --label`, and a conditional VAE that draws the class it is asked for on real
Fashion-MNIST."""

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import require_fashion_mnist
from PIL import Image

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import Batches, TensorImages, load_dataset
from vaekit.errors import VaekitError
from vaekit.evaluation.classifier import load_or_train_classifier
from vaekit.evaluation.evaluate import Reference, conditional_quality, first_labelled
from vaekit.models import PRESETS, build_model, load_model
from vaekit.training.trainer import train

SHAPE = (1, 8, 8)


def conditional(kind: str = "vae", arch: str = "mlp", classes: int = 3):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, arch=arch, image_shape=SHAPE, conditional=True, classes=classes,
                                   pseudo_inputs=6))


def test_batches_carry_each_image_with_its_own_label():
    images = torch.arange(40, dtype=torch.uint8).reshape(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()
    labels = torch.arange(40) % 7
    seen = list(Batches(TensorImages(images, labels), 6, shuffle=True, seed=3))
    for x, y in seen:  # pixel value i came with label i % 7, whatever the order
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long() % 7, y)
    assert sum(len(y) for _, y in seen) == 40


@pytest.mark.parametrize("kind", sorted(PRESETS))
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_every_preset_takes_the_label_and_learns_through_it(kind, arch):
    model = conditional(kind, arch)
    x, y = torch.rand(4, *SHAPE), torch.tensor([0, 1, 2, 1])
    loss = model(x, y=y)
    loss.objective.backward()
    assert torch.isfinite(loss.objective) and model.conditioning.plane.weight.grad.abs().sum() > 0  # encoder side
    z = torch.randn(2, model.latent_dim)
    with torch.no_grad():  # the same z, another label: another image (the decoder side)
        assert not torch.allclose(model.generate(z, torch.tensor([0, 0])), model.generate(z, torch.tensor([2, 2])))
        assert model.sample(6).shape == (6, *SHAPE)  # no labels: the classes in turn
    assert model.conditioning.spread(4, "cpu").tolist() == [0, 0, 1, 2]  # every class once n >= K


def test_labels_are_checked_and_named():
    model = conditional()
    model.meta["classes"] = ["cat", "dog", "bird"]
    assert model.label("Dog") == 1 and model.label(" 2 ") == 2
    with pytest.raises(VaekitError, match=r"no class 'horse'; this model's classes: 0 \(cat\), 1 \(dog\), 2 \(bird\)"):
        model.label("horse")
    with pytest.raises(VaekitError, match="no class '3'"):
        model.label("3")
    with pytest.raises(VaekitError, match="needs each image's label"):
        model.encode(torch.rand(2, *SHAPE))
    with pytest.raises(VaekitError, match="labels must lie in 0..2"):
        model.generate(torch.randn(2, model.latent_dim), torch.tensor([0, 3]))
    with pytest.raises(VaekitError, match="not conditional"):
        build_model(ModelConfig(image_shape=SHAPE)).label("0")


def test_save_and_load_keep_the_conditioning(tmp_path):
    model = conditional("iwae")
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.conditional and loaded.classes == 3
    z, y = torch.randn(5, model.latent_dim), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        assert torch.equal(model.generate(z, y), loaded.generate(z, y))
        x = torch.rand(5, *SHAPE)
        assert torch.equal(model.embed(x, y), loaded.embed(x, y))


def test_the_cli_draws_a_class_by_name_and_a_grid_by_class(cli, tmp_path):
    run = tmp_path / "run"
    cli("train", "--data", "digits", "--model", "vae", "--conditional", "--epochs", "2", "--two-stage-epochs", "0",
        "--out", str(run), "--quiet")
    assert json.loads((run / "run.json").read_text())["model"]["classes"] == 10
    out = cli("sample", str(run), "--label", "7", "-n", "5", "--out", str(tmp_path / "sevens.png"))
    assert "of class 7 " in out.stdout and "(7)" not in out.stdout
    out = cli("sample", str(run), "-n", "25", "--out", str(tmp_path / "grid.png"))
    assert "20 samples" in out.stdout and "one row per class (2 of each)" in out.stdout  # -n rounded down to rows
    assert Image.open(tmp_path / "grid.png").size[1] > 3 * Image.open(tmp_path / "grid.png").size[0]  # 10 rows of 2
    margin = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))[:, :12]  # each row's class name, on white
    assert all((row < 100).any() for row in np.array_split(margin, 10)) and margin.mean() > 200
    out = cli("evaluate", str(run), "--quick", "--samples", "200", "--json", str(tmp_path / "eval.json")).stdout
    m = json.loads((tmp_path / "eval.json").read_text())
    assert "conditional accuracy" in out and len(m["conditional"]["prior"]["classes"]) == 10
    assert {row["class"] for row in m["real_floor"]["conditional"]["classes"]} == set(range(10))
    card = (run / "README.md").read_text()  # the card's Python example passes labels, and runs as written
    example = card[card.index("```python\n", card.index("## How to load")) + 10:].split("```")[0]
    exec(example.replace("PATH", str(run)), {})
    cli("export", str(run), "--out", str(tmp_path / "exp"))  # ONNX graphs with a label input; the card's example
    onnx_card = (tmp_path / "exp" / "README.md").read_text()
    onnx_example = onnx_card[onnx_card.index("```python\n", onnx_card.index("## ONNX")) + 10:].split("```")[0]
    scope = {}
    exec(onnx_example.replace('"encoder.onnx"', repr(str(tmp_path / "exp" / "encoder.onnx")))
         .replace('"decoder.onnx"', repr(str(tmp_path / "exp" / "decoder.onnx"))), scope)
    assert scope["images"].shape == (16, 1, 8, 8) and "16 draws of class 9" in onnx_example
    cli("score", str(run), "-k", "8", "--out", str(tmp_path / "s.csv"))  # the label summed out, no code_nll
    header = (tmp_path / "s.csv").read_text().splitlines()[0].split(",")
    assert {"recon", "nelbo", "is_nll", "complexity"} <= set(header) and "code_nll" not in header
    many = tmp_path / "many.npz"  # labels this model never knew: scoring does not read them
    np.savez(many, x=np.random.default_rng(1).integers(0, 256, (20, 8, 8), dtype=np.uint8), y=np.arange(20) * 3)
    cli("score", str(run), "-k", "2", "--data", f"npz:{many}", "--out", str(tmp_path / "many.csv"))
    cli("reconstruct", str(run), "-n", "4", "--out", str(tmp_path / "r.png"))  # the test images' own labels
    cli("encode", str(run), "--out", str(tmp_path / "codes.npy"))
    cli("decode", str(run), str(tmp_path / "codes.npy"), "--label", "3",
        "--out", str(tmp_path / "d.png"))
    for args, message in (
            (["sample", str(run), "--label", "sneaker"], "no class 'sneaker'; this model's classes: 0, 1, 2"),
            (["decode", str(run), str(tmp_path / "codes.npy")], "this model is conditional: --label chooses"),
            (["reconstruct", str(run), "--data", "npy:" + str(unlabelled(tmp_path))], "these images have none"),
            (["sample", str(run), "--label", "\u00b2"], "no class '\u00b2'"),
            (["sample", str(run), "--label", "9" * 5000], "no class '999"),
            (["train", "--data", "digits", "--conditional", "--classes", "3,5", "--out", str(tmp_path / "y")],
             "--conditional learns every class"),
            (["oneclass", "--data", "digits", "--conditional", "--out", str(tmp_path / "oc")],
             "the one-class protocol trains each model on some")):
        out = cli(*args, check=False)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    unlabelled_run = cli("train", "--data", f"npy:{unlabelled(tmp_path)}", "--conditional", "--epochs", "1",
                         "--out", str(tmp_path / "x"), check=False)
    assert unlabelled_run.returncode == 2 and "--conditional needs labelled data" in unlabelled_run.stderr
    assert not (tmp_path / "x").exists()


def unlabelled(tmp_path):
    import numpy as np

    file = tmp_path / "plain.npy"
    if not file.exists():
        np.save(file, np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8))
    return file


def test_a_conditional_vae_draws_the_class_it_is_asked_for_on_fashion_mnist(tmp_path, fashion_cache):
    require_fashion_mnist()
    data = load_dataset(DataConfig(data_dir=str(fashion_cache)))
    run = RunConfig(model=ModelConfig(kind="vae", conditional=True, latent_dim=2),  # 2-D: class-free codes sooner
                    data=DataConfig(data_dir=str(fashion_cache)),
                    train=TrainConfig(epochs=1, two_stage_epochs=0, gmm_components=0, samples=10))
    train(run, tmp_path / "cvae", quiet=True, dataset=data)
    model = load_model(tmp_path / "cvae")
    classifier, accuracy = load_or_train_classifier(data, fashion_cache, quiet=True)
    real, labels = first_labelled(data.test)
    ref = Reference(classifier, classifier.features_and_confidence(real)[0], labels, accuracy)
    asked = torch.arange(1000) // 100  # 100 samples of each class
    with torch.no_grad():
        drawn = model.sample(1000, torch.Generator().manual_seed(0), y=asked)
    classified = classifier.features_and_probabilities(drawn)
    result = conditional_quality(classified, asked, ref)
    per_class = [row.accuracy for row in result.classes]
    assert result.accuracy > 0.5 and sum(a > 0.3 for a in per_class) >= 8, per_class  # chance: 0.1
    shuffled = conditional_quality(classified, asked[torch.randperm(1000, generator=torch.Generator().manual_seed(0))],
                                   ref)
    assert shuffled.accuracy < 0.25  # the same images under the wrong labels: near chance


def test_the_explorer_draws_decodes_and_encodes_in_the_chosen_class(tmp_path):
    from fastapi.testclient import TestClient

    from vaekit.web.app import Explorer, create_app, load_models

    run = RunConfig(model=ModelConfig(kind="vae", conditional=True), data=DataConfig(name="digits"),
                    train=TrainConfig(epochs=2, samples=4, two_stage_epochs=0))
    train(run, tmp_path / "cvae", quiet=True)
    models = load_models([str(tmp_path / "cvae")])
    client = TestClient(create_app(Explorer.build(models, load_dataset(DataConfig(name="digits")))),
                        base_url="http://127.0.0.1")
    name = next(iter(models))
    assert client.get("/api/models").json()[0]["conditional"] == 10
    fours, sixes = (client.post("/api/sample", json={"n": 3, "seed": 1, "label": c}).json() for c in (4, 6))
    assert fours["z"] == sixes["z"] and fours["images"][name] != sixes["images"][name]  # same z, other class
    assert len(client.post("/api/sample", json={"n": 10, "seed": 1}).json()["images"][name]) == 10
    z = [0.0] * models[name].latent_dim
    assert client.post("/api/decode", json={"model": name, "z": z, "label": 3}).headers["content-type"] == "image/png"
    for body, status in (({"model": name, "z": z}, "give label"), ({"model": name, "z": z, "label": 10}, "below 10")):
        answer = client.post("/api/decode", json=body)
        assert answer.status_code == 422 and status in answer.text
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(buffer, "PNG")
    upload = {"file": ("x.png", buffer.getvalue(), "image/png")}
    assert client.post("/api/reconstruct?label=2", files=upload).status_code == 200
    assert client.post("/api/encode", files=upload).status_code == 422
    assert client.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 4}).status_code == 200


def test_a_model_with_thousands_of_classes_shows_some_and_says_so(cli, tmp_path):
    from vaekit.cli.runs import conditional_lines
    from vaekit.evaluation.results import ClassQuality, ConditionalQuality
    from vaekit.report.conditional import SHOWN_CLASSES

    build_model(ModelConfig(image_shape=(1, 8, 8), latent_dim=2, conditional=True, classes=2000)).save_pretrained(
        tmp_path / "m")
    out = cli("sample", str(tmp_path / "m"), "--out", str(tmp_path / "grid.png"), check=False)
    assert out.returncode == 2 and "2000 classes, too many for a grid with one row each" in out.stderr
    assert not (tmp_path / "grid.png").exists()
    cli("sample", str(tmp_path / "m"), "--label", "1999", "-n", "2", "--out", str(tmp_path / "one.png"))
    rows = [ClassQuality(klass=c, images=10, accuracy=0.5) for c in range(SHOWN_CLASSES + 10)]
    drawn = ConditionalQuality(accuracy=0.5, images=10 * len(rows), classes=rows)
    lines = conditional_lines(SimpleNamespace(conditional={"prior": drawn}, real_floor=None), [])
    assert len(lines) == 2 + SHOWN_CLASSES + 1 and "10 more classes" in lines[-1]


def test_a_conditional_models_anomaly_scores_sum_the_label_out():
    """-log p(x) = log C - logsumexp_y(-(-log p(x|y))) over the C classes; the -ELBO with y as a latent variable,
    q(y|x) from the reconstructions, an upper bound on the IS-NLL; recon the best class's; never the image's own
    label (an anomaly has none)."""
    from vaekit.evaluation.scores import ScoreSettings, model_scores, score_all, score_batch

    model = conditional(classes=3).eval()
    x = first_labelled(load_dataset(DataConfig(name="digits")).test, 60)[0]
    torch.manual_seed(1)
    scores = score_batch(model, x, k=16)
    torch.manual_seed(1)
    with torch.no_grad():
        each_class = [model_scores(model, x, 16, torch.full((60,), c))[0] for c in range(3)]
    per_class = {n: torch.stack([s[n].double() for s in each_class]) for n in each_class[0]}
    each = per_class["is_nll"]
    assert torch.allclose(scores["is_nll"], np.log(3) - torch.logsumexp(-each, 0))
    best = each.min(0).values  # the mean of C terms lies between the largest one's share and the largest one
    assert (scores["is_nll"] >= best - 1e-9).all() and (scores["is_nll"] <= best + np.log(3)).all()
    q = torch.softmax(-per_class["recon"], 0)
    assert torch.allclose(scores["nelbo"], (q * (per_class["nelbo"] + np.log(3) + q.log())).sum(0))
    assert (scores["nelbo"] >= np.log(3) - torch.logsumexp(-per_class["nelbo"], 0) - 1e-9).all()  # q(y|x) is not
    # the best weighting of these draws: the bound is never below their log-mean-exp (which is biased low)
    assert torch.equal(scores["recon"], per_class["recon"].min(0).values)
    assert "code_nll" not in scores and torch.allclose(scores["bpd"], scores["is_nll"] / (64 * np.log(2)))
    nelbo = torch.stack([score_batch(model, x, k=0)["nelbo"] for _ in range(5)]).mean()
    assert nelbo > score_batch(model, x, k=500)["is_nll"].mean()  # an upper bound on -log p(x), in expectation
    pixels = (x * 255).byte()
    sets = TensorImages(pixels, torch.arange(60) % 3), TensorImages(pixels)
    same = [score_all(model, images, ScoreSettings(k=4, seed=3), quiet=True) for images in sets]
    assert all(np.array_equal(same[0][n], same[1][n]) for n in same[0])
