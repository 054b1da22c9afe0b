"""The latent explorer: `vaekit serve` (FastAPI app + static page)."""
