"""One record per teacher call of a TaCIE run: what was asked for, what came back, and how it parsed.

``Attempt`` is a dataclass whose fields are, in order, the columns of ``attempts.parquet`` and of
``checkpoints/round-NN.attempts.parquet``; ``ATTEMPT_SCHEMA`` is derived from them (see ``items.column``).
The success rates per operation and round, and the token and cost totals of the manifest, are
counted from these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa

from ray_pipeline.methods.tacie.items import arrow_schema, column

#: how an attempt ended, in the order the metrics list them
ATTEMPT_OUTCOMES = ("ok", "invalid", "parse_error", "api_error")


@dataclass(kw_only=True)
class Attempt:
    round: int = column(pa.int64())
    operation: str = column(pa.string())
    #: the item the call made or changed (``""`` when it made none)
    item_id: str = column(pa.string())
    parent_ids: list[str] = column(pa.list_(pa.string()))
    outcome: str = column(pa.string())
    reason: str = column(pa.string())
    raw: str = column(pa.string())
    cache_key: str = column(pa.string())
    cached: bool = column(pa.bool_())
    prompt_tokens: int = column(pa.int64())
    completion_tokens: int = column(pa.int64())
    latency_s: float = column(pa.float64())
    node: str = column(pa.string())

    @classmethod
    def from_call(cls, t: int, op: str, item_id: str, parents: Iterable[str], outcome: str, reason: str,
                  row: dict[str, Any], prefix: str) -> "Attempt":
        """The record of one answered teacher-stage row (its ``<prefix>_*`` result columns)."""
        return cls(
            round=t,
            operation=op,
            item_id=item_id,
            parent_ids=list(parents),
            outcome=outcome,
            reason=reason or "",
            raw=row.get(f"{prefix}_text", ""),
            cache_key=row["cache_key"],
            cached=bool(row[f"{prefix}_cached"]),
            prompt_tokens=int(row[f"{prefix}_prompt_tokens"]),
            completion_tokens=int(row[f"{prefix}_completion_tokens"]),
            latency_s=float(row[f"{prefix}_latency_s"]),
            node=row[f"{prefix}_node"],
        )

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ATTEMPT_SCHEMA.names}


ATTEMPT_SCHEMA = arrow_schema(Attempt)


def attempts_table(attempts: list[Attempt]) -> pa.Table:
    return pa.Table.from_pylist([a.to_row() for a in attempts], schema=ATTEMPT_SCHEMA)


def attempts_from_table(table: pa.Table) -> list[Attempt]:
    return [Attempt(**{name: row[name] for name in ATTEMPT_SCHEMA.names}) for row in table.to_pylist()]


__all__ = ["Attempt", "ATTEMPT_SCHEMA", "ATTEMPT_OUTCOMES", "attempts_table", "attempts_from_table"]
