"""The seed's math: q(z|x) = N(mu, diag sigma^2), z = mu + sigma * eps, KL to N(0, I) in closed form."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaekit.models.latents import LATENTS
from vaekit.models.posterior import DiagonalGaussian
from vaekit.models.priors import StandardNormal

standard_normal_log_prob = StandardNormal(6).log_prob


def random_posterior(b=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, d, generator=g)
    logvar = torch.randn(b, d, generator=g) * 1.5
    return DiagonalGaussian(mu, logvar)


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    q = random_posterior()
    z = q.sample(200_000)  # (S, B, D)
    mc = (q.log_prob(z) - standard_normal_log_prob(z)).mean(0)
    # Monte-Carlo standard error of the estimate, per row
    se = (q.log_prob(z) - standard_normal_log_prob(z)).std(0) / math.sqrt(z.shape[0])
    assert torch.all((mc - q.kl()).abs() < 5 * se + 1e-3), (mc, q.kl())


def test_kl_matches_torch_distributions_and_is_zero_at_prior():
    q = random_posterior()
    expected = kl_divergence(Normal(q.mu, q.sigma), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(q.kl(), expected)
    prior = DiagonalGaussian(torch.zeros(3, 5), torch.zeros(3, 5))
    assert torch.all(prior.kl().abs() < 1e-7)
    assert torch.all(q.kl() > 0)


def test_log_prob_matches_torch_distributions():
    q = random_posterior()
    z = torch.randn(7, 4, 6)
    torch.testing.assert_close(q.log_prob(z), Normal(q.mu, q.sigma).log_prob(z).sum(-1))
    torch.testing.assert_close(standard_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_reparameterized_sample_has_the_posterior_moments():
    torch.manual_seed(1)
    q = random_posterior(b=2, d=3)
    z = q.sample(100_000)
    torch.testing.assert_close(z.mean(0), q.mu, atol=0.05 * q.sigma.max().item(), rtol=0)
    torch.testing.assert_close(z.std(0), q.sigma, rtol=0.02, atol=0)


def test_gradients_flow_through_sample_to_mu_and_sigma():
    mu = torch.tensor([[0.5, -1.0]], requires_grad=True)
    logvar = torch.tensor([[0.2, -0.4]], requires_grad=True)
    torch.manual_seed(2)
    q = DiagonalGaussian(mu, logvar)
    z = q.sample()
    z.sum().backward()
    eps = (z - mu) / q.sigma
    # dz/dmu = 1, dz/dlogvar = 0.5 * sigma * eps
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(logvar.grad, (0.5 * q.sigma * eps).detach())
    assert torch.all(logvar.grad != 0)


def test_same_x_gives_different_z_but_one_mean():
    q = random_posterior()
    assert not torch.equal(q.sample(), q.sample())
    assert torch.equal(q.mean, q.mu)


@pytest.mark.parametrize("logvar", [-1e4, 1e4])
def test_logvar_is_clamped_to_a_safe_range(logvar):
    q = DiagonalGaussian(torch.zeros(1, 2), torch.full((1, 2), logvar))
    assert torch.isfinite(q.kl()).all() and torch.isfinite(q.log_prob(q.sample())).all()
    assert q.logvar.min() >= -30 and q.logvar.max() <= 20


@pytest.mark.parametrize("name", sorted(LATENTS))
def test_every_latent_keeps_the_contract(name):
    """One contract over every latent part: the posterior of an encoder output of params_per_dim numbers per
    dimension samples codes of the latent size (n draws: a leading n), has a mean, a KL against N(0, I) that is
    never negative, a log density exactly where it says it has one, and exports as many tensors as it names."""
    from vaekit.config import ModelConfig
    from vaekit.models.posterior import divergence
    from vaekit.models.priors import StandardNormal

    latent = LATENTS[name](ModelConfig(arch="mlp", latent_dim=6, latent_channels=2))  # 3 tokens of 2 numbers
    params = torch.randn(5, 6 * latent.params_per_dim)
    q = latent(params)
    assert q.sample().shape == q.mean.shape == (5, 6) and q.sample(4).shape == (4, 5, 6)
    assert latent.grid == (2, 1, 3)
    kl, per_dim = divergence(q, StandardNormal(6))
    assert kl.shape == (5,) and (kl >= 0).all() and per_dim.shape == (5, 6)
    assert len(q.exported()) == len(latent.outputs) and all(t.shape[0] == 5 for t in q.exported())
    if latent.has_density:
        assert q.log_prob(q.sample()).shape == (5,) and q.scale.shape == (5, 6)
    else:
        with pytest.raises(ValueError):
            q.log_prob(q.mean)
    if latent.discrete:  # outside training, codes are exact codebook entries, one index per token
        q = latent.eval()(params)
        assert q.indices.shape == (5, 3) and 0 <= q.indices.min() and q.indices.max() < latent.codebook_size
        assert torch.equal(latent.codes_from_indices(q.indices), q.mean)
        assert latent.random_codes(4, torch.Generator().manual_seed(0)).shape == (4, 6)


def test_the_kl_against_a_prior_without_a_closed_form_is_estimated_from_draws():
    """divergence: the Monte Carlo estimate, log q(z|x) - log p(z), where the prior has no closed form; it averages
    to the closed form (checked against N(0, I) by hiding its closed form)."""
    from vaekit.models.posterior import divergence
    from vaekit.models.priors import StandardNormal

    class Hidden(StandardNormal):
        def closed_form_kl(self, q):
            return None

    torch.manual_seed(0)
    q = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3) * 0.3)
    estimates = torch.stack([divergence(q, Hidden(3))[0] for _ in range(4000)])
    assert divergence(q, Hidden(3))[1] is None
    torch.testing.assert_close(estimates.mean(0), divergence(q, StandardNormal(3))[0], atol=0.08, rtol=0)
