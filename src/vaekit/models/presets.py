"""The family, as presets over shared parts: which posterior the encoder returns, which prior the codes are
drawn from, which objective trains it. Adding a member is one entry here (and, if it needs one, an objective
in objectives.py or a prior in priors.py); no class to subclass, no code that asks which member it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from vaekit.models.objectives import Loss, elbo, reconstruction
from vaekit.models.posterior import DiagonalGaussian, PointMass
from vaekit.models.priors import StandardNormal


@dataclass(frozen=True)
class Preset:
    posterior: type[DiagonalGaussian] | type[PointMass]  # what encode() returns
    objective: Callable[..., Loss]  # objective(model, x, kl_weight) -> Loss
    prior: Callable[[int], nn.Module]  # prior(latent_dim): p(z), what generation draws from
    words: str  # one line for --help and reports


PRESETS: dict[str, Preset] = {
    "ae": Preset(PointMass, reconstruction, StandardNormal,
                 "plain AE: a deterministic code z = E(x), trained on reconstruction alone"),
    "vae": Preset(DiagonalGaussian, elbo, StandardNormal,
                  "VAE: the encoder returns q(z|x) = N(mu, sigma^2); loss = recon + beta * KL(q || N(0, I))"),
}
