"""Samplers fitted to a trained model's codes: answers to "where are the codes, so we can sample?" found after
training, for any model, the plain AE as well as the VAE, because they look at the codes the encoder actually gives.

One registry, SAMPLERS; each entry fits itself to codes, reads itself back from priors.safetensors and says what it
is, so training, evaluation, scoring, the explorer, the report and the card iterate it and never spell a name:
  gmm        a Gaussian mixture on the training codes (Ghosh et al., 2020); it has a density, by which `code_nll`
             scores how far an image's code lies from the training codes
  two-stage  a second, small VAE on the training codes (Dai & Wipf, 2019): its prior N(0, I) is where its own codes
             are, and its decoder maps them to where the first model's codes are; it draws codes, it has no density
  code-prior for discrete codes only (vqvae, fsq): a PixelCNN over the grid of code indices (code_prior.py), the
             VQ-VAE's own answer; it draws codes token by token
A fitted sampler sits in the model's priors beside its own p(z) (`OWN`), saved in its own file.

To add a sampler: a prior module (priors.py: `sample`, `log_prob` or a ValueError, `tensors`, `words`), its loader
that checks what it reads, a fit, and an entry here with the setting that sizes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import warn
from vaekit.models.code_prior import code_prior_from_tensors, fit_code_prior
from vaekit.models.priors import GaussianMixture, TwoStage, mixture_from_tensors, two_stage_from_tensors
from vaekit.progress import bar

FIT_CODES = 20_000  # training codes (posterior means) the samplers are fitted to, at most
OWN = "prior"  # the model's own p(z) among its priors: what the KL pulls towards and plain generation draws from
OWN_LABEL, OWN_CAPTION = "own prior", "z ~ its prior p(z)"


Grid = tuple[int, int, int]  # a code's layout, (C, h, w) tokens of C numbers (latents.py: the latent's `grid`)


@dataclass(frozen=True)
class Sampler:
    """One ex-post sampler: what it is called in tables and under figures, the setting that sizes its fit (0 there:
    not fitted), how it is fitted to codes and read back from a file, and whether it has a density over codes."""

    label: str  # a table's column: "GMM on codes"
    caption: str  # under a grid of its samples
    size: str  # the field of TrainConfig (and of the evaluation's settings) that sizes the fit
    fit: Callable[[Tensor, int, int, Grid], nn.Module]  # (codes, size, seed, code layout) -> the fitted prior;
    # ValueError if it cannot
    load: Callable[[dict[str, Tensor], Grid, str], nn.Module]  # (tensors, code layout, file) -> the prior, checked
    scores_codes: bool  # log_prob(z) is a density (code_nll scores by it)
    discrete: bool = False  # fitted only to discrete codes (a latent part whose `discrete` is true)

    def fits(self, latent: Any) -> bool:
        """Whether it can be fitted to the codes of this latent part."""
        return latent.discrete or not self.discrete


SAMPLERS: dict[str, Sampler] = {
    "gmm": Sampler("GMM on codes", "z ~ a Gaussian mixture fitted to its codes", "gmm_components",
                   lambda codes, components, seed, grid: GaussianMixture.fit(codes, components, seed),
                   lambda t, grid, where: mixture_from_tensors(t, math.prod(grid), where), scores_codes=True),
    "two-stage": Sampler("two-stage VAE", "z ~ a second-stage VAE fitted to its codes", "two_stage_epochs",
                         lambda codes, epochs, seed, grid: second_stage(codes, epochs, seed),
                         lambda t, grid, where: two_stage_from_tensors(t, math.prod(grid), where), scores_codes=False),
    "code-prior": Sampler("PixelCNN on codes", "z ~ a PixelCNN fitted to its discrete codes", "code_prior_epochs",
                          fit_code_prior, code_prior_from_tensors, scores_codes=False, discrete=True),
}
DENSITY = next(name for name, s in SAMPLERS.items() if s.scores_codes)  # the sampler that scores codes


def label_of(name: str) -> str:
    """A prior's name in a table: the model's own, or a sampler's label."""
    return OWN_LABEL if name == OWN else SAMPLERS[name].label if name in SAMPLERS else name


