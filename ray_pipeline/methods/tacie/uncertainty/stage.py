"""The stage that scores instructions: q = P(response | instruction) and the uncertainty u.

Rows in: ``id``, ``instruction``, ``response``. Rows out: the same rows plus
``q`` (TaCIE eq. 3 for the instruction itself; ``ray_pipeline/methods/tacie/uncertainty/score.py``), ``q_perturbed``
(the N_U values q_ij of eq. 3), ``uncertainty`` (u, eq. 2), ``instruction_tokens``
(scorer tokens of the instruction), ``response_truncated`` (the response was
cut to fit ``max_length``) and ``scorer_node``.

A row's perturbations come from a seed derived from the job seed and the row's
id, so its scores do not depend on how rows are batched. The original and the
N_U perturbed instructions of every row in a batch go to the scorer together,
so the backend batches them. q and every q_j are taken over the same response
tokens (when a response is cut, over the tokens every variant kept); an empty
response has q = u = NaN.
"""

from __future__ import annotations

import pandas as pd

from ray_pipeline.methods.tacie.config import ScorerConfig
from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.methods.tacie.uncertainty.registry import build_scorer
from ray_pipeline.teachers.stage import node_id
from ray_pipeline.methods.tacie.uncertainty.score import perturb, sequence_probability, uncertainty


def scorer_resources(cfg: ScorerConfig) -> dict[str, float]:
    """Ray resources of one scorer actor (for ``executor.run_stage``)."""
    return {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}


class ScorerStage:
    """``map_batches`` UDF: one scorer (model loaded once) per actor."""

    def __init__(self, scorer_cfg: ScorerConfig, seed: int):
        self.cfg = scorer_cfg
        self.seed = seed
        self.scorer = build_scorer(scorer_cfg)
        self.node = node_id()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        ids = [str(i) for i in batch["id"].tolist()]
        instructions = [str(c) for c in batch["instruction"].tolist()]
        responses = [str(r) for r in batch["response"].tolist()]
        n = self.cfg.num_perturbations
        pairs = []
        for item_id, instruction, response in zip(ids, instructions, responses):
            variants = [instruction, *perturb(instruction, n, self.cfg.drop_prob, derived_seed(self.seed, "perturb", item_id))]
            pairs.extend((variant, response) for variant in variants)
        logprobs = self.scorer.response_logprobs(pairs)
        response_tokens = self.scorer.count_tokens(responses)
        q, q_perturbed, u, truncated = [], [], [], []
        for k, full in enumerate(response_tokens):
            group = logprobs[k * (n + 1) : (k + 1) * (n + 1)]
            common = min(len(lp) for lp in group)
            scores = [sequence_probability(lp[:common], self.cfg.probability) for lp in group]
            q.append(scores[0])
            q_perturbed.append(scores[1:])
            u.append(uncertainty(scores[0], scores[1:]))
            truncated.append(common < full)
        out = batch.copy()
        out["q"] = q
        out["q_perturbed"] = q_perturbed
        out["uncertainty"] = u
        out["instruction_tokens"] = self.scorer.count_tokens(instructions)
        out["response_truncated"] = truncated
        out["scorer_node"] = self.node
        return out

    def __del__(self) -> None:
        try:
            self.scorer.close()
        except Exception:
            pass
