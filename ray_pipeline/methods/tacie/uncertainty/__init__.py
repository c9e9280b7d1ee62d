"""Scorers: a causal LM's log-probabilities of a response given its instruction (for uncertainty)."""

from ray_pipeline.methods.tacie.uncertainty.scorer import Scorer, build_scorer, resolve_model

__all__ = ["Scorer", "build_scorer", "resolve_model"]
