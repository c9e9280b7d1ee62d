"""An OpenAI-compatible HTTP server that injects faults, for tests and benchmarks.

It serves ``POST /v1/chat/completions`` and ``POST /v1/completions`` (non-streaming;
a completion's prompt is answered as if it were one user message) and ``GET /v1/models``
on 127.0.0.1 from a background thread::

    with FaultInjectingOpenAIServer(latency_s=0.1, faults=fail_first("500", 2)) as srv:
        teacher = OpenAICompatTeacher.for_endpoint(srv.base_url, "m")
        ...
        assert srv.total_calls == ...

A fault plan is a callable ``(request_json, attempt_no) -> fault | None``, where
``attempt_no`` counts earlier calls with the same body (0 for the first).
Faults: ``"429"`` (with ``Retry-After``), ``"500"``, ``"503"``, ``"timeout"``
(hangs for ``hang_s``), ``"truncated"`` (200 with half a JSON body),
``"empty"`` (content ``""``), ``"invalid"`` (content ``"INVALID PROMPT"``);
``None`` answers normally, with ``responder(messages)``.

As a script it prints its base URL and serves until interrupted::

    python tests/fault_server.py --port 0 --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from ray_pipeline.teachers.openai_compat import BackgroundLoop

FaultPlan = Callable[[dict[str, Any], int], "str | None"]
Responder = Callable[[list[dict[str, Any]]], str]

MODEL_ID = "fault-model"


# ------------------------------------------------------------ fault plans
def always(kind: str | None) -> FaultPlan:
    """Every call gets ``kind``."""
    return lambda body, attempt: kind


def fail_first(kind: str, n: int = 1) -> FaultPlan:
    """The first ``n`` calls with a given body get ``kind``; later ones are answered."""
    return lambda body, attempt: kind if attempt < n else None


def by_marker(plans: Mapping[str, FaultPlan]) -> FaultPlan:
    """Use the plan of the first marker found in the last user message; no marker, no fault."""

    def plan(body: dict[str, Any], attempt: int) -> str | None:
        text = last_user_text(body)
        for marker, sub_plan in plans.items():
            if marker in text:
                return sub_plan(body, attempt)
        return None

    return plan


def invalid_share(rate: float, marker: str = "#Given Prompt 1#") -> FaultPlan:
    """INVALID PROMPT for a share ``rate`` of the bodies whose last user message holds ``marker`` (IF's fusion
    prompt), chosen by a hash of that message: the same bodies every time."""

    def plan(body: dict[str, Any], attempt: int) -> str | None:
        text = last_user_text(body)
        if marker not in text:
            return None
        share = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") / 2**32
        return "invalid" if share < rate else None

    return plan


def cycle(kinds: Sequence[str | None]) -> FaultPlan:
    """The i-th call the server receives (of any body) gets ``kinds[i % len(kinds)]``."""
    counter = itertools.count()
    return lambda body, attempt: kinds[next(counter) % len(kinds)]


# -------------------------------------------------------------- answers
_LANGUAGES = ("Python", "Rust", "Go", "TypeScript", "Java", "C++")
_TASKS = (
    "reverses the order of words in a sentence",
    "merges two sorted lists into one sorted list",
    "counts how often each character occurs in a string",
    "finds the longest common prefix of a list of strings",
    "checks whether a number is prime",
    "parses an ISO 8601 date and returns the weekday",
    "removes duplicate entries while keeping their order",
    "computes the running median of a stream of integers",
)


def default_responder(messages: list[dict[str, Any]]) -> str:
    """A plausible instruction, the same for the same messages."""
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    n = int(digest[:8], 16)
    language = _LANGUAGES[n % len(_LANGUAGES)]
    task = _TASKS[n // len(_LANGUAGES) % len(_TASKS)]
    return f"Write a {language} function that {task} (variant {digest[:4]})."


def body_hash(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def last_user_text(body: dict[str, Any]) -> str:
    users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def _approx_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    prompt = sum(_approx_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
    completion = _approx_tokens(text)
    if "prompt" in body:  # a plain text completion
        prompt = _approx_tokens(str(body["prompt"]))
        return {
            "id": f"cmpl-{body_hash(body)[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL_ID),
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
    return {
        "id": f"chatcmpl-{body_hash(body)[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL_ID),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "fault_injection", "code": status}}
    return web.json_response(body, status=status, headers=headers)


# --------------------------------------------------------------- server
class FaultInjectingOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 that injects faults by plan; see the module docstring."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        faults: FaultPlan | None = None,
        responder: Responder = default_responder,
        retry_after_s: float = 1,
        hang_s: float = 30.0,
        api_key: str | None = None,
        serve_models: bool = True,
        port: int = 0,
    ):
        self.latency_s = latency_s
        self.faults = faults
        self.responder = responder
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.api_key = api_key  # when set, requests must carry it as a Bearer token
        self.serve_models = serve_models
        self.port = port
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._per_hash: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self._loop: BackgroundLoop | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle
    def start(self) -> "FaultInjectingOpenAIServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._loop = BackgroundLoop(f"fault-server:{self.port}")
        self._runner = self._loop.run(self._serve(sock))
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            self._loop.run(self._runner.cleanup())
            self._loop.stop()
        self._loop = self._runner = None

    def __enter__(self) -> "FaultInjectingOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- observations (thread-safe)
    @property
    def calls(self) -> list[dict[str, Any]]:
        """One dict per chat call: hash, model, attempt, fault, status (None if the client left), time."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    @property
    def total_calls(self) -> int:
        with self._lock:
            return sum(self._per_hash.values())

    @property
    def calls_per_hash(self) -> dict[str, int]:
        with self._lock:
            return dict(self._per_hash)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    # -- HTTP
    async def _serve(self, sock: socket.socket) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        if self.serve_models:
            app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        return runner

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.")
        return None

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fault-server"}
        return web.json_response({"object": "list", "data": [model]})

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        digest = body_hash(body)
        entry = {"hash": digest, "model": body.get("model"), "fault": None, "status": None, "time": time.time(),
                 "body": body}
        with self._lock:
            entry["attempt"] = self._per_hash[digest]
            self._per_hash[digest] += 1
            self._log.append(entry)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            response = self._unauthorized(request)
            if response is None:
                fault = self.faults(body, entry["attempt"]) if self.faults else None
                with self._lock:
                    entry["fault"] = fault
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                response = await self._answer(body, fault)
            with self._lock:
                entry["status"] = response.status
            return response
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(self, body: dict[str, Any], fault: str | None) -> web.Response:
        if fault == "429":
            return _error(429, "Rate limit reached.", {"Retry-After": f"{self.retry_after_s:g}"})
        if fault in ("500", "503"):
            return _error(int(fault), "Injected server error.")
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)  # the client should have given up by now
        if fault == "empty":
            text = ""
        elif fault == "invalid":
            text = "INVALID PROMPT"
        elif fault in (None, "timeout", "truncated"):
            messages = body["messages"] if "messages" in body else [{"role": "user", "content": str(body.get("prompt", ""))}]
            text = self.responder(messages)
        else:
            raise ValueError(f"unknown fault {fault!r}")
        completion = _completion(body, text)
        if fault == "truncated":
            raw = json.dumps(completion).encode("utf-8")
            return web.Response(body=raw[: len(raw) // 2], content_type="application/json")
        return web.json_response(completion)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat call")
    parser.add_argument("--invalid-rate", type=float, default=0.0,
                        help="answer INVALID PROMPT to this share of fusion prompts (by a hash of the prompt)")
    args = parser.parse_args()
    faults = invalid_share(args.invalid_rate) if args.invalid_rate else None
    with FaultInjectingOpenAIServer(latency_s=args.latency, port=args.port, faults=faults) as server:
        print(server.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
