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


def test_request_rows_keep_their_columns_and_cache_keys():
    """The request is built once; its row columns and cache key are what they always were (old caches still hit)."""
    import hashlib
    import json

    from ray_pipeline.teachers.base import ChatRequest, Sampling
    from ray_pipeline.teachers.rows import request_from_row, request_row, sampling_at

    tpl = load_template("if_response@v1")
    row = RequestBuilder(tpl, SamplingConfig(max_tokens=32, stop=["\n\n"]), "m", {}).request(7, instruction="Sort a list.")
    messages = tpl.render(instruction="Sort a list.")
    assert row["messages"] == json.dumps(messages, ensure_ascii=False)
    assert row["sampling"] == '{"max_tokens": 32, "seed": 7, "stop": ["\\n\\n"], "temperature": 0.7, "top_p": 1.0}'
    content = {"model": "m", "messages": [[m["role"], m["content"]] for m in messages],
               "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 32, "seed": 7, "stop": ["\n\n"]}}
    assert row["cache_key"] == hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert row["cached"] == ""
    # what the stage actor decodes is the request the key was computed from
    assert request_from_row(row["messages"], row["sampling"]).cache_key("m") == row["cache_key"]
    plain = ChatRequest.completion("def f():\n", sampling_at(SamplingConfig(), 3, stop=("\ndef",)))
    got = request_row(plain, "m", {})
    assert got["messages"] == '"def f():\\n"' and request_from_row(got["messages"], got["sampling"]) == plain
    assert plain.sampling == Sampling(temperature=0.7, top_p=1.0, max_tokens=1024, seed=3, stop=("\ndef",))


def test_an_answer_names_and_reads_the_nine_result_columns():
    from ray_pipeline.teachers.rows import RESULT_FIELDS, Answer, result_columns

    result = ChatResult(text="hi", finish_reason="stop", prompt_tokens=5, completion_tokens=2, latency_s=0.5, attempts=3)
    columns = Answer.of(result, "node-1").columns("p")
    assert list(columns) == [f"p_{name}" for name in RESULT_FIELDS] and len(RESULT_FIELDS) == 9
    assert columns == {"p_text": "hi", "p_error": "", "p_finish_reason": "stop", "p_prompt_tokens": 5,
                       "p_completion_tokens": 2, "p_latency_s": 0.5, "p_attempts": 3, "p_cached": False,
                       "p_node": "node-1"}
    assert Answer.read({"x": 1, **columns}, "p") == Answer.of(result, "node-1")
    assert Answer.read({}, "p") == Answer() and not Answer(error="api_error: x").ok
    cached = ChatResult(text="c", attempts=2, cached=True)
    assert result_columns([cached], "")["attempts"] == [0]  # a cached answer cost no attempt here


def test_backends_are_looked_up_by_config_kind(tmp_path):
    from ray_pipeline.core.config import EmbeddedTeacherConfig, OpenAITeacherConfig, VLLMTeacherConfig
    from ray_pipeline.core.errors import ConfigError
    from ray_pipeline.teachers.factory import backend_for, build_teacher, configured_model_name, stage_resources

    vllm = VLLMTeacherConfig(model="/models/qwen/", num_gpus=1, tensor_parallel_size=2, num_cpus=4)
    http = OpenAITeacherConfig(model="gpt-4o-mini", api_key="sk-test", concurrency=8)
    assert configured_model_name(vllm) == "qwen" and configured_model_name(http) == "gpt-4o-mini"
    assert configured_model_name(EmbeddedTeacherConfig()) == "gemma3-270m"
    assert stage_resources(vllm, 0.25) == {"num_cpus": 4, "num_gpus": 2} and stage_resources(http, 0.25) == {"num_cpus": 0.25}
    assert backend_for(vllm).batch_size() == 64 and backend_for(http).batch_size() == 8
    teacher = build_teacher(http)
    try:
        assert teacher.model == "gpt-4o-mini"
    finally:
        teacher.close()
    with pytest.raises(ConfigError, match="cannot run inside a stage"):
        build_teacher(EmbeddedTeacherConfig())
    with pytest.raises(ConfigError, match="unknown teacher config"):
        backend_for(object())


def test_a_lazy_teacher_starts_at_the_first_miss_and_its_preflight_comes_first(tmp_path):
    from ray_pipeline.core.config import OpenAITeacherConfig
    from ray_pipeline.core.errors import TeacherError

    down = OpenAITeacherConfig(model="m", base_url="http://127.0.0.1:9/v1", api_key="sk-test")  # nothing listens
    keys = [r["cache_key"] for r in _rows(_builder({}))]
    cache = {k: ChatResult(text="a", prompt_tokens=4, completion_tokens=1, attempts=2) for k in keys}
    started = []
    with TeacherCalls.lazy(down, RayConfig(), tmp_path / "cache", tmp_path, on_start=lambda: started.append(1)) as calls:
        answered = calls.run(_rows(_builder(cache)), "response")
        assert not calls.started and not started and [r["response_attempts"] for r in answered] == [0, 0, 0]
        assert calls.tally.tokens() == {"prompt": 12, "completion": 3}
        assert calls.tally.this_run() == {"prompt": 0, "completion": 0, "calls": 0, "retries": 0, "cache_hits": 3}
        with pytest.raises(TeacherError, match="unreachable"):
            calls.run(_rows(_builder({})), "response")
        assert not started  # the preflight failed: nothing was started or written