def caption_of(name: str) -> str:
    """A prior's words under a grid of its samples."""
    return OWN_CAPTION if name == OWN else SAMPLERS[name].caption if name in SAMPLERS else name


def sizes(settings: Any) -> dict[str, int]:
    """How large each sampler's fit is in `settings` (a TrainConfig, the evaluation's settings): 0 skips one."""
    return {name: getattr(settings, s.size) for name, s in SAMPLERS.items()}


def fit_samplers(codes: Callable[[], Tensor], wanted: Mapping[str, int], seed: int, latent: Any,
                 device: torch.device | str = "cpu", quiet: bool = True) -> dict[str, nn.Module]:
    """The samplers `wanted` (name -> size; 0 skips one) that fit the model's `latent` part (discrete ones to
    discrete codes only), fitted to the training codes `codes()` gives (asked for only when one is wanted: the
    posterior means of at most FIT_CODES images) on the model's `device`, and left there; a sampler that cannot be
    fitted (codes not finite, a fit that diverged, one the memory cannot hold) is left out with a warning saying why.
    A bar names the sampler being fitted unless `quiet`."""
    wanted = {name: size for name, size in wanted.items() if size and SAMPLERS[name].fits(latent)}
    if not wanted:
        return {}
    z = codes().to(device)
    fitted = {}
    shown = bar(total=len(wanted), disable=quiet, unit="sampler")  # a fit can take a minute: say which one runs
    for name, size in wanted.items():
        shown.set_description(f"fitting the {name} sampler to {len(z):,} codes")
        try:
            fitted[name] = SAMPLERS[name].fit(z, size, seed, latent.grid).to(z.device)
        except ValueError as e:
            warn(f"no {name} sampler: {str(e)[:200]}")
        shown.update()
    shown.close()
    return fitted


def second_stage(codes: Tensor, epochs: int, seed: int, hidden: int = 256, batch: int = 1024,
                 lr: float = 3e-3) -> TwoStage:
    """Train a VAE on the codes (standardised; a Gaussian decoder with a learned scale, Dai & Wipf's gamma; as
    many latent dimensions as the codes have) and keep its generative model: the mean decoder, the standardisation
    folded into its last layer, and the scale. Raises ValueError for codes it cannot fit (fewer than two, or not
    finite)."""
    if len(codes) < 2 or not torch.isfinite(codes).all():
        raise ValueError(f"cannot fit a second-stage VAE to {len(codes)} codes that are not all finite "
                         "numbers")
    devices = [codes.device] if codes.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():  # the caller's RNG and no_grad stay as they were
        torch.manual_seed(seed)
        return fit_second_stage(codes, epochs, seed, hidden, batch, lr)


def fit_second_stage(codes: Tensor, epochs: int, seed: int, hidden: int, batch: int, lr: float) -> TwoStage:
    from vaekit.models.autoencoder import Autoencoder
    from vaekit.models.presets import VARIATIONAL

    dim = codes.shape[1]
    mean, std = codes.mean(0), codes.std(0).clamp_min(1e-6)
    x = ((codes - mean) / std).reshape(-1, 1, 1, dim)
    stage = Autoencoder(ModelConfig(kind=VARIATIONAL, image_shape=(1, 1, dim), arch="mlp", hidden=(hidden, hidden),
                                    latent_dim=dim, likelihood="gaussian")).to(codes.device)
    optimizer = torch.optim.Adam(stage.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=order).split(batch):
            loss = stage(x[rows.to(x.device)]).objective
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    layers = [(m.weight.detach(), m.bias.detach()) for m in stage.decoder if isinstance(m, nn.Linear)]
    weight, bias = layers[-1]
    layers[-1] = (std[:, None] * weight, std * bias + mean)  # back from standardised units to the codes'
    scale = std * stage.likelihood.log_scale.detach().clamp(min=-7.0).exp()  # its learned sigma (gamma), in code units
    if not all(torch.isfinite(t).all() for t in (scale, *(t for pair in layers for t in pair))):
        raise ValueError("the second-stage VAE diverged (its weights are not finite)")
    return TwoStage(layers, scale)
