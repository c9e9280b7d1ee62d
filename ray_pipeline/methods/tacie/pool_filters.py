"""The final pool's filters applied to its items: which are kept, and why the others were removed.

An item is removed when it has no response (its ``status`` says why), when a benchmark prompt
contaminates it, or when it is a near duplicate of an item kept before it (earlier rounds first). The
tests themselves (n-gram overlap, cosine near duplicates) live in ``filters``; none of this is the
TaCIE paper's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_pipeline.methods.tacie.filters import Decontaminator, near_duplicates
from ray_pipeline.methods.tacie.items import TaCIEItem


def mark_removed(items: list[TaCIEItem], decontaminator: Decontaminator, threshold: float | None) -> dict[str, Any]:
    """Set ``kept`` and ``removed_reason`` on every item; the counts the manifest and metrics report."""
    answered = [it for it in items if it.response]
    for it in items:
        if not it.response:
            it.kept, it.removed_reason = False, it.status
    matches = decontaminator.match_all(it.instruction for it in answered)
    for it, bench in zip(answered, matches):
        if bench:
            it.kept, it.removed_reason = False, f"contaminated:{bench}"
    near = 0
    live = [i for i, it in enumerate(items) if it.kept]
    if threshold is not None and len(live) > 1:
        order = sorted(range(len(live)), key=lambda k: (items[live[k]].round, k))
        X = np.stack([items[i].embedding for i in live])
        for k, dup_of in enumerate(near_duplicates(X, threshold, order)):
            if dup_of is not None:
                it = items[live[k]]
                it.kept, it.removed_reason = False, f"near_duplicate:{items[live[dup_of]].id}"
                near += 1
    return {
        "near_duplicate": near,
        "contaminated": decontaminator.counts(matches),
        "not_answered": sum(1 for it in items if not it.response),
        "kept": sum(it.kept for it in items),
    }


__all__ = ["mark_removed"]
