"""Priors p(z): the standard normal and the fitted Gaussian mixture, against torch.distributions and Monte Carlo;
the mixture saved with a checkpoint and checked when read back."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from vaekit import ModelConfig, build_model, load
from vaekit.errors import VaekitError
from vaekit.models import DiagonalGaussian, GaussianMixture, StandardNormal
from vaekit.models.priors import mixture_from_tensors


def random_mixture(k=3, d=4, seed=0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, d, d, generator=g) * 0.5
    covariance = a @ a.transpose(1, 2) + 0.3 * torch.eye(d)
    return GaussianMixture(torch.softmax(torch.randn(k, generator=g), 0), torch.randn(k, d, generator=g) * 2,
                           torch.linalg.cholesky(covariance))


def reference(p: GaussianMixture) -> MixtureSameFamily:
    return MixtureSameFamily(Categorical(p.weights), MultivariateNormal(p.means, scale_tril=p.scale_tril))


def test_mixture_log_prob_matches_torch_distributions():
    p = random_mixture()
    z = torch.randn(5, 7, 4) * 2  # any leading shape
    torch.testing.assert_close(p.log_prob(z), reference(p).log_prob(z), rtol=1e-4, atol=1e-4)


def test_standard_normal_log_prob_and_samples():
    p = StandardNormal(3)
    z = torch.randn(10, 3)
    torch.testing.assert_close(p.log_prob(z), MultivariateNormal(torch.zeros(3), torch.eye(3)).log_prob(z))
    draws = p.sample(50_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), torch.zeros(3), atol=0.02, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.ones(3), atol=0.02, rtol=0)


def test_mixture_samples_have_the_mixture_moments_and_follow_the_generator():
    p = random_mixture()
    draws = p.sample(200_000, torch.Generator().manual_seed(1))
    mean = (p.weights[:, None] * p.means).sum(0)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03, rtol=0)
    covs = p.scale_tril @ p.scale_tril.transpose(1, 2)
    second = (p.weights[:, None, None] * (covs + p.means[:, :, None] * p.means[:, None, :])).sum(0)
    torch.testing.assert_close(torch.cov(draws.T), second - torch.outer(mean, mean), atol=0.08, rtol=0.03)
    a, b = (p.sample(50, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, p.sample(50, torch.Generator().manual_seed(8)))
    components = torch.multinomial(p.weights, 50, replacement=True, generator=torch.Generator().manual_seed(7))
    assert (components[1:] != components[:-1]).any()  # drawn in random order, not sorted by component


def test_kl_to_a_mixture_is_monte_carlo_and_matches_the_closed_form_for_the_standard_normal():
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.randn(3, 4), torch.randn(3, 4))
    closed = q.kl()
    one = GaussianMixture(torch.ones(1), torch.zeros(1, 4), torch.eye(4)[None])  # N(0, I) as a 1-component mixture
    draws = q.kl(one, q.sample(20_000))  # one-sample estimates, 20,000 of them at once
    assert torch.all((draws.mean(0) - closed).abs() < 5 * draws.std(0) / math.sqrt(len(draws)) + 1e-3)
    p = random_mixture()
    z = q.sample(100_000)
    exact = (q.log_prob(z) - reference(p).log_prob(z)).mean(0)  # the same estimator with the reference density
    torch.testing.assert_close(q.kl(p, q.sample(20_000)).mean(0), exact, atol=0.3, rtol=0.02)


def test_fit_recovers_well_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    codes = torch.cat([c + 0.5 * torch.randn(2000, 2, generator=g) for c in centres])
    p = GaussianMixture.fit(codes, components=3, seed=0)
    found = p.means[torch.argsort(p.means[:, 0] * 10 + p.means[:, 1])]
    expected = centres[torch.argsort(centres[:, 0] * 10 + centres[:, 1])]
    torch.testing.assert_close(found, expected, atol=0.1, rtol=0)
    torch.testing.assert_close(p.weights, torch.full((3,), 1 / 3), atol=0.01, rtol=0)


def test_a_fitted_mixture_is_saved_with_the_model_and_samples_the_same_after_loading(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="ae", image_shape=(1, 8, 8), latent_dim=3))
    model.priors["gmm"] = GaussianMixture.fit(torch.randn(500, 3), components=4)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "priors.safetensors").is_file()
    loaded = load(tmp_path / "m")
    assert set(loaded.priors) == {"prior", "gmm"} and "gmm" not in "".join(loaded.state_dict())
    a = model.sample(6, torch.Generator().manual_seed(3), prior="gmm")
    torch.testing.assert_close(loaded.sample(6, torch.Generator().manual_seed(3), prior="gmm"), a)


@pytest.mark.parametrize("damage", ["shape", "weights", "nan", "diagonal"])
def test_a_damaged_mixture_is_refused(damage):
    p = random_mixture(d=3)
    t = {k: v.clone() for k, v in p.tensors().items()}
    if damage == "shape":
        t["means"] = t["means"][:, :2]
    elif damage == "weights":
        t["weights"] *= 3
    elif damage == "nan":
        t["scale_tril"][0, 0, 0] = float("nan")
    else:
        t["scale_tril"][1, 2, 2] = -1.0
    with pytest.raises(ValueError, match="Gaussian mixture"):
        mixture_from_tensors(t, 3, "priors.safetensors")


def test_a_damaged_priors_file_is_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    model = build_model(ModelConfig(image_shape=(1, 8, 8), latent_dim=3))
    model.save_pretrained(tmp_path)
    p = random_mixture(d=4)  # the wrong latent size
    save_file({f"gmm.{k}": v.contiguous() for k, v in p.tensors().items()}, str(tmp_path / "priors.safetensors"))
    with pytest.raises(VaekitError, match="do not fit a 3-dimensional code"):
        load(tmp_path)
    save_file({"vamp.pseudo_inputs": torch.zeros(2)}, str(tmp_path / "priors.safetensors"))
    with pytest.raises(VaekitError, match="unknown prior 'vamp'"):
        load(tmp_path)
