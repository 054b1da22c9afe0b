"""Decoder likelihoods agree with torch.distributions, in nats summed over pixels; the 8-bit ones normalise over the
256 values, match a brute-force sum, give gradients and reach a histogram's entropy."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from vaekit import ModelConfig, build_model, load
from vaekit.evaluation.metrics import importance_sampled_nll
from vaekit.models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    LogisticMixtureLikelihood,
    OptimalGaussianLikelihood,
    bits_note,
)


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


# --- likelihoods for 8-bit images: exact over the 256 values -----------------------------------------------------

VALUES = torch.arange(256, dtype=torch.float32) / 255  # every 8-bit value, as the data carries it


def every_value_of_one_pixel(likelihood, out: torch.Tensor) -> torch.Tensor:
    """-log p(x) of each of the 256 values of a one-pixel, one-channel image under the decoder output `out`."""
    return likelihood.nll(VALUES.view(256, 1, 1, 1), out.expand(256, -1, 1, 1))


def test_the_8_bit_likelihoods_normalise_over_the_256_values():
    g = torch.Generator().manual_seed(0)
    mixture = LogisticMixtureLikelihood(5)
    cases = [torch.randn(1, 15, 1, 1, generator=g) * 3 for _ in range(20)]
    sharp = torch.zeros(1, 15, 1, 1)
    sharp[0, 10:] = -7.0  # every scale at its floor: mass in a few bins
    edge = torch.zeros(1, 15, 1, 1)
    edge[0, 5:10], edge[0, 10:] = 1.5, -5.0  # the means beyond 1: the mass in the last bin's tail
    for out in [*cases, sharp, edge]:
        total = torch.logsumexp(-every_value_of_one_pixel(mixture, out).double(), 0)
        assert abs(total.item()) < 1e-4, total
    for out in (torch.randn(1, 256, 1, 1, generator=g) * 5 for _ in range(5)):
        total = torch.logsumexp(-every_value_of_one_pixel(CategoricalLikelihood(), out).double(), 0)
        assert abs(total.item()) < 1e-5


def test_the_logistic_mixture_matches_a_brute_force_sum_of_its_components():
    """Each bin's mass is the logistic CDF's difference over the bin (the two end bins take the tails), weighted by the
    softmax of the weights: computed here with torch.distributions, component by component."""
    from torch.distributions import TransformedDistribution, Uniform
    from torch.distributions.transforms import AffineTransform, SigmoidTransform

    g = torch.Generator().manual_seed(2)
    k = 3
    out = torch.randn(1, 3 * k, 1, 1, generator=g)
    out[0, 2 * k:] = out[0, 2 * k:].clamp(min=-3)  # scales wide enough that no bin underflows
    weights, means, scales = out[0, :k, 0, 0].softmax(0), out[0, k:2 * k, 0, 0], out[0, 2 * k:, 0, 0].exp()
    edges = torch.linspace(-1, 1, 256)[:, None] + torch.tensor([-1.0, 1.0]) / 255  # each value's bin on [-1, 1]
    probs = torch.zeros(256)
    for w, m, s in zip(weights, means, scales):
        logistic = TransformedDistribution(Uniform(0.0, 1.0), [SigmoidTransform().inv, AffineTransform(m, s)])
        cdf = logistic.cdf(edges.clamp(-30, 30))
        cdf[0, 0], cdf[-1, 1] = 0.0, 1.0  # the tails
        probs += w * (cdf[:, 1] - cdf[:, 0])
    nll = every_value_of_one_pixel(LogisticMixtureLikelihood(k), out)
    torch.testing.assert_close(nll, -probs.log(), rtol=1e-3, atol=1e-3)


def test_the_categorical_is_cross_entropy_against_the_8_bit_value():
    g = torch.Generator().manual_seed(3)
    out = torch.randn(2, 3 * 256, 4, 4, generator=g)
    x = torch.randint(0, 256, (2, 3, 4, 4), generator=g).float() / 255
    logits = out.reshape(2, 3, 256, 4, 4)
    expected = -torch.distributions.Categorical(logits=logits.movedim(2, -1)).log_prob((x * 255).round().long())
    torch.testing.assert_close(CategoricalLikelihood().nll(x, out), expected.sum((1, 2, 3)))


def test_the_optimal_gaussian_is_the_gaussian_at_each_images_best_sigma():
    g = torch.Generator().manual_seed(4)
    x, mean = torch.rand(3, 1, 5, 5, generator=g), torch.rand(3, 1, 5, 5, generator=g)
    sigma = (x - mean).pow(2).mean((1, 2, 3)).sqrt().view(3, 1, 1, 1)
    expected = -Normal(mean, sigma).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(OptimalGaussianLikelihood().nll(x, mean), expected)
    for other in (0.8, 1.25):  # any other sigma explains the images worse
        assert (-Normal(mean, sigma * other).log_prob(x).sum((1, 2, 3)) > expected).all()


def test_the_8_bit_likelihoods_give_gradients_take_draw_axes_and_mean_images():
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (2, 3, 4, 4), generator=g).float() / 255
    for likelihood in (LogisticMixtureLikelihood(4), CategoricalLikelihood(), OptimalGaussianLikelihood()):
        out = torch.randn(2, 3 * likelihood.params_per_pixel, 4, 4, generator=g, requires_grad=True)
        likelihood.nll(x, out).sum().backward()
        assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
        draws = torch.randn(5, 2, 3 * likelihood.params_per_pixel, 4, 4, generator=g)  # (draws, batch, ...)
        per_draw = likelihood.nll(x.unsqueeze(0), draws)
        assert per_draw.shape == (5, 2)
        torch.testing.assert_close(per_draw[3], likelihood.nll(x, draws[3]))
        mean = likelihood.mean(draws[0])
        assert mean.shape == x.shape
        assert likelihood.code_length <= (mean.min() >= 0 and mean.max() <= 1)  # the 8-bit ones: an image in [0, 1]


def test_the_logistic_mixture_learns_an_8_bit_histogram():
    """Fitted by gradient descent to 8-bit values drawn from a known discretized mixture, the code length comes within
    a hair of the true mixture's on the same values, and never below the values' empirical entropy."""
    g = torch.Generator().manual_seed(6)
    n, weights = 4000, torch.tensor([0.6, 0.4])
    means, scales = torch.tensor([-0.75, 0.6]), torch.tensor([0.03, 0.01])
    pick = torch.multinomial(weights, n, replacement=True, generator=g)
    u = torch.rand(n, generator=g).clamp(1e-6, 1 - 1e-6)
    v = (means[pick] + scales[pick] * torch.log(u / (1 - u))).clamp(-1, 1)
    values = ((v + 1) / 2 * 255).round().long()
    x = (values.float() / 255).view(-1, 1, 1, 1)
    shares = torch.bincount(values, minlength=256).float() / n
    entropy = -(shares[shares > 0] * shares[shares > 0].log()).sum().item()
    true = torch.cat([weights.log(), means, scales.log()]).view(1, 6, 1, 1)
    mixture = LogisticMixtureLikelihood(2)
    best_possible = mixture.nll(x, true.expand(n, -1, -1, -1)).mean().item()
    out = torch.tensor([0.0, 0.0, -0.5, 0.5, -2.0, -2.0]).view(1, 6, 1, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([out], lr=0.05)
    for _ in range(500):
        optimizer.zero_grad()
        loss = mixture.nll(x, out.expand(n, -1, -1, -1)).mean()
        loss.backward()
        optimizer.step()
    assert entropy - 1e-4 <= loss.item() < best_possible + 0.02, (entropy, loss.item(), best_possible)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_every_likelihood_is_a_part_of_any_model(name, arch, tmp_path):
    """The contract over every LIKELIHOODS entry: the decoder grows to its width, gradients reach every parameter, the
    IS-NLL stays under the -ELBO, the mean image has the data's shape, and a save/load round trip decodes the same."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vae", arch=arch, image_shape=(3, 16, 16), latent_dim=4, hidden=(32,),
                                    channels=(8, 16), likelihood=name, mixture_components=3))
    x = torch.randint(0, 256, (3, 3, 16, 16)).float() / 255
    z = torch.randn(3, 4)
    assert model.decode(z).shape == (3, 3 * model.likelihood.params_per_pixel, 16, 16)
    assert model.generate(z).shape == x.shape
    loss = model(x)
    loss.objective.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert torch.isfinite(loss.objective) and not silent, silent
    model.eval()
    with torch.no_grad():
        draws = torch.stack([model(x).total for _ in range(300)]).double()
    nll = importance_sampled_nll(model, x, k=300)
    assert torch.all(nll <= draws.mean(0) + 3 * draws.std(0) / math.sqrt(len(draws))), (nll, draws.mean(0))
    model.save_pretrained(tmp_path / "m")
    loaded = load(tmp_path / "m").eval()
    torch.testing.assert_close(loaded.generate(z), model.generate(z), rtol=0, atol=0)
    assert ("is a code length" in bits_note(name)) == LIKELIHOODS[name].code_length  # what the pages say of bits/dim


def test_the_importance_sampler_decodes_fewer_codes_at_once_for_a_wider_likelihood():
    """Memory per decode stays at about `rows` numbers a pixel value whatever the likelihood's width: the categorical
    (256 a value) decodes 256 times fewer codes at once than the Bernoulli."""
    from vaekit.models.objectives import log_weight_chunks

    x = torch.rand(4, 1, 8, 8)
    sizes = {}
    for name in ("bernoulli", "categorical"):
        model = build_model(ModelConfig(kind="vae", image_shape=(1, 8, 8), latent_dim=2, likelihood=name))
        decoded, decode = [], model.decode
        model.decode = lambda z, y=None, decode=decode, decoded=decoded: decoded.append(len(z)) or decode(z, y)
        terms = [log_p for log_p, _ in log_weight_chunks(model, x, k=512, rows=2048)]
        assert sum(len(t) for t in terms) == 512  # every draw, in chunks
        sizes[name] = max(decoded)
    assert sizes == {"bernoulli": 2048, "categorical": 8}
