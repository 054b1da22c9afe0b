"""Evaluate one model: likelihood terms, IS-NLL, latent diagnostics, and sample quality per sampler.

Samplers: the prior N(0, I) and an ex-post Gaussian mixture fitted to the training codes
(Ghosh et al., 2020), for the AE and the VAE alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.data import Batches, Dataset, ImageSet, TensorImages
from vaekit.evaluation.classifier import FeatureClassifier
from vaekit.evaluation.metrics import active_units, code_statistics, frechet_distance, importance_sampled_nll
from vaekit.models import AE, VAE, DiagonalGaussian
from vaekit.progress import bar
from vaekit.training.trainer import evaluate_loss


@dataclass
class EvalSettings:
    k: int = 1000  # importance samples per image
    is_images: int = 1000  # test images for the IS-NLL
    n_samples: int = 10_000  # generated images per sampler for the Frechet distance
    gmm_components: int = 10
    gmm_fit_codes: int = 20_000  # training codes the mixture is fitted to
    batch_size: int = 1000
    seed: int = 0

    @classmethod
    def quick(cls) -> EvalSettings:
        return cls(k=100, is_images=500, n_samples=2000, gmm_fit_codes=5000)


@dataclass
class Evaluation:
    """Numbers (JSON-ready) plus the tensors the report draws."""

    metrics: dict[str, Any]
    test_codes: Tensor
    samples: dict[str, Tensor] = field(default_factory=dict)


@torch.no_grad()
def embed_all(model: AE, images: ImageSet, batch_size: int, limit: int | None = None) -> Tensor:
    if limit is not None and limit < len(images):
        images = images.subset(torch.arange(limit))
    return torch.cat([model.embed(x).cpu() for x in Batches(images, batch_size, model.device)])


def fit_gmm(codes: Tensor, n_components: int, seed: int):
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=n_components, covariance_type="full", random_state=seed, reg_covar=1e-5)
    return gmm.fit(codes.double().numpy())


@torch.no_grad()
def decode_in_batches(model: AE, z: Tensor, batch_size: int) -> Tensor:
    return torch.cat([model.generate(c.to(model.device)).cpu() for c in z.split(batch_size)])


def prior_codes(n: int, dim: int, seed: int) -> Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def gmm_codes(gmm, n: int, seed: int) -> Tensor:
    gmm.random_state = seed
    z, _ = gmm.sample(n)
    order = np.random.default_rng(seed).permutation(n)  # sklearn returns the draws sorted by component
    return torch.from_numpy(z[order]).float()


def sample_quality(images: Tensor, classifier: FeatureClassifier, real_features: Tensor) -> dict[str, float]:
    features, confidence = classifier.features_and_confidence(images)
    return {"frechet": frechet_distance(real_features.numpy(), features.numpy()),
            "confidence": confidence.mean().item()}


def test_tensor(data: Dataset, n: int | None = None) -> Tensor:
    test = data.test
    if n is not None and n < len(test):
        test = test.subset(torch.arange(n))
    return torch.cat(list(Batches(test, 2000)))


def evaluate_model(model: AE, data: Dataset, settings: EvalSettings, classifier: FeatureClassifier | None = None,
                   real_features: Tensor | None = None, quiet: bool = False) -> Evaluation:
    """All numbers for one model; sample quality needs the feature classifier and the real test features."""
    model.eval()
    s = settings
    device = model.device
    steps = bar(total=5, desc=f"evaluating {model.kind.upper()}", disable=quiet)
    torch.manual_seed(s.seed)
    test = evaluate_loss(model, Batches(data.test, s.batch_size, device))
    dims = math.prod(model.config.image_shape)
    metrics: dict[str, Any] = {"model": model.kind, "latent_dim": model.latent_dim,
                               "test": {"recon": test["recon"], "kl": test["kl"], "images": test["images"]}}
    if isinstance(model, VAE):
        metrics["test"].update(nelbo=test["nelbo"], bpd=test["bpd"])
    steps.update()

    if isinstance(model, VAE):
        x = test_tensor(data, s.is_images)
        nll, nelbo = [], []
        for xb in x.split(max(1, 100_000 // max(1, s.k))):
            xb = xb.to(device)
            nll.append(importance_sampled_nll(model, xb, s.k).cpu())
            nelbo.append(model(xb).nelbo.cpu().double())
        nll, nelbo = torch.cat(nll), torch.cat(nelbo)
        metrics["is_nll"] = {"nll": nll.mean().item(), "bpd": nll.mean().item() / (dims * math.log(2)), "k": s.k,
                             "images": len(x), "nelbo_same_images": nelbo.mean().item(),
                             "stderr": (nll.std() / math.sqrt(len(nll))).item()}
    steps.update()

    codes, kl = [], []
    with torch.no_grad():
        for xb in Batches(data.test, s.batch_size, device):
            q = model.encode(xb)  # the VAE's posterior, or the AE's code itself
            if isinstance(q, DiagonalGaussian):
                codes.append(q.mean.cpu())
                kl.append(q.kl_per_dim().cpu())
            else:
                codes.append(q.cpu())
    codes = torch.cat(codes)
    n_active, activity = active_units(codes)
    latent: dict[str, Any] = {"active_units": n_active, "activity": activity.tolist(), **code_statistics(codes)}
    if kl:
        latent["kl_per_dim"] = torch.cat(kl).mean(0).tolist()
    radius = math.sqrt(float(_chi2_ppf(0.99, model.latent_dim)))
    latent["inside_prior_99"] = (codes.norm(dim=1) <= radius).float().mean().item()
    metrics["latent"] = latent
    steps.update()

    train_codes = embed_all(model, data.train, s.batch_size, limit=s.gmm_fit_codes)
    gmm = fit_gmm(train_codes, s.gmm_components, s.seed)
    z = {"prior": prior_codes(s.n_samples, model.latent_dim, s.seed), "gmm": gmm_codes(gmm, s.n_samples, s.seed)}
    samples = {name: decode_in_batches(model, codes_, s.batch_size) for name, codes_ in z.items()}
    steps.update()

    if classifier is not None and real_features is not None:
        metrics["samples"] = {name: sample_quality(images, classifier, real_features)
                              for name, images in samples.items()}
    steps.update()
    steps.close()
    return Evaluation(metrics, codes, samples)


def _chi2_ppf(q: float, df: int) -> float:
    from scipy.stats import chi2

    return chi2.ppf(q, df)


def real_reference(data: Dataset, classifier: FeatureClassifier, n: int) -> tuple[Tensor, dict[str, float]]:
    """Features of the real test images, and the floor: the same metrics for real held-out images."""
    real = test_tensor(data)
    features, confidence = classifier.features_and_confidence(real)
    held_out = data.val if len(data.val) >= 2 else data.train
    other = torch.cat(list(Batches(held_out.subset(torch.arange(min(n, len(held_out)))), 2000)))
    floor = sample_quality(other, classifier, features)
    floor["test_confidence"] = confidence.mean().item()
    return features, floor


def can_score_samples(data: Dataset) -> bool:
    """Sample quality needs labels (for the classifier) and images in memory."""
    return all(isinstance(s, TensorImages) and s.labels is not None for s in (data.train, data.test))
