"""The contract every member of the family keeps, run over every preset: shapes (MLP and conv, grey and RGB),
a save/load round trip, a finite loss, gradients reaching every parameter, KL >= 0, and, where the posterior has
a density, the importance-sampled NLL never above the negative ELBO. A new preset is tested by being added.

Also: checkpoints written by the release of 2026-11-25 (format 1, committed under fixtures/) still load and
compute what they computed then."""

import json
import math
from pathlib import Path

import pytest
import torch

from vaekit import PRESETS, ModelConfig, build_model, load
from vaekit.errors import VaekitError
from vaekit.evaluation.metrics import importance_sampled_nll
from vaekit.models.samplers import SAMPLERS, fit_samplers

SHAPES = [(1, 8, 8), (3, 16, 16)]
FIXTURES = Path(__file__).parent / "fixtures" / "format-1"


def make(kind, arch, shape):
    """A small model; a preset whose code is made of tokens gets tokens of 2 numbers (its size then follows)."""
    torch.manual_seed(0)
    tokens = "latent_channels" in PRESETS[kind].settings
    return build_model(ModelConfig(kind=kind, image_shape=shape, arch=arch, latent_dim=0 if tokens else 5,
                                   latent_channels=2 if tokens else None, hidden=(32,), channels=(8, 16)))


@pytest.mark.parametrize("shape", SHAPES, ids=["grey", "rgb"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("kind", sorted(PRESETS))
def test_contract(kind, arch, shape, tmp_path):
    model = make(kind, arch, shape)
    x, d = torch.rand(3, *shape), model.latent_dim
    q = model.encode(x)
    assert q.mean.shape == q.sample().shape == (3, d) and q.sample(4).shape == (4, 3, d)
    assert model.embed(x).shape == (3, d) and model.decode(q.mean).shape == (3, *shape)
    codes = model.priors["prior"].sample(200, torch.Generator().manual_seed(0))  # discrete codes where they are
    model.priors.update(fit_samplers(lambda: codes, {name: 1 for name in SAMPLERS}, 0, model.latent))  # as training
    assert set(model.priors) == {"prior", *(n for n, s in SAMPLERS.items() if model.latent.discrete >= s.discrete)}
    for prior in model.priors:
        images = model.sample(4, torch.Generator().manual_seed(0), prior=prior)
        assert images.shape == (4, *shape) and 0 <= images.min() and images.max() <= 1

    loss = model(x)
    assert loss.recon.shape == loss.kl.shape == loss.total.shape == (3,) and loss.objective.ndim == 0
    assert torch.isfinite(loss.objective) and (q.kl() >= 0).all()
    with torch.no_grad():  # KL >= 0: exactly in closed form, within Monte Carlo noise against a learned prior
        kl = torch.stack([model(x).kl for _ in range(200)]).double()
    assert (kl.mean(0) >= -3 * kl.std(0) / math.sqrt(len(kl)) - 1e-6).all(), kl.mean(0)
    loss.objective.backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient reaches {silent}"

    model.save_pretrained(tmp_path / "m")
    loaded = load(tmp_path / "m").eval()
    model.eval()  # a codebook moves in training mode, as batch norm's statistics do
    assert loaded.config == model.config and set(loaded.priors) == set(model.priors)
    torch.testing.assert_close(loaded.embed(x), model.embed(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.generate(q.mean), model.generate(q.mean), rtol=0, atol=0)


@pytest.mark.parametrize("kind", sorted(k for k in PRESETS if PRESETS[k].latent.has_density))
def test_is_nll_is_a_tighter_bound_than_the_elbo(kind):
    """log p(x) >= IS estimate (K) >= ELBO in expectation: the IS-NLL may not exceed the mean -ELBO."""
    model = make(kind, "mlp", (1, 8, 8)).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        draws = torch.stack([model(x).total for _ in range(500)]).double()
    nelbo, stderr = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    nll = importance_sampled_nll(model, x, k=500)
    assert torch.all(nll <= nelbo + 3 * stderr), (nll, nelbo)


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_a_format_1_checkpoint_still_loads_and_computes_what_it_did(kind):
    model = load(FIXTURES / kind)
    expected = json.loads((FIXTURES / kind / "expected.json").read_text())
    x, z = torch.tensor(expected["x"]), torch.tensor(expected["z"])
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), torch.tensor(expected["embed"]))
        torch.testing.assert_close(model.generate(z), torch.tensor(expected["generate"]))
    assert model.kind == kind and model.meta == {"dataset": "fixture"} and set(model.priors) == {"prior"}


def test_format_versions_are_checked(tmp_path):
    build_model(ModelConfig(image_shape=(1, 8, 8))).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for version, message in ((6, "written by a newer vaekit .format 6"), ("2", "no valid format version"),
                             (None, "no valid format version")):
        (tmp_path / "config.json").write_text(json.dumps({**config, "version": version}))
        with pytest.raises(VaekitError, match=message):
            load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "version": 1, "kind": "ae"}))
    with pytest.raises(VaekitError, match="says kind 'ae' and model.kind 'vae'"):
        load(tmp_path)


@pytest.mark.parametrize("kind", sorted(PRESETS))
def test_the_objective_compiles_whole_for_any_batch_size(kind):
    """`--compile` traces the preset's objective with TorchDynamo; a new batch size (an epoch's ragged last batch)
    retraces it with a symbolic batch dimension, which must not break the graph either. A quantizer's library code
    branches on its codebook's state (k-means initialisation, dead codes), so there the graph may break, and must
    still train."""
    torch._dynamo.reset()  # each preset's own graphs: the same forward recompiled per preset would hit Dynamo's limit
    model = make(kind, "mlp", (1, 8, 8))
    compiled = torch.compile(model, backend="eager", fullgraph=model.latent.compiles_whole)
    for batch in (3, 5, 7):
        compiled(torch.rand(batch, 1, 8, 8), 0.5).objective.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kind", sorted(PRESETS))
def test_each_preset_declares_what_training_checks(kind):
    """The preset's declared settings are what the trainer and `info` read: a minimum batch, the ModelConfig fields
    it uses, the values it fills in."""
    from vaekit.config import RunConfig, TrainConfig
    from vaekit.training.step import check_train_config

    preset = PRESETS[kind]
    assert isinstance(preset.min_batch, int) and preset.min_batch >= 1
    assert all(hasattr(ModelConfig(), name) for name in (*preset.uses, *preset.settings))
    check_train_config(RunConfig(model=ModelConfig(kind=kind), train=TrainConfig(batch_size=preset.min_batch)))
    assert make(kind, "mlp", (1, 8, 8)).config.beta == preset.settings["beta"]
