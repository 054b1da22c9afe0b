"""The command line, end to end, as a user runs it, on real files: the first chain in real processes, the rest
through the same main() in this process (the `cli` fixture), which keeps the suite fast."""

import json

import numpy as np
import pytest
from PIL import Image

from vaekit.evaluation.results import SCHEMA_VERSION, CheckpointEvaluation, Comparison


def test_train_sample_reconstruct_encode_decode_info_on_digits(run_cli, tmp_path):
    run_cli("train", "--data", "digits", "--epochs", "4", "--out", "run", "--samples", "16")
    run = tmp_path / "run"
    for name in ("run.json", "metrics.jsonl", "metrics.csv", "summary.json", "samples.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["val_nelbo"] < rows[0]["val_nelbo"]  # it learned something
    assert summary["test"]["images"] == 180 and summary["test"]["nelbo"] > 0

    run_cli("sample", "run", "-n", "10", "--out", "grid.png", "--files", "each", "--seed", "3")
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.ndim == 2 and grid.shape[0] > 64 and grid.std() > 1  # a real picture, not a blank
    assert len(list((tmp_path / "each").glob("*.png"))) == 10
    assert Image.open(tmp_path / "each" / "000000.png").size == (8, 8)

    out = run_cli("reconstruct", "run", "-n", "8", "--out", "rec.png").stdout
    assert "reconstructions" in out and (tmp_path / "rec.png").is_file()

    run_cli("encode", "run", "--out", "codes.npy", "--labels", "labels.npy")
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (180, 8) and np.isfinite(codes).all()
    assert np.load(tmp_path / "labels.npy").shape == (180,)
    run_cli("decode", "run", "codes.npy", "--out", "dec.png")
    assert Image.open(tmp_path / "dec.png").size[0] > 8

    info = json.loads(run_cli("info", "run", "--json").stdout)
    assert info["model"] == "vae" and info["progress"]["epoch"] == 4 and info["dataset"] == "digits"
    text = run_cli("info", "run").stdout
    assert "VAE" in text and "test" in text and "bits/dim" in text and "4 epochs" in text
    assert info["trained_epochs"] == 4 and "at this checkpoint" in text and "incomplete" not in text


def test_info_says_the_loss_an_earlier_vaekit_stored_and_what_is_missing():
    """Metrics without the -ELBO or bits/dim (an earlier vaekit kept the terms only) are still said; a missing
    reconstruction is named."""
    from vaekit.training.log import loss_words

    old = {"val_recon": 20.0, "val_kl": 2.5, "val_loss": 22.5}
    assert loss_words(old, True, "val_") == "-ELBO 22.50 nats (recon 20.00 + KL 2.50)"
    assert loss_words({"recon": 3.0}, False) == "reconstruction 3.00 nats"
    with pytest.raises(KeyError, match="val_recon"):
        loss_words({"val_kl": 1.0}, True, "val_")


def test_sampling_is_reproducible_by_seed(cli, tmp_path):
    cli("train", "--data", "digits", "--model", "ae", "--epochs", "1", "--out", "ae")
    for name, seed in (("a.png", 1), ("b.png", 1), ("c.png", 2)):
        cli("sample", "ae", "-n", "9", "--out", name, "--seed", seed)
    a, b, c = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png", "c.png"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_mixture_fitted_after_training_is_in_the_checkpoint_and_samples_from_the_file(cli, tmp_path):
    """The plain AE cannot generate from N(0, I); the Gaussian mixture fitted to its codes, saved in the run's
    best checkpoint, lets `vaekit sample --prior gmm` generate from the file alone."""
    cli("train", "--data", "digits", "--model", "ae", "--epochs", "2", "--gmm-components", "4", "--out", "ae")
    best = tmp_path / "ae" / "checkpoints" / (tmp_path / "ae" / "checkpoints" / "best").read_text().strip()
    assert (best / "priors.safetensors").is_file()
    out = cli("sample", "ae", "-n", "16", "--prior", "gmm", "--out", "gmm.png", "--seed", "1").stdout
    assert "4-component Gaussian mixture" in out
    gmm = np.asarray(Image.open(tmp_path / "gmm.png"))
    cli("sample", "ae", "-n", "16", "--out", "normal.png", "--seed", "1")
    assert gmm.std() > 1 and not np.array_equal(gmm, np.asarray(Image.open(tmp_path / "normal.png")))
    info = json.loads(cli("info", "ae", "--json").stdout)
    assert set(info["priors"]) == {"prior", "gmm", "two-stage"}
    out = cli("sample", "ae", "-n", "16", "--prior", "two-stage", "--out", "two.png", "--seed", "1").stdout
    assert "two-stage VAE" in out and np.asarray(Image.open(tmp_path / "two.png")).std() > 1
    cli("train", "--data", "digits", "--epochs", "1", "--gmm-components", "0", "--two-stage-epochs", "0", "--out",
        "none")
    refused = cli("sample", "none", "--prior", "gmm", check=False)
    assert refused.returncode == 2
    assert "no prior 'gmm' in this checkpoint (its priors: prior)" in refused.stderr


def test_config_file_and_flags(cli, tmp_path):
    (tmp_path / "c.toml").write_text('[model]\nkind = "ae"\nlatent_dim = 3\n[data]\nname = "digits"\n'
                                     '[train]\nepochs = 1\nbatch_size = 32\n')
    cli("train", "--config", "c.toml", "--latent-dim", "5", "--out", "r")
    stored = json.loads((tmp_path / "r" / "run.json").read_text())
    assert stored["model"]["kind"] == "ae" and stored["model"]["latent_dim"] == 5  # the flag wins
    assert stored["train"]["batch_size"] == 32
    (tmp_path / "c.yaml").write_text("model:\n  kind: vae\ndata:\n  name: digits\ntrain:\n  epochs: 1\n")
    cli("train", "--config", "c.yaml", "--out", "y")
    assert json.loads((tmp_path / "y" / "run.json").read_text())["model"]["kind"] == "vae"


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "digits", "--config", "bad.toml"], "bad.toml: model: unknown setting 'latnt_dim'"),
    (["train", "--data", "digits", "--config", "type.toml"], "type.toml: train.epochs: expected an integer"),
    (["train", "--data", "nowhere/"], "unknown data set 'nowhere/'"),
    (["train", "--data", "digits", "--model", "gan", "--out", "g"], "argument --model: invalid choice: 'gan'"),
    (["train", "--data", "digits", "--out", "exists"], "exists: run folder exists and is not empty"),
    (["train", "--resume", "--out", "nothing"], "nothing: nothing to resume"),
    (["sample", "nowhere"], "nowhere: no such checkpoint or run folder"),
    (["sample", "notes.txt"], "notes.txt: expected a checkpoint folder"),
    (["sample", "exists"], "exists: not a vaekit checkpoint or run folder"),
])
def test_bad_input_gives_one_line_and_exit_2(cli, tmp_path, args, message):
    (tmp_path / "bad.toml").write_text("[model]\nlatnt_dim = 3\n")
    (tmp_path / "type.toml").write_text("[train]\nepochs = 'ten'\n")
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("precious")
    (tmp_path / "notes.txt").write_text("hi")
    proc = cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "exists" / "keep.txt").read_text() == "precious"


