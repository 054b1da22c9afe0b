"""The family, as presets over shared parts: which posterior the encoder returns, which prior the codes are
drawn from, which objective trains it. Adding a member is one entry here (and, if it needs one, an objective
in objectives.py or a prior in priors.py); no class to subclass, no code that asks which member it has.

Every member answers the seed's question, "how do we know where the codes are, so we can sample?", its own way:
  ae        it does not: nothing ties the codes to N(0, I) (an ex-post sampler must find them)
  vae       the KL pulls each q(z|x) towards N(0, I);  beta-vae: harder (beta > 1)
  iwae      the same prior, a tighter bound: k importance-weighted draws per image
  vamp      the prior moves to the codes: a mixture of the encoder's posteriors at learned pseudo-inputs
  wae       deterministic codes whose batch distribution is pushed to N(0, I) by an MMD penalty
  rae       deterministic codes kept small and a smooth decoder; the sampler is fitted afterwards (gmm, two-stage)
  vqvae     discrete codes: each token one of a learned codebook's entries; a prior over the codes (a PixelCNN)
            is fitted afterwards, uniformly random codes are the baseline
  fsq       discrete codes on a fixed grid of levels per number, no codebook to learn (or to collapse)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from torch import nn

from vaekit.models.latents import CodebookLatent, GaussianLatent, PointLatent, ScalarLatent
from vaekit.models.objectives import Loss, elbo, iwae, quantized, rae, reconstruction, wae_mmd
from vaekit.models.priors import StandardNormal, UniformCodes, VampPrior


def standard_normal(model: Any) -> nn.Module:
    return StandardNormal(model.latent_dim)


def uniform_codes(model: Any) -> nn.Module:
    return UniformCodes(model.latent)


def vamp_prior(model: Any) -> nn.Module:
    """The encoder at the pseudo-inputs; a conditional model's pseudo-inputs take the classes in turn."""
    def encode(u):
        return model.encode(u, model.conditioning.spread(len(u), u.device))

    return VampPrior(encode, model.config.pseudo_inputs, model.config.image_shape)


@dataclass(frozen=True)
class Preset:
    latent: type[nn.Module]  # the latent part (latents.py): the encoder's output becomes q(z|x)
    objective: Callable[..., Loss]  # objective(model, x, kl_weight, y) -> Loss
    prior: Callable[[Any], nn.Module]  # prior(model): p(z), what generation draws from
    words: str  # one line for --help and reports
    _: KW_ONLY
    label: str  # its name for people: AE, VAE, beta-VAE, ...
    card: str  # what it is, in a model card's first sentence: "a plain autoencoder (...)"
    uses: tuple[str, ...] = ()  # the ModelConfig settings its objective and prior read (what `info` shows)
    min_batch: int = 1  # the smallest batch its objective means something on (an MMD compares two codes or more)
    settings: dict[str, Any] = field(default_factory=lambda: {"beta": 1.0})  # ModelConfig values this member uses
    # where the config leaves them unset (None): beta 1, beta-vae's 4
    generating: str = "Draw z ~ N(0, I) and decode it, or draw z from a sampler fitted to the codes."  # the card's
    likelier: str = ""  # why it can win the likelihood among the family, when it does (a report's sentence)


TOKENS = {"beta": 1.0, "latent_channels": 16}  # a quantized model's code: 16 numbers per token unless told (FSQ: as
LEVELS = {"beta": 1.0, "latent_channels": 4}  # many as its default levels, 8,5,5,5, so nothing is projected)
FROM_CODES = ("Draw a code from the PixelCNN fitted to its training codes and decode it; uniformly random codes (its "
              "own prior) give poor images.")
ELBO = ("beta", "free_bits")
NOT_PULLED = ("Its codes were never pulled towards N(0, I), so decoding z ~ N(0, I) gives poor images: draw z from a "
              "sampler fitted to the codes and decode it.")

