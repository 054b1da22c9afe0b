"""One autoencoder, composed of parts: encoder and decoder networks, a posterior family, priors, an objective
and a decoder likelihood. The plain AE and the VAE are two presets of it (presets.py):

AE:  q(z|x) = delta(z - E(x));        loss = -log p(x | z)                       (reconstruction only)
VAE: q(z|x) = N(mu(x), diag sigma^2); loss = -log p(x | z) + beta * KL(q || N(0, I)), z = mu + sigma * eps

Both decode with the same network and likelihood, and both can decode z ~ N(0, I); whether that gives
plausible images is what the comparison measures. Any preset can be conditioned on a label y (conditioning.py):
q(z|x, y) and p(x|z, y); every method below takes the labels as `y` (None for an unconditional model).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import VaekitError
from vaekit.models.conditioning import conditioning
from vaekit.models.likelihoods import LIKELIHOODS
from vaekit.models.networks import ARCHS, SPATIAL, with_defaults
from vaekit.models.objectives import Loss
from vaekit.models.posterior import DiagonalGaussian, PointMass
from vaekit.models.presets import PRESETS
from vaekit.models.samplers import OWN


class Autoencoder(nn.Module):
    """x -> q(z|x) -> z -> p(x|z), with named priors p(z) to generate from ("prior", and any fitted ones)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.kind not in PRESETS:
            raise VaekitError(f"unknown kind {config.kind!r} (choose from {', '.join(PRESETS)})")
        self.preset = PRESETS[config.kind]
        self.config = config = with_defaults(with_preset_settings(config, self.preset.settings))
        validate(config)
        self.conditioning = conditioning(config.classes if config.conditional else 0, config.image_shape)
        make_encoder, make_decoder = ARCHS[config.arch]
        self.latent = self.preset.latent(config)
        self.encoder = make_encoder(config, self.conditioning.encoder_shape(config.image_shape),
                                    config.latent_dim * self.latent.params_per_dim)
        self.likelihood = LIKELIHOODS[config.likelihood].from_config(config)
        c, h, w = config.image_shape
        self.decoder = make_decoder(config, self.conditioning.decoder_inputs(config.latent_dim),
                                    (c * self.likelihood.params_per_pixel, h, w))
        self.priors = nn.ModuleDict({OWN: self.preset.prior(self)})
        self.meta: dict[str, Any] = {}  # run metadata read from a checkpoint (data, training progress, metrics)

    # --- what the model is and can do ----------------------------------------------------------------------

    kind = property(lambda self: self.config.kind)
    latent_dim = property(lambda self: self.config.latent_dim)
    has_density = property(lambda self: self.latent.has_density)  # a likelihood bound exists
    prior = property(lambda self: self.priors[OWN])  # its own p(z): generation draws from it
    classes = property(lambda self: self.conditioning.classes)  # the labels it is conditioned on (0: none)

    @property
    def class_names(self) -> list[str]:
        """The names of its data's classes, as its checkpoint recorded them (what is not a string shows as '?')."""
        names = self.meta.get("classes")
        return [n if isinstance(n, str) else "?" for n in names] if isinstance(names, list) else []

    def label(self, name: str) -> int:
        """The class index a user names (index or class name), refused in one line when unknown or unconditional."""
        return self.conditioning.pick(name, self.class_names)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- the parts at work ----------------------------------------------------------------------------------

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian | PointMass:
        """q(z|x): a Gaussian for the VAE, a point mass at the code for the AE (q(z|x, y) when conditional)."""
        return self.latent(self.encoder(self.conditioning.images(x, y)))

    def embed(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """A deterministic code per image: the posterior's mean (the AE's z, the VAE's mu)."""
        return self.encode(x, y).mean

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The decoder's raw output: the likelihood's parameters, C * params_per_pixel channels of the image's size
        (logits for Bernoulli, means for Gaussian, a mixture's weights, means and scales)."""
        return self.decoder(self.conditioning.codes(z, y))

    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode codes to mean images."""
        return self.likelihood.mean(self.decode(z, y))

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.generate(self.embed(x, y), y)

    def sample(self, n: int, generator: torch.Generator | None = None, prior: str = OWN,
               y: Tensor | None = None) -> Tensor:
        """Generation from scratch: z ~ p(z) (the named prior), x = D(z, y); a conditional model given no labels
        draws the classes in turn (`conditioning.spread`)."""
        z = self.priors[prior].sample(n, generator)
        return self.generate(z, self.conditioning.spread(n, z.device) if y is None else y)

    def forward(self, x: Tensor, kl_weight: float = 1.0, y: Tensor | None = None) -> Loss:
        """The preset's objective; `kl_weight` scales beta (KL warm-up)."""
        return self.preset.objective(self, x, kl_weight, y)

    def fitted_priors(self) -> dict[str, nn.Module]:
        """Priors fitted after training (saved in their own file), by name."""
        return {name: p for name, p in self.priors.items() if name != OWN}

    # --- files: safetensors + JSON, never pickle (saving.py) --------------------------------------------------

    def save_pretrained(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        from vaekit.models.saving import save_model

        return save_model(self, path, meta)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Autoencoder:
        from vaekit.models.saving import load_model

        return load_model(path, map_location)


def with_preset_settings(config: ModelConfig, settings: dict[str, Any]) -> ModelConfig:
    """The preset's own values for the settings the config leaves unset (None): beta is 1, or beta-vae's 4."""
    return dataclasses.replace(config, **{k: v for k, v in settings.items() if getattr(config, k) is None})


MAX_CODES = 65_536  # an FSQ codebook's size, like --codebook-size's bound
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights, before Adam's two copies


def build_model(config: ModelConfig) -> Autoencoder:
    """Build a model, after counting its parameters on the meta device (no memory): a config asking for a
    network beyond MAX_PARAMETERS, or beyond the memory free, is refused before anything is allocated."""
    check_size(config)
    return Autoencoder(config)


def check_size(config: ModelConfig) -> None:
    """The network of `config`, counted on the meta device, within MAX_PARAMETERS and the host's free memory."""
    size = parameter_count(config)
    if size > MAX_PARAMETERS:
        raise VaekitError(f"the model would have {size:,} parameters (more than {MAX_PARAMETERS:,}); use a smaller "
                          "--image-size, --hidden, --conv-channels or --latent-dim")
    from vaekit.devices import free_bytes

    free = free_bytes(torch.device("cpu"))  # built on the host first
    if free is not None and 4 * size > free:
        raise VaekitError(f"the model's {size:,} parameters need {4 * size / 2**30:.1f} GiB, more than the "
                          f"{free / 2**30:.1f} GiB free; use a smaller --image-size, --hidden, --conv-channels or "
                          "--latent-dim")


def parameter_count(config: ModelConfig) -> int:
    """How many numbers the model of `config` holds, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in Autoencoder(config).parameters())


def validate(config: ModelConfig) -> None:
    """Refuse configs that cannot build a model, with the reason in one line (each number's own range is
    checked by ModelConfig itself)."""
    c, h, w = config.image_shape
    if c not in (1, 3) or h < 1 or w < 1:
        raise VaekitError(f"image shape {config.image_shape}: need 1 or 3 channels and a positive size")
    for name, value, known in (("arch", config.arch, ARCHS),
                               ("likelihood", config.likelihood, LIKELIHOODS)):
        if value not in known:
            raise VaekitError(f"unknown {name} {value!r} (choose from {', '.join(known)})")
    if config.latent_dim < 1:
        raise VaekitError(f"latent_dim must be at least 1, got {config.latent_dim}")
    if config.arch in SPATIAL and min(h, w) < 2 ** len(config.channels):
        raise VaekitError(f"a {h}x{w} image is too small for {len(config.channels)} stride-2 convolutions")
    if config.latent_channels and config.latent_dim % config.latent_channels:
        raise VaekitError(f"latent_dim {config.latent_dim} is not a whole number of tokens of latent_channels "
                          f"{config.latent_channels}")
    if math.prod(config.fsq_levels) > MAX_CODES:
        raise VaekitError(f"--fsq-levels {','.join(map(str, config.fsq_levels))} make a codebook of "
                          f"{math.prod(config.fsq_levels):,} codes (at most {MAX_CODES:,})")
    if config.conditional and config.classes < 1:
        raise VaekitError("a conditional model needs labelled data (its number of classes is 0)")
    if config.logvar_min >= config.logvar_max:
        raise VaekitError(f"logvar_min ({config.logvar_min:g}) must be below logvar_max ({config.logvar_max:g})")
