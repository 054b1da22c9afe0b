"""The plain AutoEncoder and the Variational AutoEncoder: one mechanism, two small differences.

AE:  z = E(x) deterministic;          loss = -log p(x | z)                       (reconstruction only)
VAE: q(z|x) = N(mu(x), diag sigma^2); loss = -log p(x | z) + beta * KL(q || N(0, I)), z = mu + sigma * eps

Both decode with the same network and likelihood, and both can decode z ~ N(0, I); whether
that gives plausible images is what the comparison measures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig, from_dict, short, to_dict
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, write_json
from vaekit.models.likelihoods import LIKELIHOODS
from vaekit.models.networks import ARCHS, with_defaults
from vaekit.models.posterior import DiagonalGaussian

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


@dataclass
class Loss:
    """Loss terms in nats, one value per image, and the scalar that training minimises."""

    recon: Tensor  # -log p(x|z): the reconstruction term, (B,)
    kl: Tensor  # KL(q(z|x) || N(0, I)), (B,); zero for the AE
    objective: Tensor  # mean over the batch of recon + weighted (possibly free-bits) KL

    @property
    def nelbo(self) -> Tensor:
        """Negative ELBO per image (for the AE: just the reconstruction term)."""
        return self.recon + self.kl


class AE(nn.Module):
    """Plain autoencoder: a deterministic code z = E(x), trained on reconstruction alone."""

    kind = "ae"
    variational = False  # no posterior, no KL, no ELBO: only a reconstruction error
    encoder_outputs = 1  # numbers per latent dimension the encoder produces

    def __init__(self, config: ModelConfig):
        super().__init__()
        config = with_defaults(config)
        validate(config)
        self.config = config
        make_encoder, make_decoder = ARCHS[config.arch]
        self.encoder = make_encoder(config, config.latent_dim * self.encoder_outputs)
        self.decoder = make_decoder(config)
        self.likelihood = LIKELIHOODS[config.likelihood].from_config(config)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor) -> Tensor:
        """z = E(x): one point per image."""
        return self.encoder(x)

    def embed(self, x: Tensor) -> Tensor:
        """A deterministic code per image (the AE's z, the VAE's posterior mean)."""
        return self.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's raw output (logits for Bernoulli, means for Gaussian), shaped like images."""
        return self.decoder(z)

    def generate(self, z: Tensor) -> Tensor:
        """Decode codes to mean images."""
        return self.likelihood.mean(self.decode(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.generate(self.embed(x))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Generation from scratch: z ~ N(0, I), x = D(z)."""
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.generate(z)

    def forward(self, x: Tensor, kl_weight: float = 1.0) -> Loss:
        recon = self.likelihood.nll(x, self.decode(self.encode(x)))
        return Loss(recon=recon, kl=torch.zeros_like(recon), objective=recon.mean())

    # --- saving and loading: safetensors + JSON, never pickle -------------------------------------

    def save_pretrained(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write model.safetensors and config.json into the folder `path` (each file atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        config = {"format": "vaekit", "version": FORMAT_VERSION, "kind": self.kind, "model": to_dict(self.config),
                  **(meta or {})}
        with atomic_write(path / WEIGHTS_FILE) as tmp:
            save_file(weights, str(tmp))
        write_json(path / CONFIG_FILE, config)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> AE:
        """Load a model saved by `save_pretrained` or a run folder (its best, else latest, checkpoint).

        Returns the class recorded in the file (an AE or a VAE); loading never executes code."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = resolve_checkpoint(path)
        config = read_model_config(folder)
        model_cls = MODELS[config["kind"]]
        if not issubclass(model_cls, cls):
            raise VaekitError(f"{folder}: holds a {config['kind'].upper()}, not a {cls.kind.upper()}")
        model = construct(model_cls, from_dict(ModelConfig, config["model"], f"{folder / CONFIG_FILE}: model"))
        try:
            weights = load_file(str(folder / WEIGHTS_FILE), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as e:
            raise VaekitError(f"{folder / WEIGHTS_FILE}: not a readable safetensors file ({e})") from None
        bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise VaekitError(f"{folder / WEIGHTS_FILE}: {bad} holds NaN or infinite values; refusing weights that "
                              "would decode every code to garbage")
        missing, unexpected = _state_mismatch(model, weights)
        if missing or unexpected:
            what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
            raise VaekitError(f"{folder}: weights do not match the config ({what})")
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            raise VaekitError(f"{folder}: weights do not match the config ({first})") from None
        model.meta = {k: v for k, v in config.items() if k not in ("format", "version", "kind", "model")}
        return model.to(map_location)


class VAE(AE):
    """Variational autoencoder: the encoder returns q(z|x) = N(mu, diag sigma^2)."""

    kind = "vae"
    variational = True
    encoder_outputs = 2  # mu and log sigma^2

    def encode(self, x: Tensor) -> DiagonalGaussian:
        c = self.config
        return DiagonalGaussian.from_params(self.encoder(x), logvar_min=c.logvar_min, logvar_max=c.logvar_max)

    def embed(self, x: Tensor) -> Tensor:
        return self.encode(x).mean

    def forward(self, x: Tensor, kl_weight: float = 1.0) -> Loss:
        """Reconstruction + beta * KL; `kl_weight` scales beta (KL warm-up).

        Free bits (Kingma et al., 2016): each latent dimension's batch-mean KL below `free_bits` nats
        is not penalised, which keeps dimensions from collapsing to the prior early on."""
        q = self.encode(x)
        z = q.sample()
        recon = self.likelihood.nll(x, self.decode(z))
        kl_per_dim = q.kl_per_dim()
        penalty = kl_per_dim.mean(0).clamp(min=self.config.free_bits).sum()
        objective = recon.mean() + kl_weight * self.config.beta * penalty
        return Loss(recon=recon, kl=kl_per_dim.sum(-1), objective=objective)


MODELS: dict[str, type[AE]] = {"ae": AE, "vae": VAE}


MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights, before Adam's two copies


def build_model(config: ModelConfig) -> AE:
    if config.kind not in MODELS:
        raise VaekitError(f"unknown model kind {short(config.kind)} (choose from {', '.join(MODELS)})")
    return construct(MODELS[config.kind], config)


def construct(model_cls: type[AE], config: ModelConfig) -> AE:
    """Build a model, after counting its parameters on the meta device (no memory): a config asking for a
    network beyond MAX_PARAMETERS is refused before anything is allocated."""
    with torch.device("meta"):
        size = sum(p.numel() for p in model_cls(config).parameters())
    if size > MAX_PARAMETERS:
        raise VaekitError(f"the model would have {size:,} parameters (more than {MAX_PARAMETERS:,}); use a smaller "
                          "--image-size, --hidden, --conv-channels or --latent-dim")
    return model_cls(config)


def validate(config: ModelConfig) -> None:
    """Refuse configs that cannot build a model, with the reason in one line (each number's own range is
    checked by ModelConfig itself)."""
    c, h, w = config.image_shape
    if c not in (1, 3) or h < 1 or w < 1:
        raise VaekitError(f"image shape {config.image_shape}: need 1 or 3 channels and a positive size")
    for name, value, known in (("kind", config.kind, MODELS), ("arch", config.arch, ARCHS),
                               ("likelihood", config.likelihood, LIKELIHOODS)):
        if value not in known:
            raise VaekitError(f"unknown {name} {value!r} (choose from {', '.join(known)})")
    if config.latent_dim < 1:
        raise VaekitError(f"latent_dim must be at least 1, got {config.latent_dim}")
    if config.arch == "conv" and min(h, w) < 2 ** len(config.channels):
        raise VaekitError(f"a {h}x{w} image is too small for {len(config.channels)} stride-2 convolutions")
    if config.logvar_min >= config.logvar_max:
        raise VaekitError(f"logvar_min ({config.logvar_min:g}) must be below logvar_max ({config.logvar_max:g})")


def _state_mismatch(model: nn.Module, weights: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(weights)), sorted(set(weights) - expected)


# --- files ------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """A model folder, a checkpoint folder, or a run folder (its best, else latest, checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise VaekitError(f"{path}: no such checkpoint or run folder")
    if path.is_file():
        if path.name in (WEIGHTS_FILE, CONFIG_FILE):
            return path.parent
        raise VaekitError(f"{path}: expected a checkpoint folder (model.safetensors + config.json), not a file; "
                          "vaekit never loads pickled checkpoints")
    if (path / CONFIG_FILE).is_file():
        return path
    for pointer in ("best", "latest"):
        p = path / "checkpoints" / pointer
        if p.is_file():
            target = path / "checkpoints" / p.read_text().strip()
            if (target / CONFIG_FILE).is_file():
                return target
    raise VaekitError(f"{path}: not a vaekit checkpoint or run folder (no config.json, no checkpoints/latest)")


def read_model_config(folder: Path) -> dict[str, Any]:
    file = folder / CONFIG_FILE
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VaekitError(f"{file}: not a readable JSON config ({e})") from None
    if not isinstance(config, dict) or config.get("format") != "vaekit" or config.get("kind") not in MODELS:
        raise VaekitError(f"{file}: not a vaekit model config")
    if not isinstance(config.get("model"), dict):
        raise VaekitError(f"{file}: the 'model' section is missing")
    return config
