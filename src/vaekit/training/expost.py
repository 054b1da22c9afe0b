"""Priors fitted after training (Ghosh et al., 2020): a Gaussian mixture on the training codes, an answer to
"where are the codes, so we can sample?" that works for the plain AE as well as the VAE."""

from __future__ import annotations

from vaekit.data import ImageSet, map_batches
from vaekit.models import Autoencoder, GaussianMixture
from vaekit.models.priors import GMM_FIT_CODES


def fit_mixture(model: Autoencoder, images: ImageSet, components: int, seed: int, batch_size: int = 1000,
                limit: int = GMM_FIT_CODES) -> GaussianMixture:
    """A mixture fitted to the codes (posterior means) of the first `limit` images, on the model's device."""
    codes = map_batches(model.embed, images, batch_size, model.device, limit=limit)
    return GaussianMixture.fit(codes, components, seed).to(model.device)
