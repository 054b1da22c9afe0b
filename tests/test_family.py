"""The family's math, checked numerically: the IWAE bound against the ELBO and the likelihood, the MMD of the WAE,
the VampPrior as a density, the RAE's penalty, the two-stage sampler, and the presets' own settings."""

import math

import pytest
import torch

from vaekit import ModelConfig, build_model, load
from vaekit.errors import VaekitError
from vaekit.evaluation.metrics import importance_sampled_nll
from vaekit.models.objectives import imq_mmd, log_weights
from vaekit.models.priors import two_stage_from_tensors
from vaekit.models.samplers import second_stage


def model_of(kind, **settings):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, image_shape=(1, 8, 8), latent_dim=4, hidden=(32,), **settings)).eval()


def mean_and_error(draws):
    draws = torch.stack(draws).double()
    return draws.mean(0), draws.std(0) / math.sqrt(len(draws))


@torch.no_grad()
def test_the_iwae_bound_at_k_1_is_the_elbo_on_the_same_draw():
    model, x = model_of("iwae", iwae_k=1), torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    bound = model(x).total
    torch.manual_seed(1)
    single_draw_elbo = log_weights(model, x, 1)[0]  # log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x)
    torch.testing.assert_close(bound, -single_draw_elbo)


@torch.no_grad()
def test_the_iwae_bound_tightens_with_k_and_never_passes_the_likelihood():
    """E[-bound_k] falls as k grows, starts at the -ELBO (closed-form KL) and stays above -log p(x) (IS, K = 5000)."""
    x = torch.rand(4, 1, 8, 8)
    vae = model_of("vae")
    elbo, elbo_error = mean_and_error([vae(x).total for _ in range(400)])
    means, errors = {}, {}
    for k in (1, 5, 50):
        model = model_of("iwae", iwae_k=k)  # the same weights as `vae`: seed 0, same networks
        means[k], errors[k] = mean_and_error([model(x).total for _ in range(400)])
        assert torch.all(means[k] <= elbo + 3 * (elbo_error + errors[k])), (k, means[k], elbo)
    assert torch.all((means[1] - elbo).abs() < 4 * (elbo_error + errors[1]))  # k = 1: the ELBO in expectation
    assert torch.all(means[50] < means[5]) and torch.all(means[5] < means[1])
    nll = importance_sampled_nll(vae, x, k=5000)
    assert torch.all(nll <= means[50] + 0.05), (nll, means[50])


def test_mmd_is_near_zero_for_one_distribution_and_clearly_above_for_two():
    torch.manual_seed(0)
    same = torch.stack([imq_mmd(torch.randn(200, 8), torch.randn(200, 8)) for _ in range(50)])
    shifted = torch.stack([imq_mmd(torch.randn(200, 8), torch.randn(200, 8) + 0.5) for _ in range(50)])
    wider = torch.stack([imq_mmd(torch.randn(200, 8), 2 * torch.randn(200, 8)) for _ in range(50)])
    assert same.mean().abs() < 3 * same.std() / math.sqrt(len(same))  # unbiased: zero in expectation
    assert shifted.min() > same.max() and wider.min() > same.max()
    assert shifted.mean() > 10 * same.std()


