"""Objectives: what training minimises, written over the model's parts (posterior, prior, likelihood).

  reconstruction   the plain AE:  -log p(x | z),  z = E(x)
  elbo             the VAE:       -log p(x | z) + beta * KL(q(z|x) || p(z)),  z = mu + sigma * eps
                   with KL warm-up (`kl_weight` ramps beta) and free bits (Kingma et al., 2016)
  log_weights      log p(x|z_k) + log p(z_k) - log q(z_k|x) for K draws from q: the importance weights
                   behind the IS estimate of log p(x) (and, next, the IWAE bound)

Every objective returns a `Loss`: terms in nats per image, and the scalar to minimise. Losses sum over
pixels and latent dimensions and average over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Loss:
    """Loss terms in nats, one value per image, and the scalar that training minimises."""

    recon: Tensor  # -log p(x|z): the reconstruction term, (B,)
    kl: Tensor  # KL(q(z|x) || p(z)), (B,); zero for a point-mass posterior (the AE has no KL term)
    objective: Tensor  # mean over the batch of recon + weighted (possibly free-bits) KL

    @property
    def total(self) -> Tensor:
        """recon + KL per image: the negative ELBO where the posterior has a density, the reconstruction error
        for the AE (which has no ELBO)."""
        return self.recon + self.kl


def reconstruction(model: Any, x: Tensor, kl_weight: float = 1.0) -> Loss:
    """The plain AE's objective: the reconstruction term alone, at the code z = E(x)."""
    recon = model.likelihood.nll(x, model.decode(model.encode(x).sample()))
    return Loss(recon=recon, kl=torch.zeros_like(recon), objective=recon.mean())


def elbo(model: Any, x: Tensor, kl_weight: float = 1.0) -> Loss:
    """Negative ELBO: reconstruction at z ~ q(z|x) (reparameterized) + kl_weight * beta * KL(q || p).

    Free bits: each latent dimension's batch-mean KL below `free_bits` nats is not penalised (closed-form KL);
    with a prior that has no closed form, the Monte Carlo KL is floored at free_bits * D."""
    c, q = model.config, model.encode(x)
    z = q.sample()
    recon = model.likelihood.nll(x, model.decode(z))
    kl_dims = model.prior.closed_form_kl(q)  # (B, D), or None where there is no closed form
    if kl_dims is not None:
        kl, penalty = kl_dims.sum(-1), kl_dims.mean(0).clamp(min=c.free_bits).sum()
    else:
        kl = q.kl(model.prior, z)
        penalty = kl.mean().clamp(min=c.free_bits * model.latent_dim)
    return Loss(recon=recon, kl=kl, objective=recon.mean() + kl_weight * c.beta * penalty)


def default_rows(device: torch.device) -> int:
    """Codes per decode in `log_weights`: on a CPU 4096 keep the decoder's output in cache, nearly twice as fast
    as 50,000 (bench/README.md); other devices take 50,000."""
    return 4096 if device.type == "cpu" else 50_000


def log_weights(model: Any, x: Tensor, k: int, rows: int | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): shape (K, B).

    Batched over images and samples, no Python loop per image: each decode takes about `rows` codes. Needs a
    posterior with a density (a point mass has none)."""
    q = model.encode(x)  # once per image, not once per sample
    per_decode = max(1, (rows or default_rows(x.device)) // len(x))
    chunks = []
    for start in range(0, k, per_decode):
        n = min(per_decode, k - start)
        z = q.sample(n)  # (n, B, D)
        logits = model.decode(z.reshape(n * len(x), -1)).reshape(n, *x.shape)
        log_px_z = -model.likelihood.nll(x.unsqueeze(0), logits)  # (n, B)
        chunks.append(log_px_z + model.prior.log_prob(z) - q.log_prob(z))
    return torch.cat(chunks)


@torch.no_grad()
def mean_loss(model: Any, batches: Iterable[Tensor], total: Callable[[Tensor], Tensor] = lambda t: t) -> dict[str, Any]:
    """Mean reconstruction, KL and their sum per image (nats) and bits/dim over a whole split.

    `total` reduces the sums across processes (DDP); the sum is also called `nelbo` where it is one (the
    posterior has a density)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=getattr(batches, "device", None))
    for x in batches:
        loss = model(x)
        sums += torch.stack([loss.recon.sum(), loss.kl.sum(), torch.tensor(float(len(x)), device=x.device)]).double()
    model.train(was_training)
    recon, kl, n = total(sums).tolist()
    n = max(n, 1.0)
    loss = (recon + kl) / n
    result = {"recon": recon / n, "kl": kl / n, "loss": loss, "bpd": loss / (math.prod(model.config.image_shape)
                                                                                * math.log(2)), "images": int(n)}
    return {**result, "nelbo": loss} if model.has_density else result
