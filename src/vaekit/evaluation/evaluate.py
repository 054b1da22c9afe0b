"""Evaluate one model: likelihood terms, IS-NLL, latent diagnostics, and sample quality per prior.

Priors sampled: the model's own p(z) (N(0, I), or a VAMP's learned mixture), the Gaussian mixture fitted to the
training codes (Ghosh et al., 2020) and the second-stage VAE fitted to them (Dai & Wipf, 2019), for every model
alike: the ones saved in the checkpoint, or, for a checkpoint without them, fitted here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import PRDC_K
from vaekit.data import Batches, Dataset, ImageSet, map_batches
from vaekit.evaluation import inception
from vaekit.evaluation.checks import check_inputs
from vaekit.evaluation.classifier import FeatureClassifier, load_or_train_classifier
from vaekit.evaluation.latent import radius_99
from vaekit.evaluation.metrics import (
    active_units,
    code_statistics,
    codebook_usage,
    frechet_distance,
    importance_sampled_nll,
    kernel_distance,
    precision_recall_density_coverage,
    psnr,
    spread,
    ssim,
)
from vaekit.evaluation.results import (
    ClassQuality,
    Codebook,
    ConditionalQuality,
    Floor,
    ImportanceSampled,
    LatentStatistics,
    ModelEvaluation,
    ReconstructionQuality,
    SampleQuality,
    TestLoss,
)
from vaekit.models import Autoencoder
from vaekit.models.objectives import mean_loss
from vaekit.models.samplers import FIT_CODES, fit_samplers, sizes
from vaekit.progress import bar


@dataclass
class EvalSettings:
    k: int = 1000  # importance samples per image
    is_images: int = 1000  # test images for the IS-NLL
    n_samples: int = 10_000  # generated images per prior for the Frechet distance
    gmm_components: int = 10  # for a checkpoint without a fitted mixture
    two_stage_epochs: int = 30  # for a checkpoint without a fitted second-stage VAE
    code_prior_epochs: int = 20  # for a checkpoint of discrete codes without a fitted code prior
    gmm_fit_codes: int = FIT_CODES  # training codes the samplers are fitted to
    batch_size: int = 1000
    seed: int = 0
    kid_subsets: int = 100  # KID: its mean and spread over this many random subsets
    kid_subset_size: int = 1000  # rows of each feature set per subset (fewer where a set is smaller)
    prdc_k: int = PRDC_K  # precision/recall/density/coverage: the k of the k-NN balls
    prdc_images: int = 5000  # rows of each set they are computed on (pairwise distances: O(n^2) memory)
    inception: bool = False  # also the standard Inception FID (the optional extra; slow without a GPU)

    @classmethod
    def quick(cls) -> EvalSettings:
        return cls(k=100, is_images=500, n_samples=2000, gmm_fit_codes=5000, prdc_images=2000, kid_subsets=50,
                   code_prior_epochs=5)

    @classmethod
    def chosen(cls, quick: bool = False, inception: bool = False) -> EvalSettings:
        """The settings a command's --quick and --inception-fid pick."""
        return replace(cls.quick() if quick else cls(), inception=inception)


@dataclass
class Evaluation:
    """The numbers plus the tensors the report draws."""

    result: ModelEvaluation
    test_codes: Tensor
    samples: dict[str, Tensor] = field(default_factory=dict)
    sample_labels: Tensor | None = None  # the class each sample was drawn as, for a conditional model


@torch.no_grad()
def decode_in_batches(model: Autoencoder, z: Tensor, batch_size: int, y: Tensor | None = None) -> Tensor:
    rows = torch.arange(len(z)).split(batch_size)
    return torch.cat([model.generate(z[r].to(model.device), None if y is None else y[r].to(model.device)).cpu()
                      for r in rows])


