"""Evaluation: IS-NLL, Frechet distance on classifier features, latent diagnostics, samplers."""

from vaekit.evaluation.evaluate import EvalSettings, Evaluation, evaluate_model
from vaekit.evaluation.metrics import active_units, code_statistics, frechet_distance, importance_sampled_nll

__all__ = ["EvalSettings", "Evaluation", "evaluate_model", "active_units", "code_statistics", "frechet_distance",
           "importance_sampled_nll"]
