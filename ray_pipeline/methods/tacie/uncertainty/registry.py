"""The scorer backends by name, and ``build_scorer``, which loads the one a config names.

The backends import the ``Scorer`` base (``scorer``) and this module imports the backends, so
imports run one way. Importing a backend is cheap: torch, transformers and vLLM are imported
inside its methods, when a scorer is built.
"""

from __future__ import annotations

from ray_pipeline.methods.tacie.config import ScorerConfig
from ray_pipeline.methods.tacie.uncertainty.hf import HFScorer
from ray_pipeline.methods.tacie.uncertainty.scorer import Scorer
from ray_pipeline.methods.tacie.uncertainty.vllm import VLLMScorer

#: ``scorer.backend`` -> its class
BACKENDS: dict[str, type[Scorer]] = {"hf": HFScorer, "vllm": VLLMScorer}


def build_scorer(cfg: ScorerConfig) -> Scorer:
    """The scorer backend a config names (its model is loaded once, here); any backend but ``hf`` is vLLM."""
    return BACKENDS.get(cfg.backend, VLLMScorer)(cfg)


__all__ = ["BACKENDS", "build_scorer"]
