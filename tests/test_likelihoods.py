"""Decoder likelihoods agree with torch.distributions, in nats summed over pixels."""

import torch
from torch.distributions import Bernoulli, Normal

from vaekit.models.likelihoods import BernoulliLikelihood, GaussianLikelihood


def test_bernoulli_nll_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 8, 8, generator=g) * 4
    for x in (torch.rand(5, 1, 8, 8, generator=g), torch.bernoulli(torch.rand(5, 1, 8, 8, generator=g))):
        expected = -Bernoulli(logits=logits, validate_args=False).log_prob(x).sum((1, 2, 3))
        torch.testing.assert_close(BernoulliLikelihood().nll(x, logits), expected)


def test_bernoulli_is_stable_at_extreme_logits():
    logits = torch.tensor([-200.0, 200.0]).view(1, 1, 1, 2)
    x = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    nll = BernoulliLikelihood().nll(x, logits)
    assert torch.isfinite(nll).all() and abs(nll.item() - 400.0) < 1e-3


def test_gaussian_nll_matches_torch_distributions_fixed_and_learned():
    g = torch.Generator().manual_seed(1)
    x, mean = torch.rand(3, 3, 4, 4, generator=g), torch.rand(3, 3, 4, 4, generator=g)
    fixed = GaussianLikelihood(scale=0.1)
    torch.testing.assert_close(fixed.nll(x, mean), -Normal(mean, 0.1).log_prob(x).sum((1, 2, 3)))
    learned = GaussianLikelihood(scale=0)
    with torch.no_grad():
        learned.log_scale.fill_(-1.3)
    expected = -Normal(mean, torch.exp(torch.tensor(-1.3))).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(learned.nll(x, mean), expected)
    learned.nll(x, mean).sum().backward()
    assert learned.log_scale.grad is not None and learned.log_scale.grad != 0
    assert "log_scale" not in dict(fixed.named_parameters())


def test_means_are_images():
    logits = torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(BernoulliLikelihood().mean(logits), torch.sigmoid(logits))
