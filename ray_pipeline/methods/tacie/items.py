"""The TaCIE item: one instruction of the pool, its lineage, elements, response and scores.

This module is the item's one home. ``TaCIEItem`` is a dataclass whose fields are, in order, the
columns of every items Parquet file the pipeline writes (``checkpoints/round-NN.items.parquet`` and
``<job>.parquet``); ``ITEM_SCHEMA`` is derived from those fields (each declares its Arrow type), and
``to_row`` / ``from_row`` convert an item to and from an Arrow row. Code that makes or changes items
uses the fields, never string keys.

Fields by the paper's symbols (tacie.txt section 2.3): ``background`` / ``objectives`` /
``constraints`` are an instruction's elements (eq. 1); ``q`` is P(response | instruction) (eq. 3) and
``uncertainty`` is u (eq. 2); ``n_fusions`` is n_c and ``n_objectives`` n_obj of eq. 7;
``root_domain`` decides in- or cross-domain task fusion (Algorithm 1); ``embedding`` is the point
diversity U is measured on (eq. 8-10).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import Field, dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa

from ray_pipeline.methods.tacie.decomposition import Components
from ray_pipeline.methods.tacie.sampling import EvolvableItem


def column(arrow_type: pa.DataType, **kwargs: Any) -> Any:
    """A dataclass field that is also an Arrow column of ``arrow_type`` (``arrow_schema`` reads it)."""
    return field(metadata={"arrow": arrow_type}, **kwargs)


def arrow_schema(cls: type) -> pa.Schema:
    """The Arrow schema of a dataclass declared with ``column`` fields: one column per field, in field order."""
    return pa.schema([(f.name, f.metadata["arrow"]) for f in fields(cls)])


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(kw_only=True)
class TaCIEItem:
    """One instruction of the pool; new items start as ``status="new"`` (not yet answered or scored)."""

    id: str = column(pa.string())
    round: int = column(pa.int64())
    #: ``seed``, ``diversify``, or one of the evolution operations (``operations.OPERATIONS``)
    operation: str = column(pa.string())
    parent_ids: list[str] = column(pa.list_(pa.string()), default_factory=list)
    source: str = column(pa.string())
    domain: str = column(pa.string())
    #: the seed source's domain, inherited from the first parent (Algorithm 1, eq. 7's n_root)
    root_domain: str = column(pa.string())
    language: str = column(pa.string())
    instruction: str = column(pa.string())
    response: str = column(pa.string(), default="")
    background: list[str] = column(pa.list_(pa.string()), default_factory=list)
    objectives: list[str] = column(pa.list_(pa.string()), default_factory=list)
    constraints: list[str] = column(pa.list_(pa.string()), default_factory=list)
    #: ``ok`` when the elements were parsed; else why not (``""`` before decomposition)
    decomposition_outcome: str = column(pa.string(), default="")
    q: float = column(pa.float64(), default=math.nan)  # eq. 3
    uncertainty: float = column(pa.float64(), default=math.nan)  # u, eq. 2
    instruction_tokens: int = column(pa.int64(), default=0)
    n_fusions: int = column(pa.int64(), default=0)  # n_c, eq. 7
    n_objectives: int = column(pa.int64(), default=0)  # n_obj, eq. 7
    evolvable: bool = column(pa.bool_(), default=False)
    #: ``new``, ``ok``, ``no_response``, ``over_token_limit``, ``unscored`` or ``decomposition_<outcome>``
    status: str = column(pa.string(), default="new")
    #: float32 vector, or None until embedded (an empty list in Parquet)
    embedding: np.ndarray | None = column(pa.list_(pa.float32()), default=None)
    kept: bool = column(pa.bool_(), default=True)
    removed_reason: str = column(pa.string(), default="")
    teacher_model: str = column(pa.string(), default="")
    template: str = column(pa.string(), default="")
    template_sha256: str = column(pa.string(), default="")

    # ------------------------------------------------------------ elements
    @property
    def components(self) -> Components:
        """The elements (eq. 1) as the decomposition module's ``Components``."""
        return Components(tuple(self.background), tuple(self.objectives), tuple(self.constraints))

    @property
    def n_obj(self) -> int:
        """n_obj of eq. 7: recorded for evolved items, else the count of the item's objectives (at least 1)."""
        return max(1, int(self.n_objectives or len(self.objectives)))

    def candidate(self) -> EvolvableItem:
        """The item as evolution sampling sees it (eq. 4-7)."""
        return EvolvableItem(id=self.id, uncertainty=self.uncertainty, n_fusions=self.n_fusions,
                             n_objectives=self.n_obj, root_domain=self.root_domain)

    # ----------------------------------------------------------- Arrow rows
    def to_row(self) -> dict[str, Any]:
        """The item as an ``ITEM_SCHEMA`` row (the embedding as a list of float32 values)."""
        row = {name: getattr(self, name) for name in ITEM_COLUMNS}
        row["embedding"] = [] if self.embedding is None else np.asarray(self.embedding, dtype=np.float32).tolist()
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "TaCIEItem":
        """An item from an ``ITEM_SCHEMA`` row; a missing column raises ``KeyError``."""
        values = {name: row[name] for name in ITEM_COLUMNS}
        emb = values["embedding"]
        values["embedding"] = np.asarray(emb, dtype=np.float32) if emb else None
        return cls(**values)


ITEM_SCHEMA = arrow_schema(TaCIEItem)
ITEM_COLUMNS = _names(TaCIEItem)
_FIELDS: dict[str, Field] = {f.name: f for f in fields(TaCIEItem)}


def item_id(*parts: object) -> str:
    """A content id: the first 16 hex digits of the SHA-256 of the parts."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def items_table(items: list[TaCIEItem]) -> pa.Table:
    return pa.Table.from_pylist([it.to_row() for it in items], schema=ITEM_SCHEMA)


def items_from_table(table: pa.Table) -> list[TaCIEItem]:
    return [TaCIEItem.from_row(row) for row in table.to_pylist()]


def is_item_field(name: str) -> bool:
    return name in _FIELDS


__all__ = ["TaCIEItem", "ITEM_SCHEMA", "ITEM_COLUMNS", "item_id", "items_table", "items_from_table", "column",
           "arrow_schema", "is_item_field"]
