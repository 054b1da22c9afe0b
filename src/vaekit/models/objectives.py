"""Objectives: what training minimises, written over the model's parts (posterior, prior, likelihood).

  reconstruction   the plain AE:  -log p(x | z),  z = E(x)
  quantized        VQ-VAE and FSQ: -log p(x | z_q) + the quantizer's commitment loss (none for FSQ)
  elbo             the VAE:       -log p(x | z) + beta * KL(q(z|x) || p(z)),  z = mu + sigma * eps
                   with KL warm-up (`kl_weight` ramps beta) and free bits (Kingma et al., 2016)
  iwae             the k-sample importance-weighted bound (Burda et al., 2016):
                   -log (1/k) sum_k w_k,  log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x);  k = 1 is the ELBO
  wae_mmd          the Wasserstein AE (Tolstikhin et al., 2018): -log p(x | z) + lambda * MMD(codes, draws of p(z)),
                   inverse multiquadric kernels; the encoder is deterministic
  rae              the regularized AE (Ghosh et al., 2020):
                   -log p(x | z) + beta_z * ||z||^2 / 2 + lambda * ||decoder weights||^2
  log_weights      the importance weights behind the IWAE bound and the IS estimate of log p(x)

Every objective is `objective(model, x, kl_weight, y)` (y: the labels of a conditional model, else None) and
returns a `Loss`: terms in nats per image, and the scalar to minimise. Losses sum over
pixels and latent dimensions and average over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vaekit.models.latents import codebook_use
from vaekit.models.posterior import divergence


@dataclass
class Loss:
    """Loss terms in nats, one value per image, and the scalar that training minimises."""

    recon: Tensor  # -log p(x|z): the reconstruction term, (B,)
    kl: Tensor  # KL(q(z|x) || p(z)), (B,); zero for a point-mass posterior (it has no KL term)
    objective: Tensor  # what training minimises: the batch mean of the terms, weighted, plus any penalty
    total: Tensor | None = None  # the bound per image, (B,): recon + KL (the -ELBO) unless the objective is a
    # tighter bound (IWAE); for a point-mass posterior, the reconstruction error (it defines no bound)
    indices: Tensor | None = None  # a discrete latent's code indices, (B, tokens): how much of its codebook is used

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = self.recon + self.kl


def reconstruction(model: Any, x: Tensor, kl_weight: float = 1.0, y: Tensor | None = None) -> Loss:
    """The plain AE's objective: the reconstruction term alone, at the code z = E(x)."""
    recon = model.likelihood.nll(x, model.decode(model.encode(x, y).sample(), y))
    return Loss(recon=recon, kl=torch.zeros_like(recon), objective=recon.mean())


def quantized(model: Any, x: Tensor, kl_weight: float = 1.0, y: Tensor | None = None) -> Loss:
    """A quantized autoencoder's objective (VQ-VAE, FSQ): the reconstruction at the quantized code, gradients passed
    straight through the quantizer, plus the quantizer's own loss (VQ-VAE's commitment term; FSQ has none)."""
    q = model.encode(x, y)
    recon = model.likelihood.nll(x, model.decode(q.sample(), y))
    return Loss(recon=recon, kl=torch.zeros_like(recon), objective=recon.mean() + q.penalty, indices=q.indices)


def elbo(model: Any, x: Tensor, kl_weight: float = 1.0, y: Tensor | None = None) -> Loss:
    """Negative ELBO: reconstruction at z ~ q(z|x) (reparameterized) + kl_weight * beta * KL(q || p).

    Free bits: each latent dimension's batch-mean KL below `free_bits` nats is not penalised (closed-form KL);
    with a prior that has no closed form, the Monte Carlo KL is floored at free_bits * D."""
    c, q = model.config, model.encode(x, y)
    z = q.sample()
    recon = model.likelihood.nll(x, model.decode(z, y))
    kl, kl_dims = divergence(q, model.prior, z)  # per dimension in closed form; else one draw, which may fall
    if kl_dims is not None:  # below 0: the floor then applies only with free bits
        penalty = kl_dims.mean(0).clamp(min=c.free_bits).sum()
    else:
        penalty = kl.mean().clamp(min=c.free_bits * model.latent_dim) if c.free_bits > 0 else kl.mean()
    return Loss(recon=recon, kl=kl, objective=recon.mean() + kl_weight * c.beta * penalty)


