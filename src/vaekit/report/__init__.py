"""Reports: the AE vs VAE comparison (HTML + JSON) and its figures."""
