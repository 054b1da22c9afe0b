"""Evaluation metrics on cases with known answers."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from vaekit import RunConfig, load
from vaekit.config import DataConfig, TrainConfig
from vaekit.data import Batches, load_dataset
from vaekit.evaluation import active_units, frechet_distance, importance_sampled_nll
from vaekit.training import train


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(2000, 16))
    assert abs(frechet_distance(x, x)) < 1e-8


def test_frechet_distance_matches_the_closed_form_for_two_gaussians():
    rng = np.random.default_rng(1)
    mu_a, mu_b = np.zeros(4), np.array([1.0, -2.0, 0.5, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25, 1.0]), np.array([2.0, 1.0, 1.0, 9.0])
    a = mu_a + np.sqrt(var_a) * rng.normal(size=(400_000, 4))
    b = mu_b + np.sqrt(var_b) * rng.normal(size=(400_000, 4))
    exact = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert abs(frechet_distance(a, b) - exact) < 0.02 * exact


def test_frechet_distance_agrees_with_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 0.3
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean)
    assert abs(frechet_distance(a, b) - reference) < 1e-6 * max(1.0, reference)


def test_active_units_count_a_dead_dimension_as_inactive():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(1000, 5, generator=g)
    means[:, 2] = 0.3  # the posterior mean ignores x: a collapsed dimension
    means[:, 4] = 0.001 * torch.randn(1000, generator=g)  # varies, but below the 0.01 threshold
    n, activity = active_units(means)
    assert n == 3 and activity[2] == 0 and activity[4] < 0.01


@pytest.fixture(scope="module")
def trained_digits_vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("is") / "vae"
    run = RunConfig(data=DataConfig(name="digits"), train=TrainConfig(epochs=8, samples=4))
    train(run, out, quiet=True)
    return load(out), load_dataset(DataConfig(name="digits"))


def test_importance_sampled_nll_never_exceeds_the_negative_elbo(trained_digits_vae):
    model, data = trained_digits_vae
    x, _ = next(iter(Batches(data.test, 180)))
    torch.manual_seed(0)
    nll = importance_sampled_nll(model, x, k=500)
    # the -ELBO averaged over many draws of z, with its Monte-Carlo standard error per image
    with torch.no_grad():
        draws = torch.stack([model(x).total for _ in range(400)]).double()
    nelbo, stderr = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    gap = nelbo - nll
    assert torch.all(gap > -4 * stderr - 0.02), (gap / stderr).min()  # per image, beyond Monte-Carlo noise
    assert gap.mean() > 0.1  # and a strictly tighter bound on average for a trained model


def test_importance_sampled_nll_tightens_with_k(trained_digits_vae):
    model, data = trained_digits_vae
    x, _ = next(iter(Batches(data.test, 100)))
    torch.manual_seed(1)
    estimates = [importance_sampled_nll(model, x, k=k).mean().item() for k in (1, 10, 1000)]
    assert estimates[0] > estimates[1] > estimates[2]
    torch.manual_seed(2)
    # K = 1 is an unbiased estimate of the -ELBO
    with torch.no_grad():
        one = torch.stack([importance_sampled_nll(model, x, k=1) for _ in range(300)]).mean().item()
        elbo = torch.stack([model(x).total for _ in range(300)]).mean().item()
    assert abs(one - elbo) < 0.5


def test_importance_sampled_nll_is_independent_of_chunking(trained_digits_vae):
    model, data = trained_digits_vae
    x, _ = next(iter(Batches(data.test, 20)))
    torch.manual_seed(3)
    big = importance_sampled_nll(model, x, k=64, rows=10_000)
    torch.manual_seed(3)
    small = importance_sampled_nll(model, x, k=64, rows=20 * 8)  # 8 samples per decode
    torch.testing.assert_close(big, small, rtol=1e-5, atol=1e-4)


def test_psnr_is_ten_log_ten_of_one_over_the_mse():
    from vaekit.evaluation.metrics import psnr

    images, references = torch.full((2, 3, 8, 8), 0.5), torch.full((2, 3, 8, 8), 0.6)
    references[1] = 0.5  # an exact copy: the MSE's floor, 100 dB
    torch.testing.assert_close(psnr(images, references), torch.tensor([20.0, 100.0], dtype=torch.float64))


def test_ssim_is_wang_et_al_computed_by_hand():
    """The structural similarity map (Wang et al., 2004: C1 = 0.01^2, C2 = 0.03^2, an 11x11 Gaussian window of sigma
    1.5, borders reflected), averaged over each image: by hand here, by torchmetrics in vaekit."""
    import torch.nn.functional as F

    from vaekit.evaluation.metrics import ssim

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 20, 17, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    taps = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    window = (taps[:, None] * taps[None, :] / taps.sum() ** 2).expand(3, 1, 11, 11)
    mean = lambda t: F.conv2d(F.pad(t, (5, 5, 5, 5), mode="reflect"), window, groups=3)  # noqa: E731
    mx, my = mean(x), mean(y)
    vx, vy, cov = mean(x * x) - mx ** 2, mean(y * y) - my ** 2, mean(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    by_hand = ((2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean((1, 2, 3))
    torch.testing.assert_close(ssim(y, x), by_hand)
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert ssim(torch.rand(2, 1, 5, 5), torch.rand(2, 1, 5, 5)) is None  # too small for the window