def default_rows(device: torch.device) -> int:
    """Codes per decode in `log_weights`: on a CPU 4096 keep the decoder's output in cache, nearly twice as fast
    as 50,000 (bench/README.md); other devices take 50,000."""
    return 4096 if device.type == "cpu" else 50_000


def log_weight_chunks(model: Any, x: Tensor, k: int, rows: int | None = None, q: Any = None,
                      y: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """For K draws z_k ~ q(z|x), a chunk of draws at a time: log p(x|z_k) and log p(z_k) - log q(z_k|x), each
    (n, B) for the n draws of the chunk.

    The encoder runs once (or not at all, given `q`); the decoder on a chunk of draws, batched, no Python loop per
    image: each decode takes about `rows` codes, so memory stays at one chunk for any K. Needs a posterior with a
    density (a point mass has none)."""
    q = model.encode(x, y) if q is None else q  # once per image, not once per sample
    width = model.likelihood.params_per_pixel  # each code decodes to this many numbers a pixel value
    per_decode = max(1, (rows or default_rows(x.device)) // (len(x) * width))
    for start in range(0, k, per_decode):
        n = min(per_decode, k - start)
        z = q.sample(n)  # (n, B, D)
        out = model.decode(z.reshape(n * len(x), -1), None if y is None else y.repeat(n))
        out = out.reshape(n, len(x), *out.shape[1:])  # the likelihood's parameters per pixel, per draw
        yield -model.likelihood.nll(x.unsqueeze(0), out), model.prior.log_prob(z) - q.log_prob(z)


def log_weight_terms(model: Any, x: Tensor, k: int, rows: int | None = None, q: Any = None,
                     y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`log_weight_chunks` gathered: log p(x|z_k) and log p(z_k) - log q(z_k|x), each (K, B)."""
    fits, ratios = zip(*log_weight_chunks(model, x, k, rows, q, y))
    return torch.cat(fits), torch.cat(ratios)


def log_weights(model: Any, x: Tensor, k: int, rows: int | None = None, y: Tensor | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): shape (K, B)."""
    fit, ratio = log_weight_terms(model, x, k, rows, y=y)
    return fit + ratio


def iwae(model: Any, x: Tensor, kl_weight: float = 1.0, y: Tensor | None = None) -> Loss:
    """The negative IWAE bound with k = config.iwae_k draws: -(logsumexp_k log w_k - log k), never above the -ELBO
    in expectation and equal to it at k = 1. Reported beside it: the k-draw estimates of the ELBO's terms.

    Warm-up and beta weigh log p(z) - log q(z|x) inside each weight (at kl_weight * beta = 1: the bound itself)."""
    k, q = model.config.iwae_k, model.encode(x, y)
    fit, ratio = log_weight_terms(model, x, k, q=q, y=y)
    bound = torch.logsumexp(fit + ratio, dim=0) - math.log(k)
    weighted = torch.logsumexp(fit + kl_weight * model.config.beta * ratio, dim=0) - math.log(k)
    kl, _ = divergence(q, model.prior, estimate=-ratio.mean(0))
    return Loss(recon=-fit.mean(0), kl=kl, objective=-weighted.mean(), total=-bound)


def imq_mmd(a: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
    """Unbiased MMD^2 between samples a and b (rows) under inverse multiquadric kernels k(x, y) = C / (C + |x - y|^2),
    summed over C = 2 D scale^2 * {0.1, 0.2, 0.5, 1, 2, 5, 10} (Tolstikhin et al., 2018)."""
    n, d = a.shape
    both = torch.cat([a, b])
    norms = both.pow(2).sum(-1)
    dist = (norms[:, None] + norms[None, :] - 2 * both @ both.T).clamp(min=0)  # |x - y|^2, no sqrt to differentiate
    kernel = sum(c / (c + dist) for c in (2 * d * scale ** 2 * f for f in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)))
    off = 1 - torch.eye(len(both), dtype=a.dtype, device=a.device)
    kaa, kbb, kab = (kernel * off)[:n, :n], (kernel * off)[n:, n:], kernel[:n, n:]
    m = len(b)
    return kaa.sum() / (n * (n - 1)) + kbb.sum() / (m * (m - 1)) - 2 * kab.mean()


def wae_mmd(model: Any, x: Tensor, kl_weight: float = 1.0, y: Tensor | None = None) -> Loss:
    """The WAE-MMD objective: reconstruction at the deterministic code, plus mmd_weight * MMD^2 between the batch's
    codes and as many draws from p(z). The penalty is a batch quantity: it enters the objective, not the terms."""
    z = model.encode(x, y).sample()
    recon = model.likelihood.nll(x, model.decode(z, y))
    penalty = imq_mmd(z, model.prior.sample(len(z)).to(z.dtype)) if len(z) > 1 else z.new_zeros(())
    return Loss(recon=recon, kl=torch.zeros_like(recon),
                objective=recon.mean() + kl_weight * model.config.mmd_weight * penalty)


def rae(model: Any, x: Tensor, kl_weight: float = 1.0, y: Tensor | None = None) -> Loss:
    """The RAE-L2 objective: reconstruction, code_l2 * ||z||^2 / 2 (which replaces the VAE's noise and KL), and
    decoder_l2 * the squared norm of the decoder's weights (which keeps the decoder smooth)."""
    z = model.encode(x, y).sample()
    recon = model.likelihood.nll(x, model.decode(z, y))
    c = model.config
    weights = sum(p.pow(2).sum() for p in model.decoder.parameters())
    penalty = c.code_l2 * 0.5 * z.pow(2).sum(-1).mean() + c.decoder_l2 * weights
    return Loss(recon=recon, kl=torch.zeros_like(recon), objective=recon.mean() + penalty)


@torch.no_grad()
def mean_loss(model: Any, batches: Iterable[tuple[Tensor, Tensor | None]],
              total: Callable[[Tensor], Tensor] = lambda t: t) -> dict[str, Any]:
    """Mean reconstruction, KL and the bound (`Loss.total`) per image (nats) and bits/dim over a whole split.

    `loss` is the bound the model trains on (`Loss.total`: the -ELBO, IWAE's k-draw bound, the AE's reconstruction
    error); `nelbo`, where the posterior has a density, is recon + KL; `codes_used` and `perplexity`, where the latent
    is discrete, how much of its codebook the split's codes use. `total` reduces the sums across processes."""
    was_training = model.training
    model.eval()
    size = model.latent.codebook_size if model.latent.discrete else 0
    sums = torch.zeros(4 + size, dtype=torch.float64, device=getattr(batches, "device", None))
    for x, y in batches:
        loss = model(x, y=y)
        counts = torch.bincount(loss.indices.flatten(), minlength=size) if size else loss.recon.new_zeros(0)
        sums += torch.cat([torch.stack([loss.recon.sum(), loss.kl.sum(), loss.total.sum(),
                                        torch.tensor(float(len(x)), device=x.device)]), counts]).double()
    model.train(was_training)
    sums = total(sums)
    recon, kl, bound, n = sums[:4].tolist()
    n = max(n, 1.0)
    loss = bound / n
    result = {"recon": recon / n, "kl": kl / n, "loss": loss, "bpd": loss / (math.prod(model.config.image_shape)
                                                                                * math.log(2)), "images": int(n)}
    if size:
        used, perplexity = codebook_use(sums[4:])
        result |= {"codes_used": used, "perplexity": perplexity}
    return {**result, "nelbo": (recon + kl) / n} if model.has_density else result