def test_the_vamp_prior_is_a_density_that_integrates_to_one_in_2d():
    """E_r[p(z) / r(z)] = 1 for a wide Gaussian proposal r: Monte Carlo with 400,000 draws."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="vamp", image_shape=(1, 8, 8), latent_dim=2, hidden=(16,), pseudo_inputs=7))
    with torch.no_grad():
        model.priors["prior"].pseudo_inputs.mul_(4)  # spread the pseudo-inputs: components that differ
        prior, scale = model.prior, 6.0
        z = scale * torch.randn(400_000, 2, dtype=torch.float64)
        log_r = -0.5 * (z / scale).pow(2).sum(-1) - 2 * math.log(scale) - math.log(2 * math.pi)
        ratio = torch.exp(prior.log_prob(z.float()).double() - log_r)
    assert abs(ratio.mean().item() - 1) < 4 * ratio.std().item() / math.sqrt(len(ratio)) + 1e-3
    assert abs(ratio.mean().item() - 1) < 0.02


def test_vamp_samples_follow_its_own_density():
    """Draws from the VampPrior score higher under it than under N(0, I), and N(0, I) draws the reverse."""
    model = model_of("vamp", pseudo_inputs=5)
    with torch.no_grad():
        model.priors["prior"].pseudo_inputs.mul_(6)
        own = model.prior.sample(4000, torch.Generator().manual_seed(0))
        normal = torch.randn(4000, 4)
        lp = model.prior.log_prob
        standard = lambda z: -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)  # noqa: E731
    assert (lp(own) - standard(own)).mean() > 0 > (lp(normal) - standard(normal)).mean()


def test_the_rae_objective_is_recon_plus_its_two_penalties():
    model, x = model_of("rae", code_l2=0.3, decoder_l2=0.01), torch.rand(5, 1, 8, 8)
    loss = model(x)
    z = model.embed(x)
    weights = sum(p.pow(2).sum() for p in model.decoder.parameters())
    expected = loss.recon.mean() + 0.3 * 0.5 * z.pow(2).sum(-1).mean() + 0.01 * weights
    torch.testing.assert_close(loss.objective, expected)
    assert (loss.kl == 0).all() and torch.equal(loss.total, loss.recon)


def test_the_wae_penalty_is_lambda_times_the_mmd_to_prior_draws_and_grows_with_the_distance():
    model, x = model_of("wae", mmd_weight=10.0), torch.rand(64, 1, 8, 8)
    torch.manual_seed(5)
    loss = model(x)
    torch.manual_seed(5)
    z = model.embed(x)
    expected = loss.recon.mean() + 10.0 * imq_mmd(z, model.prior.sample(len(z)))
    torch.testing.assert_close(loss.objective, expected)
    penalty = []
    for shift in (0.0, 2.0, 10.0):
        with torch.no_grad():
            model.encoder[-1].bias.add_(shift)  # every code moved away from N(0, I)
            loss = model(x)
        penalty.append((loss.objective - loss.recon.mean()).item())
    assert penalty[0] < penalty[1] < penalty[2] and penalty[2] > 3 * penalty[0]


def test_the_two_stage_sampler_finds_where_the_codes_are(tmp_path):
    torch.manual_seed(0)
    codes = torch.randn(3000, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([3.0, -2.0])
    sampler = second_stage(codes, epochs=20, seed=0, hidden=64)
    drawn = sampler.sample(5000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(drawn.mean(0), codes.mean(0), atol=0.3, rtol=0)
    assert torch.allclose(drawn.std(0), codes.std(0), rtol=0.25)
    standard = torch.randn(5000, 2)  # what an AE's prior sampler would draw instead
    assert (drawn.mean(0) - codes.mean(0)).norm() < (standard.mean(0) - codes.mean(0)).norm() / 5


def test_the_two_stage_sampler_is_saved_with_the_model_and_checked_when_read(tmp_path):
    model = model_of("ae")
    model.priors["two-stage"] = second_stage(torch.randn(100, 4), epochs=2, seed=0, hidden=8)
    model.save_pretrained(tmp_path / "m")
    loaded = load(tmp_path / "m")
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(loaded.sample(5, g(), prior="two-stage"), model.sample(5, g(), prior="two-stage"))
    tensors = model.priors["two-stage"].tensors()
    for broken in ({**tensors, "weight1": torch.zeros(8, 3)}, {k: v for k, v in tensors.items() if k != "bias2"},
                   {**tensors, "scale": -tensors["scale"]},
                   {**tensors, "bias0": torch.full((8,), math.nan)}, {**tensors, "weight0": tensors["weight0"].int()},
                   {**tensors, "weight1": torch.full((8, 8), 1e30)},  # finite, but every draw would overflow
                   {**tensors, "weight0": torch.zeros(5000, 4), "bias0": torch.zeros(5000)},  # too wide to allocate
                   {**tensors, "weight0": torch.zeros(0, 4), "bias0": torch.zeros(0)}):
        with pytest.raises(ValueError, match="two-stage sampler"):
            two_stage_from_tensors(broken, 4, "file")
    with pytest.raises(ValueError, match="do not chain from 5 to 5 dimensions"):
        two_stage_from_tensors(tensors, 5, "file")


def test_second_stage_refuses_codes_it_cannot_fit():
    for codes in (torch.randn(1, 3), torch.tensor([[0.0, math.inf], [1.0, 2.0]])):
        with pytest.raises(ValueError, match="cannot fit a second-stage VAE"):
            second_stage(codes, epochs=1, seed=0)


def test_beta_vae_takes_beta_4_unless_told_otherwise():
    assert model_of("beta-vae").config.beta == 4.0 and model_of("vae").config.beta == 1.0
    assert model_of("beta-vae", beta=2.5).config.beta == 2.5 and model_of("beta-vae", beta=1.0).config.beta == 1.0


def test_only_a_tighter_bound_is_reported_beside_the_elbo():
    from vaekit.training.log import loss_words

    vae = {"loss": 38.90012, "nelbo": 38.90011, "recon": 30.0, "kl": 8.9, "bpd": 0.9}  # float32 sums, grouped apart
    assert "-bound" not in loss_words(vae, True)
    assert loss_words({**vae, "loss": 38.5}, True).startswith("-bound 38.50 nats, -ELBO 38.90 nats")


def test_an_unknown_preset_is_refused_in_one_line():
    with pytest.raises(VaekitError, match="unknown kind 'flow'"):
        model_of("flow")
