"""OpenAICompatTeacher against a real fault-injecting HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from ray_pipeline.core.config import OpenAITeacherConfig, PriceConfig
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.teachers.base import ChatRequest, ChatResult, Sampling
from ray_pipeline.teachers.openai_compat import OpenAICompatTeacher, retry_after_s
from ray_pipeline.teachers.pricing import DEFAULT_PRICES, cost_usd, price_for
from ray_pipeline.teachers.ratelimit import AsyncTokenBucket
from tests import fault_server
from tests.fault_server import (
    FaultInjectingOpenAIServer,
    always,
    by_marker,
    default_responder,
    fail_first,
)

KEY = "sk-test-NEVER-LEAK-4f1e9b7c"  # distinctive, so a leak is easy to spot
MODEL = "fault-model"

ServerFactory = Callable[..., FaultInjectingOpenAIServer]
TeacherFactory = Callable[..., OpenAICompatTeacher]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    servers: list[FaultInjectingOpenAIServer] = []

    def make(**options: Any) -> FaultInjectingOpenAIServer:
        server = FaultInjectingOpenAIServer(**{"hang_s": 5.0, **options}).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_teacher() -> Iterator[TeacherFactory]:
    teachers: list[OpenAICompatTeacher] = []

    def make(base_url: str, **options: Any) -> OpenAICompatTeacher:
        options = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, **options}
        teacher = OpenAICompatTeacher.for_endpoint(base_url, options.pop("model", MODEL), api_key=KEY, **options)
        teachers.append(teacher)
        return teacher

    yield make
    for teacher in teachers:
        teacher.close()


def request(content: str, **sampling: Any) -> ChatRequest:
    messages = [{"role": "system", "content": "You are a teacher."}, {"role": "user", "content": content}]
    return ChatRequest.make(messages, Sampling(**sampling))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_no_key(results: list[ChatResult]) -> None:
    for result in results:
        assert KEY not in json.dumps(result.to_json())


# ------------------------------------------------------------ normal calls
def test_batch_keeps_order_counts_usage_and_reports_each_result_once(make_server, make_teacher):
    server = make_server(latency_s=0.05)
    teacher = make_teacher(server.base_url, concurrency=8)
    requests = [request(f"instruction {i}") for i in range(20)]
    seen: list[int] = []

    results = teacher.generate(requests, on_result=lambda i, r: seen.append(i))

    assert sorted(seen) == list(range(20))
    assert [r.text for r in results] == [default_responder(r.message_dicts()) for r in requests]
    assert all(r.ok and r.attempts == 1 and r.finish_reason == "stop" for r in results)
    assert server.total_calls == 20 and set(server.calls_per_hash.values()) == {1}
    usage = teacher.usage
    assert usage["calls"] == 20 and usage["failures"] == 0 and usage["retries"] == 0
    assert usage["prompt_tokens"] == sum(r.prompt_tokens for r in results) > 0
    assert usage["completion_tokens"] == sum(r.completion_tokens for r in results) > 0


def test_sampling_parameters_are_passed_through(make_server, make_teacher):
    bodies: list[dict[str, Any]] = []
    server = make_server(faults=lambda body, attempt: bodies.append(body))
    teacher = make_teacher(server.base_url)

    teacher.generate([request("x", temperature=0.3, top_p=0.5, max_tokens=77, seed=11, stop=("END",))])

    (body,) = bodies
    assert body["model"] == MODEL
    assert body["messages"][1] == {"role": "user", "content": "x"}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.5, 77)
    assert (body["seed"], body["stop"]) == (11, ["END"])


def test_completion_requests_go_to_the_completions_route_with_the_raw_prompt(make_server, make_teacher):
    server = make_server(responder=lambda messages: "    return a + b\n")
    teacher = make_teacher(server.base_url)
    prompt = "def add(a, b):\n"
    requests = [
        ChatRequest.completion(prompt, Sampling(temperature=0.0, max_tokens=32, seed=3, stop=("\ndef ",))),
        ChatRequest.make([{"role": "user", "content": prompt}], Sampling(temperature=0.0, max_tokens=32)),
    ]
    plain, chat = teacher.generate(requests)
    assert plain.ok and plain.text == "    return a + b\n"
    assert chat.ok and chat.text == "    return a + b\n"
    bodies = sorted(server.calls, key=lambda c: "prompt" in c["body"])
    assert "messages" in bodies[0]["body"] and "prompt" not in bodies[0]["body"]
    sent = bodies[1]["body"]
    assert sent["prompt"] == prompt and "messages" not in sent
    assert sent["stop"] == ["\ndef "] and sent["seed"] == 3
    many = ChatRequest.completion(prompt, Sampling(max_tokens=8, stop=tuple(f"\n#{i}" for i in range(6))))
    assert teacher.generate([many])[0].ok  # an API takes at most 4 stop strings: the first 4 are sent
    assert server.calls[-1]["body"]["stop"] == ["\n#0", "\n#1", "\n#2", "\n#3"]
    # the two kinds of request never share a cache entry
    assert requests[0].cache_key("m") != requests[1].cache_key("m")


def test_a_rejected_request_names_the_servers_reason_but_an_auth_error_does_not():
    import httpx
    import openai

    from ray_pipeline.teachers.openai_compat import _classify

    request = httpx.Request("POST", "http://x/v1/completions")
    bad = openai.BadRequestError("Error code: 400", response=httpx.Response(400, request=request),
                                 body={"message": "List should have at most 4 items", "type": "Bad Request"})
    assert _classify(bad).reason == "HTTP 400 (List should have at most 4 items)" and not _classify(bad).retryable
    denied = openai.AuthenticationError("Incorrect API key sk-123", response=httpx.Response(401, request=request),
                                        body=None)
    assert _classify(denied).reason == "HTTP 401"


def test_a_completion_body_without_text_is_malformed():
    from ray_pipeline.teachers.openai_compat import MalformedResponse, _parse

    with pytest.raises(MalformedResponse, match="not a completion"):
        _parse({"choices": [{"message": {"content": "x"}}]}, completion=True)
    assert _parse({"choices": [{"text": "x"}]}, completion=True).text == "x"
    assert _parse({"choices": [{"message": {"content": "y"}}]}).text == "y"


def test_empty_content_is_an_ok_empty_text_and_invalid_is_plain_text(make_server, make_teacher):
    server = make_server(faults=by_marker({"[empty]": always("empty"), "[invalid]": always("invalid")}))
    teacher = make_teacher(server.base_url)

    empty, invalid = teacher.generate([request("[empty]"), request("[invalid]")])

    assert empty.ok and empty.text == "" and empty.finish_reason == "stop"
    assert invalid.ok and invalid.text == "INVALID PROMPT"
    assert server.total_calls == 2


def test_generate_works_inside_a_running_event_loop_and_reuses_its_loop(make_server, make_teacher):
    server = make_server()
    teacher = make_teacher(server.base_url)
    teacher.generate([request("warm up")])
    threads = threading.active_count()

    async def caller() -> list[ChatResult]:
        return teacher.generate([request("from async code")])

    (result,) = asyncio.run(caller())

    assert result.ok
    assert threading.active_count() == threads


def test_a_raising_callback_propagates_and_the_teacher_stays_usable(make_server, make_teacher):
    server = make_server(latency_s=0.02)
    teacher = make_teacher(server.base_url)

    def explode(i: int, result: ChatResult) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        teacher.generate([request(f"r{i}") for i in range(5)], on_result=explode)
    assert teacher.generate([request("after")])[0].ok


# -------------------------------------------------------------- retries
@pytest.mark.parametrize("kind", ["500", "503", "truncated"])
def test_transient_failures_are_retried_until_success(make_server, make_teacher, kind):
    server = make_server(faults=fail_first(kind, 2))
    teacher = make_teacher(server.base_url)

    (result,) = teacher.generate([request("flaky")])

    assert result.ok and result.attempts == 3 and result.text
    assert server.total_calls == 3
    assert teacher.usage["retries"] == 2


def test_429_waits_for_retry_after(make_server, make_teacher):
    server = make_server(faults=fail_first("429", 1), retry_after_s=1)
    teacher = make_teacher(server.base_url, backoff_max_s=10.0)

    (result,) = teacher.generate([request("busy")])

    assert result.ok and result.attempts == 2
    first, second = (call["time"] for call in server.calls)
    assert second - first >= 0.9


def test_retry_after_is_capped_by_backoff_max(make_server, make_teacher):
    server = make_server(faults=fail_first("429", 1), retry_after_s=30)
    teacher = make_teacher(server.base_url, backoff_max_s=0.2)

    start = time.monotonic()
    (result,) = teacher.generate([request("busy")])

    assert result.ok and result.attempts == 2
    assert time.monotonic() - start < 2.0


def test_timeouts_are_retried_and_latency_is_that_of_the_successful_attempt(make_server, make_teacher):
    server = make_server(faults=fail_first("timeout", 1))
    teacher = make_teacher(server.base_url, timeout_s=0.5)

    start = time.monotonic()
    (result,) = teacher.generate([request("slow")])

    assert result.ok and result.attempts == 2
    assert result.latency_s < 0.5 <= time.monotonic() - start
    assert server.total_calls == 2


def test_permanent_failure_becomes_an_error_result_after_all_attempts(make_server, make_teacher):
    server = make_server(faults=always("500"))
    teacher = make_teacher(server.base_url, max_retries=6)

    (result,) = teacher.generate([request("doomed")])

    assert result.error == "api_error: HTTP 500 after 7 attempts"
    assert result.text is None and result.attempts == 7
    assert server.total_calls == 7
    assert teacher.usage["failures"] == 1 and teacher.usage["retries"] == 6
    assert_no_key([result])


def test_rejected_key_fails_at_once_without_leaking_it(make_server, make_teacher, caplog):
    caplog.set_level(logging.DEBUG)
    server = make_server(api_key="the-right-key")
    teacher = make_teacher(server.base_url)

    (result,) = teacher.generate([request("hello")])

    assert result.error == "api_error: HTTP 401 after 1 attempt"
    assert server.total_calls == 1
    with pytest.raises(TeacherError) as info:
        teacher.check()
    assert str(info.value) == f"teacher endpoint {server.base_url} rejected the API key (HTTP 401)"
    assert_no_key([result])
    assert KEY not in str(info.value) and KEY not in caplog.text


def test_unreachable_endpoint_is_an_error_result(make_teacher):
    teacher = make_teacher(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)

    (result,) = teacher.generate([request("anyone?")])

    assert result.error == "api_error: connection refused after 2 attempts"
    assert_no_key([result])


# --------------------------------------------------------- limits
def test_concurrency_bound_is_respected(make_server, make_teacher):
    server = make_server(latency_s=0.1)
    teacher = make_teacher(server.base_url, concurrency=4)

    results = teacher.generate([request(f"c{i}") for i in range(24)])

    assert all(r.ok for r in results)
    assert server.max_in_flight == 4


def test_threads_calling_generate_at_once_share_the_concurrency_slots(make_server, make_teacher):
    server = make_server(latency_s=0.05)
    teacher = make_teacher(server.base_url, concurrency=4)
    outcomes: list[list[ChatResult]] = []

    def work(t: int) -> None:
        outcomes.append(teacher.generate([request(f"t{t}-{i}") for i in range(10)]))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 3 and all(r.ok for results in outcomes for r in results)
    assert server.max_in_flight == 4


def test_requests_per_minute_is_respected(make_server, make_teacher):
    server = make_server()
    teacher = make_teacher(server.base_url, concurrency=32, requests_per_minute=600)  # 10/s, burst 10

    results = teacher.generate([request(f"r{i}") for i in range(25)])

    assert all(r.ok for r in results)
    times = sorted(call["time"] for call in server.calls)
    assert times[-1] - times[0] >= 1.35  # 15 calls beyond the burst, at 10/s
    assert sum(t - times[0] < 0.5 for t in times) <= 10 + 5 + 1


def test_token_bucket_paces_and_lets_oversized_requests_through_in_debt():
    async def scenario() -> tuple[float, float]:
        bucket = AsyncTokenBucket(rate_per_minute=6000, capacity=5)  # 100 units/s
        start = time.monotonic()
        await bucket.acquire(20)  # more than the bucket holds: goes through, 15 in debt
        oversized = time.monotonic() - start
        await bucket.acquire(1)  # waits out the debt: (15 + 1) / 100 s
        return oversized, time.monotonic() - start

    oversized, total = asyncio.run(scenario())
    assert oversized < 0.05
    assert 0.14 <= total < 0.5


# --------------------------------------------------------- preflight
def test_check_passes_on_a_live_server_even_without_a_models_route(make_server, make_teacher):
    make_teacher(make_server().base_url).check()
    make_teacher(make_server(serve_models=False).base_url).check()


def test_check_on_an_unreachable_port_is_a_one_line_error(make_teacher):
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TeacherError) as info:
        make_teacher(base_url).check()
    assert str(info.value) == f"teacher endpoint {base_url} unreachable: connection refused"


def test_missing_key_for_the_openai_api_is_a_teacher_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(TeacherError, match=r"no API key .* \$OPENAI_API_KEY"):
        OpenAICompatTeacher(OpenAITeacherConfig(model="gpt-4o"))


# ------------------------------------------------------ retry-after, prices
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_parsing(headers, expected):
    assert retry_after_s(headers) == expected


def test_retry_after_http_date_in_the_future():
    assert 8 <= retry_after_s({"retry-after": formatdate(time.time() + 10, usegmt=True)}) <= 10


def test_price_lookup_and_cost():
    assert price_for("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert price_for("gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]
    assert price_for("gpt-4.1-mini") == DEFAULT_PRICES["gpt-4.1-mini"]
    assert cost_usd(price_for("google/gemma-3-270m"), 10**6, 10**6) == 0.0
    override = PriceConfig(prompt_per_million=1.0, completion_per_million=2.0)
    assert price_for("gpt-4o", override) is override
    assert cost_usd(DEFAULT_PRICES["gpt-4o"], 1_000_000, 500_000) == pytest.approx(2.5 + 5.0)


def test_usage_reports_cost_at_the_model_price(make_server, make_teacher):
    teacher = make_teacher(make_server().base_url, model="gpt-4o-mini")
    teacher.generate([request(f"p{i}") for i in range(3)])
    usage = teacher.usage
    expected = cost_usd(DEFAULT_PRICES["gpt-4o-mini"], int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
    assert usage["cost_usd"] == pytest.approx(expected) and expected > 0


def test_fault_server_runs_as_a_script(make_teacher):
    proc = subprocess.Popen(
        [sys.executable, fault_server.__file__, "--port", "0", "--latency", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        (result,) = make_teacher(base_url).generate([request("over a process boundary")])
        assert result.ok and result.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
