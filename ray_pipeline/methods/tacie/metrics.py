"""What a TaCIE run measures: per round (pool size, draws, success rates, uncertainty, diversity U) and overall.

Diversity U is eq. 8-10 (``analysis.diversity.diversity_u``, Euclidean d_i of eq. 9) over the answered
items' embeddings; uncertainty is u of eq. 2 (``uncertainty.score``).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from ray_pipeline.analysis.diversity import diversity_u
from ray_pipeline.methods.tacie.attempts import ATTEMPT_OUTCOMES, Attempt
from ray_pipeline.methods.tacie.items import TaCIEItem


def pool_u(items: list[TaCIEItem]) -> float | None:
    """Diversity U of the items' embeddings; None for fewer than 3 (two points are each other's neighbour: U = 0)."""
    vectors = [it.embedding for it in items if it.embedding is not None]
    if len(vectors) < 3:
        return None
    return float(diversity_u(np.stack(vectors)))


def round_metrics(t: int, items: list[TaCIEItem], attempts: list[Attempt], draws: dict[str, int]) -> dict[str, Any]:
    """The record of round ``t`` in ``metrics.json`` (and ``state.json``): the pool after it and its calls."""
    valid = [it for it in items if it.response]
    by_op: dict[str, Counter] = {}
    for a in attempts:
        if a.round == t:
            by_op.setdefault(a.operation, Counter())[a.outcome] += 1
    added = Counter(it.operation for it in valid if it.round == t)
    u = np.array([it.uncertainty for it in valid if math.isfinite(it.uncertainty)])
    return {
        "round": t,
        "pool_size": len(valid),
        "evolvable": sum(it.evolvable for it in items),
        "added": dict(sorted(added.items())),
        "draws": draws,
        "attempts": {op: {o: c.get(o, 0) for o in ATTEMPT_OUTCOMES} for op, c in sorted(by_op.items())},
        "success_rate": {op: c.get("ok", 0) / sum(c.values()) for op, c in sorted(by_op.items())},
        "over_token_limit": sum(it.status == "over_token_limit" for it in items if it.round == t),
        "diversity_u": pool_u(valid),
        "uncertainty": {"mean": float(u.mean()), "median": float(np.median(u))} if u.size else {"mean": None, "median": None},
        "domains": dict(sorted(Counter(it.root_domain for it in valid).items())),
    }


def pool_diversity(items: list[TaCIEItem]) -> dict[str, float | None]:
    """U of the seeds, of the evolved items, of every answered item and of those the filters kept."""
    valid = [it for it in items if it.response]
    return {
        "seeds": pool_u([it for it in valid if it.round == 0]),
        "evolved": pool_u([it for it in valid if it.round > 0]),
        "all": pool_u(valid),
        "kept": pool_u([it for it in items if it.kept]),
    }


def pool_counts(items: list[TaCIEItem], attempts: list[Attempt], operations: tuple[str, ...]) -> dict[str, Any]:
    """The manifest's counts: items, answered and kept, by round and operation, and attempt outcomes per operation."""
    valid = [it for it in items if it.response]
    return {
        "items": len(items),
        "answered": len(valid),
        "kept": sum(1 for it in items if it.kept),
        "by_round": dict(sorted(Counter(str(it.round) for it in valid).items())),
        "by_operation": dict(sorted(Counter(it.operation for it in valid).items())),
        "attempts": {op: dict(Counter(a.outcome for a in attempts if a.operation == op))
                     for op in operations if any(a.operation == op for a in attempts)},
    }


def json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


__all__ = ["pool_u", "round_metrics", "pool_diversity", "pool_counts", "json_safe"]