def samplers(model: Autoencoder, data: Dataset, s: EvalSettings, quiet: bool = True) -> dict[str, nn.Module]:
    """The priors to generate from: the model's own, and the samplers fitted to its codes (fitted here where the
    checkpoint has none)."""
    priors = dict(model.priors.items())
    wanted = {name: size for name, size in sizes(s).items() if name not in priors}
    missing = fit_samplers(lambda: training_codes(model, data, s.batch_size, s.gmm_fit_codes), wanted, s.seed,
                           model.latent, model.device, quiet)
    return {**priors, **missing}


def mean_image(split: ImageSet, batch_size: int, device: torch.device, limit: int = FIT_CODES) -> Tensor:
    """The mean of the first `limit` images of a split: what a model that learned nothing reconstructs at best."""
    total, n = None, 0
    for x, _ in Batches(split.subset(torch.arange(min(limit, len(split)))), batch_size, device):
        total, n = x.sum(0) if total is None else total + x.sum(0), n + len(x)
    return total / max(n, 1)


def training_codes(model: Autoencoder, data: Dataset, batch_size: int = 1000, limit: int = FIT_CODES) -> Tensor:
    """The posterior means of the first `limit` training images, on the model's device: what samplers are fitted
    to."""
    return map_batches(model.embed, data.train, batch_size, model.device, limit=limit)


@torch.no_grad()
def draw_samples(model: Autoencoder, priors: dict[str, nn.Module], s: EvalSettings,
                 labels: Tensor | None = None) -> dict[str, Tensor]:
    """n_samples decoded draws from each prior, each with its own generator seeded by s.seed (as the classes
    `labels`, for a conditional model)."""
    images = {}
    for name, prior in priors.items():
        z = prior.sample(s.n_samples, torch.Generator(model.device).manual_seed(s.seed))
        images[name] = decode_in_batches(model, z, s.batch_size, labels)
    return images


MIN_CLASS_IMAGES = 100  # the least images of a class, of each set, a per-class Frechet distance is computed on (its
# bias grows as the sets shrink below the 128 features)


def conditional_quality(classified: tuple[Tensor, Tensor], labels: Tensor, ref: Reference) -> ConditionalQuality:
    """How well images match the class they were drawn as: the feature classifier's agreement with their labels
    (conditional accuracy), overall and per class, and per class the Frechet distance between their features and
    those of the real test images of that class. `classified`: the images' features and class probabilities."""
    features, probabilities = classified
    predicted, classes = probabilities.argmax(-1), []
    for c in labels.unique().tolist():
        mine, real = labels == c, ref.labels == c
        enough = min(mine.sum(), real.sum()) >= MIN_CLASS_IMAGES
        classes.append(ClassQuality(klass=c, images=int(mine.sum()),
                                    accuracy=(predicted[mine] == c).float().mean().item(),
                                    frechet=frechet_distance(ref.features[real], features[mine]) if enough else None))
    return ConditionalQuality(accuracy=(predicted == labels).float().mean().item(), images=len(labels),
                              classes=classes)


# What sample_quality measures, as (key, name, digits shown): lower is better for the distances, higher for the rest
QUALITY_MEASURES = (("frechet", "Frechet distance", 2), ("kid", "KID", 3), ("precision", "precision", 3), ("recall",
                    "recall", 3), ("density", "density", 3), ("coverage", "coverage", 3), ("confidence",
                    "classifier confidence", 3), ("spread", "spread", 2), ("inception_fid", "Inception FID", 2))


@dataclass
class Reference:
    """The real images samples are measured against: the feature classifier's features of the test split (with the
    classifier and its test accuracy), and the Inception features when asked for; `floor` holds the same measures
    for real held-out images."""

    classifier: FeatureClassifier | None = None
    features: Tensor | None = None
    labels: Tensor | None = None  # of the test images, for the per-class measures of a conditional model
    accuracy: float | None = None
    inception: Tensor | None = None
    floor: Floor = field(default_factory=Floor)


