"""TeacherCalls: rows the cache answers never reach a stage, and a lazily started teacher starts only on a miss."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from ray_pipeline.core.config import RayConfig, SamplingConfig
from ray_pipeline.teachers.calls import RequestBuilder, TeacherCalls
from ray_pipeline.prompts import load_template
from ray_pipeline.teachers.base import ChatResult


class _Started(Exception):
    pass


def _builder(cache: dict) -> RequestBuilder:
    return RequestBuilder(load_template("if_response@v1"), SamplingConfig(max_tokens=32), "m", cache)


def _rows(builder: RequestBuilder) -> list[dict]:
    return [{"i": i, **builder.request(i, instruction=f"Write function number {i}.")} for i in range(3)]


def test_a_fully_cached_batch_starts_no_teacher_and_a_miss_starts_it(tmp_path):
    starts = []

    @contextmanager
    def start():
        starts.append(1)
        raise _Started  # stands for "the server is starting": nothing may get this far on a cached batch
        yield  # pragma: no cover

    keys = [r["cache_key"] for r in _rows(_builder({}))]
    cache = {k: ChatResult(text=f"answer {n}", finish_reason="stop", prompt_tokens=10, completion_tokens=3)
             for n, k in enumerate(keys)}
    with TeacherCalls(None, RayConfig(), tmp_path, start=start) as calls:
        answered = calls.run(_rows(_builder(cache)), "response", order_key="i")
        assert not starts and not calls.started
        assert [r["response_text"] for r in answered] == ["answer 0", "answer 1", "answer 2"]
        assert calls.tally.cache_hits == 3 and calls.tally.calls == 0
        assert calls.run([], "response") == [] and not starts
        partly = _rows(_builder({keys[0]: cache[keys[0]]}))
        with pytest.raises(_Started):
            calls.run(partly, "response")
        assert starts == [1]


def test_teacher_calls_need_a_teacher(tmp_path):
    with pytest.raises(ValueError, match="stage config or a way to start"):
        TeacherCalls(None, RayConfig(), tmp_path)
