"""Which tasks one shard of an evaluation scores.

``fusion run JOB --shard I/N`` scores, in every suite (a benchmark, or one
MultiPL-E language), the problems whose position in that suite's list,
after the job's ``limit`` and ``tasks`` filters, satisfies ``index % N == I``.
The N shards of a job are therefore a partition of its tasks: disjoint, and
together every task once, whatever N is (a shard may get no task of a small
suite). Round-robin rather than contiguous blocks, so that each shard gets a
similar mix of early (short) and late (long) HumanEval problems.

A Kubernetes Indexed Job passes ``--shard $(JOB_COMPLETION_INDEX)/N``;
``fusion merge`` puts the shards' per-task rows back into one table.
"""

from __future__ import annotations

import re
from typing import Sequence, TypeVar

from ray_pipeline.core.errors import FusionError

T = TypeVar("T")

#: (index I, count N) with 0 <= I < N
Shard = tuple[int, int]

_FORM = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> (I, N); FusionError (one line) unless N > 0 and 0 <= I < N."""
    match = _FORM.match(str(text))
    if match is None:
        raise FusionError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
    index, count = int(match.group(1)), int(match.group(2))
    if count <= 0:
        raise FusionError(f"--shard {text}: the shard count N must be at least 1")
    if not 0 <= index < count:
        raise FusionError(f"--shard {text}: the shard index I must be in 0..{count - 1} (I < N)")
    return index, count


def normalise(shard: Shard | None) -> Shard | None:
    """None for "no sharding" (also 0/1, which is the whole job); else the shard, checked."""
    if shard is None:
        return None
    index, count = int(shard[0]), int(shard[1])
    if count <= 0 or not 0 <= index < count:
        raise FusionError(f"shard {index}/{count}: need N > 0 and 0 <= I < N")
    return None if count == 1 else (index, count)


def format_shard(shard: Shard) -> str:
    return f"{shard[0]}/{shard[1]}"


def select(items: Sequence[T], shard: Shard | None) -> list[T]:
    """The items of ``shard``: those whose index satisfies ``index % N == I`` (all of them for None)."""
    if shard is None:
        return list(items)
    index, count = shard
    return [item for position, item in enumerate(items) if position % count == index]
