"""Checkpoints: safetensors + JSON round trips, refusal of pickles and mismatches, exact resume."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaekit import ModelConfig, RunConfig, build_model, load
from vaekit.config import DataConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.training import train


@pytest.mark.parametrize("config", [
    ModelConfig(kind="vae", image_shape=(1, 8, 8)),
    ModelConfig(kind="ae", image_shape=(1, 28, 28), arch="conv"),
    ModelConfig(kind="vae", image_shape=(3, 32, 32), likelihood="gaussian"),  # learned sigma
    ModelConfig(kind="vae", image_shape=(1, 8, 8), likelihood="gaussian", gaussian_scale=0.2, beta=4.0),
])
def test_save_and_load_give_identical_outputs(tmp_path, config):
    torch.manual_seed(0)
    model = build_model(config)
    if config.likelihood == "gaussian" and not config.gaussian_scale:
        with torch.no_grad():
            model.likelihood.log_scale.fill_(-0.7)
    model.save_pretrained(tmp_path / "m", meta={"note": "hello"})
    loaded = load(tmp_path / "m")
    assert loaded.kind == model.kind and loaded.config == model.config and loaded.meta["note"] == "hello"
    x = torch.rand(4, *config.image_shape)
    z = torch.randn(4, model.latent_dim)
    torch.testing.assert_close(loaded.embed(x), model.embed(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
    torch.manual_seed(5)
    a = model(x).objective
    torch.manual_seed(5)
    assert torch.equal(loaded(x).objective, a)


def test_files_are_safetensors_and_json(tmp_path):
    build_model(ModelConfig(image_shape=(1, 8, 8))).save_pretrained(tmp_path)
    assert set(load_file(str(tmp_path / "model.safetensors"))) >= {"encoder.1.weight"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["version"] == 5 and config["model"]["kind"] == "vae" and config["model"]["image_shape"] == [1, 8, 8]


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_checkpoints_are_refused_without_executing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_model(ModelConfig(image_shape=(1, 8, 8))).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(VaekitError, match="not a readable safetensors file"):
        load(tmp_path / "m")
    (tmp_path / "model.pt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(VaekitError, match="never loads pickled"):
        load(str(tmp_path / "model.pt"))
    assert not (tmp_path / "pwned").exists()


def test_config_that_does_not_match_the_weights_is_refused(tmp_path):
    build_model(ModelConfig(image_shape=(1, 8, 8), latent_dim=4)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["latent_dim"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VaekitError, match="weights do not match the config"):
        load(str(tmp_path))
    config["model"]["latent_dim"] = "six"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VaekitError, match="latent_dim: expected an integer"):
        load(str(tmp_path))


def digits_run(epochs, **train):
    return RunConfig(model=ModelConfig(kind="vae"), data=DataConfig(name="digits"),
                     train=TrainConfig(epochs=epochs, batch_size=64, samples=4, **train))


def weights(folder):
    return load_file(str(folder / "checkpoints" / (folder / "checkpoints" / "latest").read_text().strip()
                         / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    train(digits_run(3, kl_warmup_epochs=2), tmp_path / "straight", quiet=True)
    train(digits_run(1, kl_warmup_epochs=2), tmp_path / "resumed", quiet=True)
    summary = train(None, tmp_path / "resumed", resume=True, epochs=3, quiet=True)
    assert summary["epochs"] == 3
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_a_run_with_a_moving_average_of_its_weights_resumes_exactly_and_keeps_the_average(tmp_path):
    """--ema-decay: the checkpoint's model is the average (what every later command loads), the training weights ride
    in the training state, and a resumed run ends bitwise where an uninterrupted one does, both of them."""
    from vaekit.models.saving import read_safetensors

    train(digits_run(3, ema_decay=0.9, two_stage_epochs=0), tmp_path / "straight", quiet=True)
    train(digits_run(1, ema_decay=0.9, two_stage_epochs=0), tmp_path / "resumed", quiet=True)
    train(None, tmp_path / "resumed", resume=True, epochs=3, quiet=True)
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    latest = lambda run: run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()  # noqa: E731
    raw = [read_safetensors(latest(tmp_path / run) / "state.safetensors") for run in ("straight", "resumed")]
    trained = {k: v for k, v in raw[0].items() if k.startswith("weights.")}
    assert trained and all(torch.equal(v, raw[1][k]) for k, v in trained.items())
    average = weights(tmp_path / "straight")
    assert any(not torch.equal(average[k[len("weights."):]], v) for k, v in trained.items())  # an average, not a copy
    plain = tmp_path / "plain"
    train(digits_run(1, two_stage_epochs=0), plain, quiet=True)
    assert not any(k.startswith("weights.") for k in read_safetensors(latest(plain) / "state.safetensors"))


def test_a_run_json_that_names_other_data_than_its_checkpoint_is_refused_before_reading_any(tmp_path):
    """An edited run.json (another data set, or a path such as the file system's root) cannot make --resume read it:
    the checkpoint's own data settings are compared first."""
    run = tmp_path / "run"
    train(digits_run(1, two_stage_epochs=0), run, quiet=True)
    stored = json.loads((run / "run.json").read_text())
    for name in ("fashion-mnist", "/"):
        stored["data"]["name"] = name
        (run / "run.json").write_text(json.dumps(stored))
        with pytest.raises(VaekitError, match=r"data\.name is .*, but its checkpoint step-\d+ was trained with 'dig"):
            train(None, run, resume=True, epochs=2, quiet=True)


def test_the_moving_average_follows_the_formula_and_skips_what_the_step_skipped():
    from vaekit.training.step import WeightAverage

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    average = WeightAverage(model, 0.75)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update(model, torch.tensor(False))
    torch.testing.assert_close(average.model.weight, torch.full((1, 2), 1.5))  # 1 + 0.25 * (3 - 1)
    average.update(model, torch.tensor(True))  # a skipped step: the average stays
    torch.testing.assert_close(average.model.weight, torch.full((1, 2), 1.5))
    assert not average.model.weight.requires_grad


@pytest.mark.parametrize("damage", ["missing", "empty", "a step that is gone", "outside the run", "garbage"])
def test_a_damaged_latest_pointer_resumes_from_the_newest_checkpoint_never_from_scratch(tmp_path, capsys, damage):
    """The work a run did is never thrown away: with `checkpoints/latest` lost or damaged, --resume continues from
    the newest complete checkpoint and says so (under --quiet too), and ends as an uninterrupted run would."""
    train(digits_run(3, two_stage_epochs=0), tmp_path / "straight", quiet=True)
    run = tmp_path / "resumed"
    train(digits_run(2, two_stage_epochs=0), run, quiet=True)
    pointer = run / "checkpoints" / "latest"
    newest = pointer.read_text().strip()
    kept = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints" / newest).iterdir()}
    {"missing": pointer.unlink, "empty": lambda: pointer.write_text(""),
     "a step that is gone": lambda: pointer.write_text("step-99999999\n"),
     "outside the run": lambda: pointer.write_text("../../../etc\n"),
     "garbage": lambda: pointer.write_bytes(b"\xff\x00step")}[damage]()
    capsys.readouterr()
    summary = train(None, run, resume=True, epochs=3, quiet=True)
    warning = capsys.readouterr().err
    assert f"continuing from {newest}, the newest complete checkpoint" in warning
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert summary["epochs"] == 3 and [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
    assert_same_weights(tmp_path / "straight", run)
    assert kept == {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints" / newest).iterdir()} or \
        not (run / "checkpoints" / newest).exists()  # never written again from scratch (pruned later is fine)


def test_resuming_with_another_number_of_processes_says_the_batch_changed(tmp_path, capsys):
    run = tmp_path / "run"
    train(digits_run(1, two_stage_epochs=0, gmm_components=0), run, quiet=True)
    state = next((run / "checkpoints").glob("step-*")) / "state.json"
    recorded = json.loads(state.read_text())
    recorded["progress"]["world"] = 2  # as if trained under torchrun with two processes
    state.write_text(json.dumps(recorded))
    capsys.readouterr()
    train(None, run, resume=True, epochs=2, quiet=True)
    assert "was trained with 2 processes (64 images each, 128 a step) and continues with 1 (64 a step)" in \
        capsys.readouterr().err


def test_a_damaged_metrics_log_loses_only_its_damaged_lines(tmp_path, capsys):
    run = tmp_path / "run"
    train(digits_run(1, two_stage_epochs=0, gmm_components=0), run, quiet=True)
    log = run / "metrics.jsonl"
    log.write_text(log.read_text() + '{"epoch": "x"}\n[1, 2]\n{\n')
    capsys.readouterr()
    train(None, run, resume=True, epochs=2, quiet=True)
    assert "lines 2, 3, 4 are not a metrics row of this run; dropped" in capsys.readouterr().err
    assert [json.loads(r)["epoch"] for r in log.read_text().split("\n") if r] == [1, 2]


def test_a_progress_read_back_is_checked_field_by_field():
    from vaekit.training.checkpoint import Progress

    assert Progress.from_dict({"epoch": 2, "step": 9, "best_val": float("inf"), "future": 1}).epoch == 2
    for bad, words in (({"epoch": -1}, "must not be negative"), ({"best_val": float("nan")}, "got nan"),
                       ({"step": "9"}, "expected an integer"), ([1], "expected a table")):
        with pytest.raises(VaekitError, match=words):
            Progress.from_dict(bad, "state.json")


@pytest.mark.parametrize("damage", ["a batch past the epoch", "an optimizer state of another run", "latest a link",
                                    "latest a folder"])
def test_a_training_state_that_is_not_this_runs_is_refused_in_one_line(tmp_path, damage):
    import glob

    run = tmp_path / "run"
    train(digits_run(1, two_stage_epochs=0, gmm_components=0), run, quiet=True)
    state = Path(sorted(glob.glob(str(run / "checkpoints" / "step-*" / "state.json")))[-1])
    saved = json.loads(state.read_text())
    latest = run / "checkpoints" / "latest"
    if damage == "a batch past the epoch":
        saved["progress"]["batch"] = 10**6
    elif damage == "an optimizer state of another run":
        saved["optimizer"]["state"]["__int_keys__"] = [[99, {}]]
    elif damage == "latest a link":
        latest.unlink()
        latest.symlink_to("/etc/passwd")
    else:
        latest.unlink()
        latest.mkdir()
    state.write_text(json.dumps(saved))
    words = {"a batch past the epoch": "stands at batch 1000000 of an epoch",
             "an optimizer state of another run": "its optimizer state is not one per parameter",
             "latest a link": "latest: is a link, not the pointer file", "latest a folder": "latest: is a folder"}
    with pytest.raises(VaekitError, match=words[damage]) as refused:
        train(None, run, resume=True, epochs=2, quiet=True)
    assert "root:" not in str(refused.value)


def test_a_run_with_nothing_left_to_train_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    train(digits_run(2, two_stage_epochs=0, gmm_components=0), run, quiet=True)
    capsys.readouterr()
    assert train(None, run, resume=True, epochs=1, quiet=True)["epochs"] == 2
    assert "nothing left to train: it has run 2 epochs and --epochs asks for 1" in capsys.readouterr().err
