"""The one stage that talks to a teacher.

Rows in and out are in the format of ``teachers.rows``: the request columns
in, the same rows plus the ``<prefix>_*`` result columns out. Cached rows are
answered from the cache without a call; every completed call is appended to
the run's call cache as soon as it finishes. The stage is a plain class:
``teachers.pool`` runs it as Ray actors (one teacher per actor, several
chunks of rows at once on its threads), ``__call__`` takes a pandas batch
(``map_batches``), and a test can call it directly.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ray_pipeline.teachers.base import ChatResult
from ray_pipeline.teachers.cache import CacheWriter
from ray_pipeline.teachers.factory import StageTeacherConfig, backend_for
from ray_pipeline.teachers.rows import cached_result, request_from_row, result_columns

if TYPE_CHECKING:  # pandas only for map_batches: a pool actor starts without it (half a second)
    import pandas as pd

#: the request columns a row brings to the stage (``teachers.rows.request_row``)
REQUEST_COLUMNS = ("messages", "sampling", "cache_key", "cached")


def node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside Ray
        pass
    return socket.gethostname()


class TeacherStage:
    """Answer rows' requests through one teacher; safe to call from several threads at once."""

    def __init__(self, teacher_cfg: StageTeacherConfig, cache_dir: str, prefix: str = ""):
        self.teacher = backend_for(teacher_cfg).teacher()
        self.cache = CacheWriter(cache_dir)
        self.prefix = prefix
        self.node = node_id()

    def results(self, rows: Sequence[Mapping[str, Any]]) -> list[ChatResult]:
        """One result per row, in order: the cached ones from the row, the others from the teacher (then cached)."""
        results: list[ChatResult | None] = [cached_result(row) for row in rows]
        todo = [i for i, result in enumerate(results) if result is None]
        if todo:
            requests = [request_from_row(rows[i]["messages"], rows[i]["sampling"]) for i in todo]

            def persist(j: int, result: ChatResult) -> None:
                self.cache.put(rows[todo[j]]["cache_key"], result)

            for j, result in enumerate(self.teacher.generate(requests, on_result=persist)):
                results[todo[j]] = result
        return results  # type: ignore[return-value]

    def answer(self, rows: Sequence[Mapping[str, Any]], prefix: str) -> list[dict[str, Any]]:
        """Each row's ``<prefix>_*`` result columns, in order (a chunk from ``teachers.pool``: the request
        columns stay on the driver)."""
        columns = result_columns(self.results(rows), self.node)
        return [{f"{prefix}_{name}": values[i] for name, values in columns.items()} for i in range(len(rows))]

    def __call__(self, batch: "pd.DataFrame") -> "pd.DataFrame":
        rows = batch[list(REQUEST_COLUMNS)].to_dict("records")
        out = batch.copy()
        for name, values in result_columns(self.results(rows), self.node).items():
            out[f"{self.prefix}_{name}"] = values
        return out

    def ready(self) -> str:
        """The node this stage runs on, once it is built (the pool waits for every actor)."""
        return self.node

    def close(self) -> None:
        self.cache.close()
        self.teacher.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
