"""Shipping a model: ONNX graphs that agree with PyTorch, the model card and the Hugging Face layout, and the
TensorBoard log read back."""

import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vaekit import load
from vaekit.config import ModelConfig
from vaekit.models import build_model, export

PARITY = 1e-4  # float32 graphs of the same weights: rounding-level differences only


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A VAE and an AE trained briefly on the shipped digits."""
    from vaekit.cli import main

    root = tmp_path_factory.mktemp("runs")
    for kind in ("vae", "ae"):
        assert main(["train", "--data", "digits", "--model", kind, "--epochs", "2", "--out", str(root / kind),
                     "--quiet"]) == 0
    return root


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_export_writes_onnx_graphs_that_agree_with_pytorch(runs, cli, tmp_path, kind):
    out = cli("export", str(runs / kind), "--out", "exp").stdout
    folder = tmp_path / "exp"
    assert {"encoder.onnx", "decoder.onnx", "config.json", "model.safetensors", "README.md"} <= {
        p.name for p in folder.iterdir()}
    model = load(runs / kind)
    x = torch.rand(5, *model.config.image_shape)  # another batch size than at export: the batch axis is dynamic
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    outputs = encoder.run(None, {"image": x.numpy()})
    q = model.encode(x)
    expected = [q.mean, q.logvar] if kind == "vae" else [q.mean]
    assert [o.name for o in encoder.get_outputs()] == (["mean", "logvar"] if kind == "vae" else ["code"])
    for got, want in zip(outputs, expected):
        assert np.abs(got - want.detach().numpy()).max() < PARITY
    z = torch.randn(7, model.latent_dim)
    decoder = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    image = decoder.run(None, {"z": z.numpy()})[0]
    assert image.shape == (7, *model.config.image_shape)
    assert np.abs(image - model.generate(z).detach().numpy()).max() < PARITY
    stated = [float(v) for v in re.findall(r"(\d\.\d\de[-+]\d\d)", out)]
    assert len(stated) == 2 and max(stated) < PARITY  # the printed parity is the measured one
    # the export folder is itself a checkpoint vaekit loads, with the same weights and samplers
    again = load(folder)
    assert set(again.priors) == set(model.priors)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_the_cards_onnx_example_runs_as_written(runs, cli, tmp_path, monkeypatch):
    cli("export", str(runs / "vae"), "--out", "exp")
    card = (tmp_path / "exp" / "README.md").read_text()
    onnx_part = card[card.index("## ONNX"):]
    code = re.search(r"```python\n(.*?)```", onnx_part, re.S).group(1)
    monkeypatch.chdir(tmp_path / "exp")
    scope: dict = {}
    exec(code, scope)
    model = load(runs / "vae")
    assert scope["images"].shape == (16, *model.config.image_shape) and scope["mean"].shape == (4, model.latent_dim)
    assert 0 <= scope["images"].min() and scope["images"].max() <= 1


@pytest.mark.parametrize("classes", [0, 3])
def test_a_conv_model_exports_too_and_a_conditional_one_takes_labels(tmp_path, classes):
    model = build_model(ModelConfig(kind="vae", image_shape=(3, 16, 16), arch="conv", latent_dim=4,
                                    channels=(8, 16), conditional=bool(classes), classes=classes)).eval()
    files = export.export_graphs(model, tmp_path)
    diff = export.parity(model, files, torch.rand(6, 3, 16, 16), torch.tensor([2, 0, 1, 1, 2, 0]) if classes else None)
    assert diff["encoder_max_abs_diff"] < PARITY and diff["decoder_max_abs_diff"] < PARITY
    decoder = ort.InferenceSession(str(files["decoder"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in decoder.get_inputs()] == ["z", "label"][:1 + bool(classes)]
    if classes:  # one z, each class: the label input reaches the image, as in PyTorch
        z, y = torch.randn(1, 4).repeat(3, 1), torch.arange(3)
        images = decoder.run(None, {"z": z.numpy(), "label": y.numpy()})[0]
        assert np.abs(images - model.generate(z, y).detach().numpy()).max() < PARITY
        assert np.abs(images[0] - images[1]).max() > 1e-3


def test_every_run_gets_a_model_card_in_hugging_face_layout(runs, cli, tmp_path):
    run = runs / "vae"
    card = (run / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    model = load(run)
    front = card.split("---")[1]
    assert "library_name: vaekit" in front and "datasets" not in front  # the digits are no hub data set
    for words in ("## Data", "## Settings", "## Measured", "## Intended use and limitations", "## How to load",
                  f"latent dimension {model.latent_dim}", f"| test | {summary['test']['images']} |",
                  f"{summary['test']['nelbo']:.2f}", f"| validation | {model.meta['metrics']['val_images']} |"):
        assert words in card, words
    best = run / "checkpoints" / (run / "checkpoints" / "best").read_text().strip()
    assert {"README.md", "config.json", "model.safetensors"} <= {p.name for p in best.iterdir()}
    assert (best / "README.md").read_text() == card
    ae_card = (runs / "ae" / "README.md").read_text()
    assert "| - | " in ae_card.split("| test |")[1] and "no likelihood bound" in ae_card  # an AE has no -ELBO
    cli("export", str(run), "--format", "safetensors", "--out", "hub")
    assert {p.name for p in (tmp_path / "hub").iterdir()} >= {"README.md", "config.json", "model.safetensors"}
    assert not list((tmp_path / "hub").glob("*.onnx"))


def test_export_refuses_graphs_that_disagree_and_leaves_nothing(runs, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any difference at all now counts as a disagreement
    refused = cli("export", str(runs / "vae"), "--out", "exp", check=False)
    assert refused.returncode == 2 and "disagree with PyTorch" in refused.stderr
    assert not (tmp_path / "exp").exists()


def test_a_checkpoint_away_from_its_data_is_checked_on_noise(cli, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "d.npz", x=(digits.images[:120] * 255 / 16).astype(np.uint8), y=digits.target[:120])
    cli("train", "--data", "npz:d.npz", "--epochs", "1", "--out", "run")
    (tmp_path / "d.npz").unlink()
    out = cli("export", "run", "--out", "exp").stdout
    assert "not at hand" in out and "images of uniform noise" in out
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "images of uniform noise" in card and str(tmp_path) not in card  # no local path in a card to publish


def test_export_refuses_bad_input_before_writing(runs, cli, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "afile").write_text("mine")
    for args, message in ((["--out", "mine", "--overwrite"], "not a vaekit run folder"),
                          (["--out", "mine"], "exists and is not empty"),
                          (["--out", "afile"], "exists and is not a folder"),
                          (["--format", "tflite", "--out", "x"], "invalid choice"),
                          ([], "--out")):
        refused = cli("export", str(runs / "vae"), *args, check=False)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert "ONNX:" not in refused.stdout  # refused before the graphs were built and checked
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    missing = cli("export", "nowhere", "--out", "x", check=False)
    assert missing.returncode == 2 and "no such checkpoint" in missing.stderr and not (tmp_path / "x").exists()


def test_tensorboard_logs_every_epoch_and_reads_back(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = EventAccumulator(str(runs / "vae" / "tensorboard"))
    log.Reload()
    rows = [json.loads(line) for line in (runs / "vae" / "metrics.jsonl").read_text().splitlines()]
    for key in ("val_nelbo", "train_loss", "val_kl"):
        events = log.Scalars(key)
        assert [e.step for e in events] == [r["step"] for r in rows]
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_odd_metadata_is_refused_by_field_and_a_damaged_summary_costs_the_card_a_row(runs, cli, tmp_path):
    """config.json's run metadata of the wrong type is refused in one line naming the file and the field, before
    anything is written; a damaged summary.json costs the card its measured row, not the export. The card itself,
    handed odd sections, shows '?' and '-' for what it cannot read and never a local path."""
    import shutil

    from vaekit.models.card import model_card

    run = tmp_path / "odd"
    shutil.copytree(runs / "vae", run)
    best = run / "checkpoints" / (run / "checkpoints" / "best").read_text().strip()
    pristine = json.loads((best / "config.json").read_text())
    odd = {**pristine, "metrics": [1], "data": "x", "train": None, "progress": 5, "classes": "abc",
           "dataset": {"path": "/home/me/secret"}}
    for field in ("metrics", "data", "progress", "classes", "dataset"):
        (best / "config.json").write_text(json.dumps({**pristine, field: odd[field]}))
        line = cli("export", str(run), "--format", "safetensors", "--out", "exp", check=False).stderr
        assert f"config.json: {field}" in line and len(line.strip().splitlines()) == 1, line
        assert not (tmp_path / "exp").exists()
    (best / "config.json").write_text(json.dumps(pristine))
    (run / "summary.json").write_text('{"test": [1]}')
    out = cli("export", str(run), "--format", "safetensors", "--out", "exp").stdout
    assert "holds no readable test metrics" in out and (tmp_path / "exp" / "README.md").is_file()
    card = model_card(odd)
    assert "epochs of batch ?" in card and "Nothing measured yet" in card and "/home/me" not in card.split("`")[1]


@pytest.mark.parametrize("kind", ["vqvae", "fsq"])
def test_discrete_codes_export_for_any_batch_size(tmp_path, kind):
    """A quantized encoder exports with a dynamic batch: PyTorch searches the nearest code in chunks (1024 tokens at a
    time against 4096 codes), the exported graph all at once, and both agree on 3 and on 300 images."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, image_shape=(1, 8, 8), arch="conv", channels=(8,), latent_channels=4,
                                    codebook_size=4096)).eval()
    files = export.export_graphs(model, tmp_path)
    for n in (3, 300):
        diff = export.parity(model, files, torch.rand(n, 1, 8, 8))
        assert diff["encoder_max_abs_diff"] < PARITY and diff["decoder_max_abs_diff"] < PARITY, (n, diff)
