"""Samplers fitted after training: answers to "where are the codes, so we can sample?" that work for any model,
the plain AE as well as the VAE, because they look at the codes the encoder actually gives.

  gmm            a Gaussian mixture on the training codes (Ghosh et al., 2020)
  two-stage      a second, small VAE on the training codes (Dai & Wipf, 2019): its prior N(0, I) is where its
                 own codes are, and its decoder maps them to where the first model's codes are

`fit_samplers` fits both to one pass of codes; `fit_mixture` the mixture alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.data import ImageSet, map_batches
from vaekit.errors import warn
from vaekit.models import Autoencoder, GaussianMixture
from vaekit.models.priors import GMM_FIT_CODES, TwoStage


def training_codes(model: Autoencoder, images: ImageSet, batch_size: int = 1000, limit: int = GMM_FIT_CODES) -> Tensor:
    """The codes (posterior means) of the first `limit` images, on the model's device."""
    return map_batches(model.embed, images, batch_size, model.device, limit=limit).to(model.device)


def fit_mixture(model: Autoencoder, images: ImageSet, components: int, seed: int, batch_size: int = 1000,
                limit: int = GMM_FIT_CODES) -> GaussianMixture:
    """A mixture fitted to the codes of the first `limit` images, on the model's device."""
    return GaussianMixture.fit(training_codes(model, images, batch_size, limit), components, seed).to(model.device)


def fit_samplers(model: Autoencoder, images: ImageSet, components: int, epochs: int, seed: int,
                 batch_size: int = 1000, limit: int = GMM_FIT_CODES) -> dict[str, nn.Module]:
    """The samplers asked for (a mixture of `components`, a second stage trained `epochs`; 0 skips one), fitted to
    one pass of codes; a sampler that cannot be fitted (codes not finite, a fit that diverged) is left out with a
    warning saying why."""
    wanted = {"gmm": components, "two-stage": epochs}
    if not any(wanted.values()):
        return {}
    codes = training_codes(model, images, batch_size, limit)
    fits = {"gmm": lambda: GaussianMixture.fit(codes, components, seed).to(model.device),
            "two-stage": lambda: second_stage(codes, epochs, seed)}
    fitted = {}
    for name in (name for name, n in wanted.items() if n):
        try:
            fitted[name] = fits[name]()
        except ValueError as e:
            warn(f"no {name} sampler: {str(e)[:200]}")
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
    dim = codes.shape[1]
    mean, std = codes.mean(0), codes.std(0).clamp_min(1e-6)
    x = ((codes - mean) / std).reshape(-1, 1, 1, dim)
    stage = Autoencoder(ModelConfig(kind="vae", image_shape=(1, 1, dim), arch="mlp", hidden=(hidden, hidden),
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
