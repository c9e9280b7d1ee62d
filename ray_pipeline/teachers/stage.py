"""The one stage that talks to a teacher.

Rows in: ``messages`` (JSON of a message list, or of a string: a plain
completion prompt) and ``sampling`` (JSON strings), ``cache_key`` and
``cached`` (the JSON of a cached result, or ""). Rows out: the same rows plus
``<prefix>_text``, ``_error``, ``_finish_reason``, ``_prompt_tokens``,
``_completion_tokens``, ``_latency_s``, ``_attempts``, ``_cached`` and ``_node``.

Cached rows are answered from the cache without a call; every completed call is
appended to the run's call cache as soon as it finishes. The stage is a plain
callable class over pandas batches: Ray Data runs it as an actor pool
(``map_batches``), one teacher per actor, and a test can call it directly.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pandas as pd

from ray_pipeline.teachers.cache import CacheWriter
from ray_pipeline.teachers.base import ChatRequest, ChatResult, Sampling
from ray_pipeline.teachers.factory import StageTeacherConfig, build_teacher

RESULT_FIELDS = (
    "text",
    "error",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "attempts",
    "cached",
    "node",
)


def request_from_row(messages_json: str, sampling_json: str) -> ChatRequest:
    """The request a row describes: ``messages`` is the JSON of a message list, or of a string for a plain completion."""
    sampling = json.loads(sampling_json)
    sampling["stop"] = tuple(sampling.get("stop") or ())
    messages = json.loads(messages_json)
    if isinstance(messages, str):
        return ChatRequest.completion(messages, Sampling(**sampling))
    return ChatRequest.make(messages, Sampling(**sampling))


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
        self.teacher = build_teacher(teacher_cfg)
        self.cache = CacheWriter(cache_dir)
        self.prefix = prefix
        self.node = node_id()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        results: list[ChatResult | None] = [None] * len(batch)
        todo: list[int] = []
        for i, cached in enumerate(batch["cached"].tolist()):
            if cached:
                result = ChatResult.from_json(json.loads(cached))
                result.cached = True
                results[i] = result
            else:
                todo.append(i)
        if todo:
            keys = batch["cache_key"].tolist()
            messages = batch["messages"].tolist()
            sampling = batch["sampling"].tolist()
            requests = [request_from_row(messages[i], sampling[i]) for i in todo]

            def persist(j: int, result: ChatResult) -> None:
                self.cache.put(keys[todo[j]], result)

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


def result_columns(results: list[ChatResult | None], node: str) -> dict[str, list[Any]]:
    """The ``RESULT_FIELDS`` columns (without the prefix) of a batch of results."""
    cols: dict[str, list[Any]] = {name: [] for name in RESULT_FIELDS}
    for r in results:
        assert r is not None
        cols["text"].append(r.text or "")
        cols["error"].append(r.error or "")
        cols["finish_reason"].append(r.finish_reason or "")
        cols["prompt_tokens"].append(int(r.prompt_tokens))
        cols["completion_tokens"].append(int(r.completion_tokens))
        cols["latency_s"].append(float(r.latency_s))
        cols["attempts"].append(0 if r.cached else int(r.attempts))
        cols["cached"].append(bool(r.cached))
        cols["node"].append(node)
    return cols