def test_decode_refuses_bad_codes_and_outputs_are_not_overwritten(cli, tmp_path):
    cli("train", "--data", "digits", "--epochs", "1", "--out", "run")
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3), dtype=np.float32))
    proc = cli("decode", "run", "wrong.npy", check=False)
    assert proc.returncode == 2 and "expected codes shaped (N, 8)" in proc.stderr
    nan = np.zeros((4, 8), dtype=np.float32)
    nan[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    proc = cli("decode", "run", "nan.npy", check=False)
    assert proc.returncode == 2 and "NaN" in proc.stderr
    (tmp_path / "mine.png").write_bytes(b"my picture")
    proc = cli("sample", "run", "--out", "mine.png", check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (tmp_path / "mine.png").read_bytes() == b"my picture"


def test_help_explains_each_option(cli):
    text = cli("train", "--help").stdout
    for flag in ("--beta", "--free-bits", "--kl-warmup-epochs", "--likelihood", "--resume", "--config", "--binarize"):
        assert flag in text
    assert "reparameterization" in text or "q(z|x)" in text
    assert "N(0, I)" in cli("sample", "--help").stdout
    from vaekit.models import PRESETS
    from vaekit.models.likelihoods import LIKELIHOODS

    models = " ".join(cli("compare", "--help").stdout.split())
    assert all(f" {name}," in models or f" {name} " in models for name in PRESETS), models  # every member named
    assert all(name in " ".join(text.split()) for name in LIKELIHOODS)


def test_every_setting_is_documented_once_in_its_dataclass_and_shown_by_help(cli):
    """The help of a flag is the help declared on its config field (nowhere else), with its default."""
    import dataclasses

    from vaekit.cli.flags import NOT_FLAGS, SECTIONS, flag_name

    text = " ".join(cli("train", "--help").stdout.split())
    for section, config in SECTIONS.items():
        for f in dataclasses.fields(config):
            assert f.metadata.get("help"), f"{section}.{f.name} has no help"
            if (section, f.name) not in NOT_FLAGS:
                assert flag_name(section, f.name) in text and " ".join(f.metadata["help"].split()[:6]) in text


def test_evaluate_and_compare_from_checkpoints_on_digits(cli, tmp_path):
    cli("train", "--data", "digits", "--model", "ae", "--epochs", "3", "--out", "ae")
    cli("train", "--data", "digits", "--model", "vae", "--epochs", "3", "--out", "vae")
    out = cli("evaluate", "vae", "--quick", "--json", "eval.json").stdout
    assert "IS-NLL, K=100" in out and "active units" in out and "Frechet " in out and "KID " in out
    assert "precision " in out and "coverage " in out and "real held-out images" in out
    m = json.loads((tmp_path / "eval.json").read_text())
    assert m["is_nll"]["nll"] < m["is_nll"]["nelbo_same_images"] + 3 * m["is_nll"]["stderr"]
    assert CheckpointEvaluation.from_json(m).to_json() == m and m["schema_version"] == SCHEMA_VERSION
    assert "is_nll" not in json.loads(cli("evaluate", "ae", "--quick", "--json", "ae.json").stdout and
                                      (tmp_path / "ae.json").read_text())

    cli("compare", "--data", "digits", "--ae", "ae", "--vae", "vae", "--quick", "--out", "cmp")
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert metrics["data"] == "digits" and metrics["same_networks"]
    assert Comparison.from_json(metrics).to_json() == metrics  # the file is the typed results, whole
    assert "<img" in (tmp_path / "cmp" / "report.html").read_text()

    swapped = cli("compare", "--data", "digits", "--ae", "vae", "--vae", "ae", "--quick", "--out", "bad",
                      check=False)
    assert swapped.returncode == 2 and "expected an AE checkpoint, found a VAE" in swapped.stderr
    again = cli("compare", "--use", "ae=ae", "--use", "ae=vae", check=False)
    assert again.returncode == 2 and "--use names ae twice" in again.stderr
    twice = cli("compare", "--ae", "ae", "--use", "ae=vae", check=False)
    assert twice.returncode == 2 and "--ae and --use ae=... name two different checkpoints" in twice.stderr
    for bad, message in ((["--use", "gan=ae"], "expected MODEL=PATH with MODEL one of"),
                         (["--models", "ae,ae"], "a model twice"), (["--models", "vae,flow"], "unknown model 'flow'"),
                         (["--models", "vae"], "a comparison needs at least two models")):
        refused = cli("compare", "--data", "digits", *bad, "--out", "never", check=False)
        assert refused.returncode == 2 and message in refused.stderr and not (tmp_path / "never").exists()


def test_the_family_compared_six_ways_on_digits(cli, tmp_path):
    """`compare --models`: every preset trained on the same data, measured per sampler, keyed by name; the IWAE's
    bound below its ELBO; the checkpoints reused by name; the explorer serves every compared model."""
    family = ["ae", "vae", "iwae", "vamp", "wae", "rae"]
    cli("compare", "--data", "digits", "--models", ",".join(family), "--quick", "--epochs", "1", "--quiet", "--out",
        "fam")
    m = json.loads((tmp_path / "fam" / "metrics.json").read_text())
    assert m["models"] == family and m["same_networks"] and set(m["checkpoints"]) == set(family)
    for name in family:
        assert m[name]["model"] == name and set(m[name]["samples"]) == {"prior", "gmm", "two-stage"}
        assert ("is_nll" in m[name]) == (name in ("vae", "iwae", "vamp")) and m[name]["training_seconds"] > 0
    i = m["iwae"]["is_nll"]
    assert m["iwae"]["test"]["loss"] < m["iwae"]["test"]["nelbo"] and i["bound_same_images"] < i["nelbo_same_images"]
    assert i["nll"] <= i["bound_same_images"] + 3 * i["stderr"]
    page = (tmp_path / "fam" / "report.html").read_text()
    assert all(f'alt="{name} {sampler}"' in page for name in family for sampler in ("prior", "gmm", "two-stage"))
    assert "IWAE vs VAMP" in page and "Likelihood (IS-NLL, lower is better)" in page

    from vaekit.web.app import load_models

    assert list(load_models([str(tmp_path / "fam")])) == family

    cli("compare", "--use", "iwae=fam/iwae", "--use", "vamp=fam/vamp", "--quick", "--quiet", "--out", "two")
    pair = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert pair["models"] == ["iwae", "vamp"] and pair["checkpoints"]["iwae"] == "../fam/iwae"
    assert not (tmp_path / "two" / "iwae").exists()  # nothing trained: the checkpoints were given
    one = cli("compare", "--use", "wae=fam/wae", "--out", "never", check=False)
    assert one.returncode == 2 and "a comparison needs at least two models, got wae" in one.stderr


def test_what_a_newcomer_tried_gets_one_clear_line(cli, tmp_path):
    """Found by a newcomer: a folder that merely holds a metrics.json and a report.html is not a comparison to
    replace; a WAE cannot train on one code per batch; a run with no finite step says it diverged; the pointer file
    checkpoints/best names its checkpoint."""
    (tmp_path / "mine").mkdir()
    for name, text in (("notes.txt", "precious"), ("report.html", "x"), ("metrics.json", "{}")):
        (tmp_path / "mine" / name).write_text(text)
    refused = cli("compare", "--data", "digits", "--quick", "--out", "mine", "--overwrite", check=False)
    assert refused.returncode == 2 and "not a vaekit run folder" in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    wae = cli("train", "--data", "digits", "--model", "wae", "--batch-size", "1", "--out", "w", check=False)
    assert wae.returncode == 2 and "--model wae needs --batch-size 2 or more" in wae.stderr
    nan = cli("train", "--data", "digits", "--model", "wae", "--mmd-weight", "1e30", "--epochs", "1", "--out", "nan",
              check=False)
    assert nan.returncode == 2 and "training diverged: none of its 12 steps had a finite loss" in nan.stderr
    cli("train", "--data", "digits", "--epochs", "1", "--two-stage-epochs", "0", "--out", "r")
    assert "VAE" in cli("info", "r/checkpoints/best").stdout