def sample_quality(images: Tensor, ref: Reference, s: EvalSettings, device: str | torch.device = "cpu",
                   desc: str = "samples", classified: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
    """Frechet distance, KID, precision/recall/density/coverage and mean confidence on the feature classifier's
    features (KID and the k-NN measures where the sets are large enough); the Inception FID on Inception's where
    the reference has them. `classified`: the images' features and class probabilities, where already computed."""
    quality: dict[str, Any] = {}
    if ref.classifier is not None and ref.features is not None:
        features, probabilities = classified or ref.classifier.features_and_probabilities(images)
        quality = {"frechet": frechet_distance(ref.features, features),
                   "confidence": probabilities.max(-1).values.mean().item()}
        smaller = min(len(ref.features), len(features))
        if smaller >= 2:
            quality["spread"] = spread(ref.features, features)
            quality.update(kernel_distance(ref.features, features, s.kid_subsets, s.kid_subset_size, s.seed))
        if smaller >= s.prdc_k + 2:  # each row's k-th neighbour other than itself
            quality.update(precision_recall_density_coverage(ref.features, features, s.prdc_k, s.prdc_images))
    if ref.inception is not None:
        quality["inception_fid"] = frechet_distance(ref.inception,
                                                    inception.inception_features(images, device, desc=desc))
    return quality


def feature_notes(ref: Reference, s: EvalSettings) -> dict[str, Any]:
    """What the sample-quality numbers are computed on, for metrics.json and the report."""
    notes: dict[str, Any] = {}
    if ref.features is not None:
        real = len(ref.features)
        notes["classifier"] = {"features": ref.features.shape[1], "real_images": real,
                               "test_accuracy": ref.accuracy, "samples": s.n_samples,
                               "kid": {"subsets": s.kid_subsets, "size": min(s.kid_subset_size, real, s.n_samples)},
                               "prdc": {"k": s.prdc_k, "real": min(s.prdc_images, real),
                                        "samples": min(s.prdc_images, s.n_samples)}}
    if ref.inception is not None:
        notes["inception"] = {"features": inception.FEATURES, "real_images": len(ref.inception), "samples": s.n_samples,
                              "network": "Inception-v3 (TorchScript of NVIDIA's StyleGAN3 metrics), 299x299 RGB"}
    return notes


def first_labelled(split: ImageSet, n: int | None = None) -> tuple[Tensor, Tensor | None]:
    """The first n images of a split (all without n) as one float tensor in [0, 1], and their labels (or None)."""
    if n is not None and n < len(split):
        split = split.subset(torch.arange(n))
    batches = list(Batches(split, 2000))
    labels = [y for _, y in batches if y is not None]
    return (torch.cat([x for x, _ in batches]) if batches else torch.empty(0, *split.shape),
            torch.cat(labels) if labels else None)


def test_tensor(data: Dataset, n: int | None = None) -> Tensor:
    return first_labelled(data.test, n)[0]


def likelihood_metrics(model: Autoencoder, data: Dataset,
                       s: EvalSettings) -> tuple[TestLoss, ImportanceSampled | None]:
    """Test reconstruction (and -ELBO, where the posterior has a density), and the IS-NLL on `is_images`."""
    test = TestLoss(**mean_loss(model, Batches(data.test, s.batch_size, model.device)))
    if not model.has_density:
        return test, None
    dims = math.prod(model.config.image_shape)
    x, y = first_labelled(data.test, s.is_images)
    nll, nelbo, bound = [], [], []
    for rows in torch.arange(len(x)).split(max(1, 100_000 // max(1, s.k))):
        xb, yb = x[rows].to(model.device), None if y is None else y[rows].to(model.device)
        nll.append(importance_sampled_nll(model, xb, s.k, y=yb).cpu())
        with torch.no_grad():
            loss = model(xb, y=yb)
            nelbo.append((loss.recon + loss.kl).cpu().double())
            bound.append(loss.total.cpu().double())
    nll, nelbo, bound = torch.cat(nll), torch.cat(nelbo), torch.cat(bound)
    return test, ImportanceSampled(nll=nll.mean().item(), bpd=nll.mean().item() / (dims * math.log(2)), k=s.k,
                                   images=len(x), stderr=(nll.std() / math.sqrt(len(nll))).item(),
                                   nelbo_same_images=nelbo.mean().item(), bound_same_images=bound.mean().item())


@torch.no_grad()
def latent_metrics(model: Autoencoder, data: Dataset,
                   s: EvalSettings) -> tuple[LatentStatistics, ReconstructionQuality, Tensor]:
    """Active units, code statistics, a discrete latent's codebook usage, the KL per dimension (against a prior with a
    closed form) and, against N(0, I), the share of codes inside its 99% ball; the reconstructions' PSNR and SSIM.
    Returns those and the test codes (posterior means)."""
    codes, kl, indices, psnr_, ssim_, baseline = [], [], [], [], [], []
    average = mean_image(data.train, s.batch_size, model.device)
    for xb, yb in Batches(data.test, s.batch_size, model.device):
        q = model.encode(xb, yb)
        codes.append(q.mean.cpu())
        recon = model.generate(q.mean, yb).clamp(0, 1)
        psnr_.append(psnr(recon, xb).cpu())
        baseline.append(psnr(average.expand_as(xb), xb).cpu())
        ssim_ += [] if (similar := ssim(recon, xb)) is None else [similar.cpu()]
        indices += [q.indices.cpu()] if model.latent.discrete else []
        per_dim = model.prior.closed_form_kl(q) if model.has_density else None  # None against a learned prior
        kl += [per_dim.cpu()] if per_dim is not None else []
    codes = torch.cat(codes)
    n_active, activity = active_units(codes)
    latent = LatentStatistics(active_units=n_active, activity=activity.tolist(), **code_statistics(codes))
    if kl:  # KL(q || the model's own prior) per dimension, where it has a closed form
        latent.kl_per_dim = torch.cat(kl).mean(0).tolist()
    if indices:  # how much of the codebook the test images use
        latent.codebook = Codebook(**codebook_usage(torch.cat(indices), model.latent.codebook_size),
                                   code_nats=model.latent.tokens * math.log(model.latent.codebook_size))
    if model.prior.is_standard_normal:
        latent.inside_prior_99 = (codes.norm(dim=1) <= radius_99(model.latent_dim)).float().mean().item()
    reconstruction = ReconstructionQuality(psnr=torch.cat(psnr_).mean().item(), images=len(codes),
                                           ssim=torch.cat(ssim_).mean().item() if ssim_ else None,
                                           mean_image_psnr=torch.cat(baseline).mean().item())
    return latent, reconstruction, codes


def evaluate_model(model: Autoencoder, data: Dataset, settings: EvalSettings, reference: Reference | None = None,
                   quiet: bool = False) -> Evaluation:
    """All numbers for one model; sample quality needs a reference (the real test images' features)."""
    model.eval()
    for split in (data.train, data.test):
        model.conditioning.check(split.labels, data.spec)
    s = settings
    steps = bar(total=4, desc=f"evaluating {model.preset.label}", disable=quiet)
    torch.manual_seed(s.seed)
    test, is_nll = likelihood_metrics(model, data, s)
    steps.update()
    latent, reconstruction, codes = latent_metrics(model, data, s)
    if latent.codebook is not None:  # -log p(x) <= recon + the code's length under uniformly random codes
        latent.codebook.uniform_bound = test.recon + latent.codebook.code_nats
    steps.update()
    priors = samplers(model, data, s, quiet)
    result = ModelEvaluation(model=model.kind, latent_dim=model.latent_dim, test=test, is_nll=is_nll, latent=latent,
                             reconstruction=reconstruction, priors={n: prior.words for n, prior in priors.items()})
    labels = model.conditioning.spread(s.n_samples, torch.device("cpu"))  # the classes in turn; None: unconditional
    samples = draw_samples(model, priors, s, labels)
    steps.update()
    if reference is not None:
        result.samples, result.conditional = measure_samples(samples, labels, reference, s, model.device)
        result.reconstruction = reconstruction_distances(model, data, reference, s, reconstruction)
    steps.update()
    steps.close()
    return Evaluation(result, codes, samples, labels)


@torch.no_grad()
def reconstruction_distances(model: Autoencoder, data: Dataset, ref: Reference, s: EvalSettings,
                             measured: ReconstructionQuality) -> ReconstructionQuality:
    """`measured` with the Frechet distances of the first `n_samples` test images' reconstructions from the test
    images: on the feature classifier's features, and Inception's (rFID) where the reference has them."""
    first = data.test.subset(torch.arange(min(s.n_samples, len(data.test))))
    recon = torch.cat([model.generate(model.encode(xb, yb).mean, yb).clamp(0, 1).cpu()
                       for xb, yb in Batches(first, s.batch_size, model.device)])
    scored, measured = ref.classifier is not None and ref.features is not None, measured.model_copy()
    measured.frechet = frechet_distance(ref.features, ref.classifier.features_and_probabilities(recon)[0]) \
        if scored else None
    if ref.inception is not None:
        measured.inception_fid = frechet_distance(ref.inception, inception.inception_features(recon, model.device))
    measured.measured_on = len(recon)
    return measured


def measure_samples(samples: dict[str, Tensor], labels: Tensor | None, ref: Reference, s: EvalSettings,
                    device: torch.device) -> tuple[dict[str, SampleQuality], dict[str, ConditionalQuality] | None]:
    """Each sampler's sample quality and, for a conditional model (its samples drawn as the classes `labels`), how
    well they match their classes; the feature classifier sees each set of samples once."""
    scored = ref.classifier is not None
    quality, conditional = {}, {} if labels is not None and scored else None
    for name, images in samples.items():
        classified = ref.classifier.features_and_probabilities(images) if scored else None
        quality[name] = SampleQuality(**sample_quality(images, ref, s, device, f"Inception: {name}", classified))
        if conditional is not None:
            conditional[name] = conditional_quality(classified, labels, ref)
    return quality, conditional


def real_reference(data: Dataset, s: EvalSettings, classifier: FeatureClassifier | None = None,
                   accuracy: float | None = None, device: str | torch.device = "cpu",
                   quiet: bool = False) -> Reference:
    """Features of the real test images, and the floor: the same measures for `n_samples` real held-out images
    (the validation split, else the training split)."""
    real, labels = first_labelled(data.test)
    ref = Reference(classifier=classifier, labels=labels, accuracy=accuracy)
    if classifier is not None:
        ref.features, confidence = classifier.features_and_confidence(real)
        ref.floor.test_confidence = confidence.mean().item()
    if s.inception:
        ref.inception = inception.inception_features(real, device, desc="Inception: real test images", quiet=quiet)
    other, other_labels = first_labelled(data.val if len(data.val) >= 2 else data.train, s.n_samples)
    classified = classifier.features_and_probabilities(other) if classifier is not None else None
    measured = sample_quality(other, ref, s, device, "Inception: real held-out images", classified)
    ref.floor = ref.floor.model_copy(update={**measured, "images": len(other)})
    if classified is not None and other_labels is not None:  # real images, each "drawn as" its own class
        ref.floor.conditional = conditional_quality(classified, other_labels, ref)
    return ref


def can_score_samples(data: Dataset) -> bool:
    """Sample quality needs labels of at least two classes (a classifier of one class is sure of every image) and
    images in memory."""
    return all(s.in_memory and s.labels is not None for s in (data.train, data.test)) \
        and len(data.train.labels.unique()) >= 2


def reference(data: Dataset, s: EvalSettings, cache_dir: Path, device: str | torch.device = "cpu",
              quiet: bool = False) -> Reference | None:
    """The reference samples are measured against: the feature classifier's (trained once per data set and cached)
    where the data has labels in memory, and Inception's when asked for; None when neither applies."""
    check_inputs(data, s)
    labelled = can_score_samples(data)
    if not labelled and not s.inception:
        return None
    classifier, accuracy = load_or_train_classifier(data, cache_dir, quiet=quiet) if labelled else (None, None)
    return real_reference(data, s, classifier, accuracy, device, quiet)