PRESETS: dict[str, Preset] = {
    "ae": Preset(PointLatent, reconstruction, standard_normal,
                 "plain AE: a deterministic code z = E(x), trained on reconstruction alone", label="AE",
                 card="a plain autoencoder (deterministic codes, no likelihood bound; sample through a sampler fitted "
                      "to its codes, not N(0, I))", generating=NOT_PULLED),
    "vae": Preset(GaussianLatent, elbo, standard_normal,
                  "VAE: the encoder returns q(z|x) = N(mu, sigma^2); loss = recon + beta * KL(q || N(0, I))",
                  uses=ELBO, label="VAE", card="a variational autoencoder (q(z|x) = N(mu, diag sigma^2), trained on "
                                               "reconstruction + KL to N(0, I))"),
    "beta-vae": Preset(GaussianLatent, elbo, standard_normal,
                       "beta-VAE: the VAE with the KL weighted by beta (--beta, 4 unless given)", uses=ELBO,
                       settings={"beta": 4.0}, label="beta-VAE",
                       card="a beta-VAE (the VAE's objective with the KL weighted by beta)"),
    "iwae": Preset(GaussianLatent, iwae, standard_normal,
                   "IWAE: the VAE trained on the k-sample importance-weighted bound (--iwae-k)",
                   uses=("iwae_k", "beta"), label="IWAE",
                   card="an importance-weighted autoencoder (trained on the k-sample IWAE bound)",
                   likelier="IWAE trains on the k-sample bound, which is tighter than the ELBO, so its encoder is free "
                            "to be less Gaussian-exact and the model can place more mass on the data."),
    "vamp": Preset(GaussianLatent, elbo, vamp_prior,
                   "VampPrior VAE: p(z) is the mixture of q(z|u) at learned pseudo-inputs u (--pseudo-inputs)",
                   uses=("pseudo_inputs", *ELBO), label="VAMP",
                   card="a VAE with a VampPrior (a learned mixture of posteriors at pseudo-inputs)",
                   generating="Draw z from its learned VampPrior and decode it, or from a sampler fitted to the codes.",
                   likelier="The VampPrior moves the prior to where the codes are, so less KL is paid for codes the "
                            "data needs."),
    "wae": Preset(PointLatent, wae_mmd, standard_normal,
                  "WAE-MMD: deterministic codes, recon + lambda * MMD(codes, N(0, I)) (--mmd-weight)",
                  uses=("mmd_weight",), min_batch=2, label="WAE",
                  card="a Wasserstein autoencoder (MMD between the codes and N(0, I))"),
    "rae": Preset(PointLatent, rae, standard_normal,
                  "RAE: deterministic codes, recon + L2 on codes and decoder (--code-l2, --decoder-l2); sample it "
                  "with the fitted gmm or two-stage prior", uses=("code_l2", "decoder_l2"), label="RAE",
                  card="a regularized deterministic autoencoder (code and decoder penalties; sample through a fitted "
                       "sampler)", generating=NOT_PULLED),
    "vqvae": Preset(CodebookLatent, quantized, uniform_codes,
                    "VQ-VAE: each code token snaps to the nearest of a learned codebook's entries (--codebook-size); "
                    "loss = recon + commitment; sample it with the fitted code-prior", label="VQ-VAE",
                    uses=("latent_channels", "codebook_size", "commitment", "codebook_decay", "dead_code"),
                    settings=TOKENS, generating=FROM_CODES,
                    card="a vector-quantized autoencoder (discrete codes from a learned codebook, no likelihood bound "
                         "here; sample through the PixelCNN fitted to its codes)"),
    "fsq": Preset(ScalarLatent, quantized, uniform_codes,
                  "FSQ: each number of a code token rounds to one of a few levels (--fsq-levels), no codebook loss; "
                  "sample it with the fitted code-prior", label="FSQ", uses=("latent_channels", "fsq_levels"),
                  settings=LEVELS, generating=FROM_CODES,
                  card="a finite-scalar-quantized autoencoder (discrete codes on a fixed grid of levels, no likelihood "
                       "bound here; sample through the PixelCNN fitted to its codes)"),
}
PLAIN, VARIATIONAL = "ae", "vae"  # the seed's pair: the plain AE and the VAE, compared by default and told apart
# in the report's answer
