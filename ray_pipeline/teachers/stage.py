"""The one stage that talks to a teacher.

Rows in and out are in the format of ``teachers.rows``: the request columns
in, the same rows plus the ``<prefix>_*`` result columns out. Cached rows are
answered from the cache without a call; every completed call is appended to
the run's call cache as soon as it finishes. The stage is a plain callable
class over pandas batches: Ray Data runs it as an actor pool (``map_batches``),
one teacher per actor, and a test can call it directly.
"""

from __future__ import annotations

import socket

import pandas as pd

from ray_pipeline.teachers.base import ChatResult
from ray_pipeline.teachers.cache import CacheWriter
from ray_pipeline.teachers.factory import StageTeacherConfig, backend_for
from ray_pipeline.teachers.rows import cached_result, request_from_row, result_columns


def node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside Ray
        pass
    return socket.gethostname()


class TeacherStage:
    """``map_batches`` UDF: answer every row's request through one teacher."""

    def __init__(self, teacher_cfg: StageTeacherConfig, cache_dir: str, prefix: str):
        self.teacher = backend_for(teacher_cfg).teacher()
        self.cache = CacheWriter(cache_dir)
        self.prefix = prefix
        self.node = node_id()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch[["messages", "sampling", "cache_key", "cached"]].to_dict("records")
        results: list[ChatResult | None] = [cached_result(row) for row in rows]
        todo = [i for i, result in enumerate(results) if result is None]
        if todo:
            requests = [request_from_row(rows[i]["messages"], rows[i]["sampling"]) for i in todo]

            def persist(j: int, result: ChatResult) -> None:
                self.cache.put(rows[todo[j]]["cache_key"], result)

            for j, result in enumerate(self.teacher.generate(requests, on_result=persist)):
                results[todo[j]] = result
        out = batch.copy()
        for name, values in result_columns(results, self.node).items():
            out[f"{self.prefix}_{name}"] = values
        return out

    def __del__(self) -> None:
        try:
            self.cache.close()
            self.teacher.close()
        except Exception:
            pass
