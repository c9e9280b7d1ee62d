"""Teacher for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM serve, TGI, ...).

Chat requests go to ``/chat/completions``; plain completion requests
(``ChatRequest.completion``, used to evaluate base models) to ``/completions``.

``generate()`` is synchronous for its callers (Ray actors, plain scripts, code
that already runs an event loop) and asynchronous inside: each teacher owns
one asyncio event loop, running in a daemon thread, and one ``AsyncOpenAI``
client on it, both created on first use and reused by every later call.
Several threads may call ``generate()`` at once; their requests share the
teacher's concurrency slots and rate limits.

Per call: at most ``concurrency`` requests are in flight, request and token
rate limits are respected, and retryable failures (429, 408, 409, 5xx,
timeouts, connection errors, malformed bodies) are retried with exponential
backoff and full jitter, or after the server's ``Retry-After``. The SDK's own
retries are disabled so that ours are the only ones. A call that still fails
comes back as a result whose ``error`` is one line, e.g.
``api_error: HTTP 500 after 7 attempts``. The API key never appears in
results, errors or logs.

:class:`OpenAIBackend` is the ``kind: openai`` backend (and the stage side of
``kind: embedded``): a preflight that asks the endpoint for its models, one
teacher per stage actor, batches of ``concurrency`` rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI

from ray_pipeline.core.config import OpenAITeacherConfig
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.teachers.base import Backend, ChatRequest, ChatResult, ResultCallback, Teacher
from ray_pipeline.teachers.pricing import cost_usd, price_for
from ray_pipeline.teachers.tokens import approx_tokens
from ray_pipeline.teachers.ratelimit import RateLimits

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_TIMEOUT_S = 5.0
_RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx
_RETRY_AFTER_STATUS = frozenset({429, 503})
_LOCAL_API_KEY = "EMPTY"  # local OpenAI-compatible servers accept any key


# ------------------------------------------------------------------ helpers
class MalformedResponse(ValueError):
    """The server answered 200 with a body that is not a chat completion."""


@dataclass(frozen=True)
class _Failure:
    reason: str  # short and key-free: "HTTP 500", "timeout", "connection refused", ...
    retryable: bool
    retry_after_s: float | None = None


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _connection_failure(err: openai.APIConnectionError) -> str:
    """A short reason for a failed connection, preferring the OS-level cause.

    The aiohttp transport reports a refused connection as a timeout, so the
    exception chain is searched before the exception type is trusted.
    """
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not resolved"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
        cause = cause.__cause__ or cause.__context__
    return "timeout" if isinstance(err, openai.APITimeoutError) else "connection failed"


def _server_message(err: "openai.APIStatusError") -> str:
    body = err.body if isinstance(err.body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else str(err.message)
    return " ".join(message.split())[:200]


def _classify(err: Exception) -> _Failure:
    if isinstance(err, openai.APIConnectionError):  # includes timeouts
        return _Failure(_connection_failure(err), retryable=True)
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        wait = retry_after_s(err.response.headers) if code in _RETRY_AFTER_STATUS else None
        reason = f"HTTP {code}"
        if code in (400, 404, 422):  # the request itself is wrong: the server's words say how (never for auth errors)
            reason += f" ({_server_message(err)})"
        return _Failure(reason, code in _RETRYABLE_STATUS or code >= 500, wait)
    if isinstance(err, (openai.APIResponseValidationError, ValueError)):  # e.g. truncated JSON
        return _Failure("malformed response", retryable=True)
    return _Failure(f"unexpected {type(err).__name__}", retryable=False)


def _parse(body: Any, completion: bool = False) -> ChatResult:
    """The result in a chat-completion (or completion) body; MalformedResponse if it has no usable choice."""
    try:
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        text = choice["text"] if completion else choice["message"].get("content")
        if completion and not isinstance(text, str):
            raise TypeError("text")
        return ChatResult(
            text=text or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (AttributeError, IndexError, KeyError, TypeError) as err:
        raise MalformedResponse(f"not a {'completion' if completion else 'chat completion'}: {type(err).__name__}") from None


#: OpenAI's API, and vLLM's server after it, accept at most this many stop strings
MAX_STOP_SEQUENCES = 4


def _request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    sampling = request.sampling
    body: dict[str, Any] = {"model": model}
    if request.is_completion:
        body["prompt"] = request.prompt
    else:
        body["messages"] = request.message_dicts()
    body.update({
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
    })
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.stop:
        # The first ones, in the caller's order of importance; a caller with more
        # (evalplus has 11) cuts the text at all of them itself.
        body["stop"] = list(sampling.stop)[:MAX_STOP_SEQUENCES]
    return body


def estimate_tokens(request: ChatRequest) -> int:
    """Tokens a call may cost before it is made: its prompt by ``teachers.estimate.approx_tokens``, plus max_tokens."""
    return approx_tokens(request.text_length(), len(request.messages)) + request.sampling.max_tokens


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


@dataclass
class TeacherUsage:
    """Running totals over every call a teacher made."""

    calls: int = 0  # requests finished, successful or not
    failures: int = 0  # requests that ended with an error
    retries: int = 0  # attempts beyond the first
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, result: ChatResult) -> None:
        self.calls += 1
        self.failures += not result.ok
        self.retries += result.attempts - 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens


# ------------------------------------------------------------ event loop
class BackgroundLoop:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it; interrupting the wait cancels it."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a teacher cannot wait on its own event loop (called from on_result?)")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass
class _Session:
    """Everything bound to the teacher's event loop."""

    loop: BackgroundLoop
    client: AsyncOpenAI
    slots: asyncio.Semaphore
    limits: RateLimits


# ----------------------------------------------------------------- teacher
class OpenAICompatTeacher(Teacher):
    """Chat completions from an OpenAI-compatible HTTP endpoint."""

    def __init__(self, config: OpenAITeacherConfig):
        self.config = config
        self.model = config.model
        self.price = price_for(config.model, config.price)
        api_key = config.resolved_api_key()
        if api_key is None and config.resolved_base_url() is None:
            raise TeacherError(
                f"no API key for the OpenAI API: set ${config.api_key_env} or teacher.api_key"
            )
        self._api_key = api_key or _LOCAL_API_KEY
        self._usage = TeacherUsage()
        self._session: _Session | None = None
        self._session_lock = threading.Lock()

    @classmethod
    def for_endpoint(
        cls, base_url: str, model: str, api_key: str | None = None, **options: Any
    ) -> "OpenAICompatTeacher":
        """A teacher for an explicit endpoint; ``options`` are other OpenAITeacherConfig fields."""
        return cls(OpenAITeacherConfig(model=model, base_url=base_url, api_key=api_key, **options))

    # -- public API
    def generate(
        self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None
    ) -> list[ChatResult]:
        """One result per request, in order; failed calls are results with ``error`` set.

        ``on_result(i, result)`` is called exactly once per request, as each
        finishes and before this returns, always from the teacher's event-loop
        thread (so calls never overlap; keep it quick). If it raises, the
        remaining calls are cancelled and the exception propagates.
        """
        if not requests:
            return []
        session = self._ensure_session()
        return session.loop.run(self._generate(session, list(requests), on_result))

    def check(self) -> None:
        """Raise TeacherError (one line) unless the endpoint answers and accepts the key."""
        session = self._ensure_session()
        session.loop.run(self._check(session.client))

    @property
    def usage(self) -> dict[str, float]:
        """Totals so far: calls, failures, retries, prompt/completion tokens and cost_usd."""
        totals: dict[str, float] = asdict(self._usage)
        totals["cost_usd"] = cost_usd(self.price, self._usage.prompt_tokens, self._usage.completion_tokens)
        return totals

    @property
    def base_url(self) -> str:
        return (self.config.resolved_base_url() or "https://api.openai.com/v1").rstrip("/")

    def close(self) -> None:
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.loop.run(session.client.close())
            session.loop.stop()

    # -- session
    def _ensure_session(self) -> _Session:
        with self._session_lock:
            if self._session is None:
                loop = BackgroundLoop(f"teacher:{self.model}")
                self._session = loop.run(self._open(loop))
            return self._session

    async def _open(self, loop: BackgroundLoop) -> _Session:
        client = AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key,
            max_retries=0,
            timeout=self.config.timeout_s,
            http_client=openai.DefaultAioHttpClient(),  # less CPU per call than the httpx transport
        )
        limits = RateLimits(self.config.requests_per_minute, self.config.tokens_per_minute)
        return _Session(loop, client, asyncio.Semaphore(self.config.concurrency), limits)

    # -- calls (all on the event loop)
    async def _generate(
        self, session: _Session, requests: list[ChatRequest], on_result: ResultCallback | None
    ) -> list[ChatResult]:
        results: dict[int, ChatResult] = {}

        async def one(i: int, request: ChatRequest) -> None:
            results[i] = await self._call(session, request)
            if on_result is not None:
                on_result(i, results[i])

        tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(requests)]
        try:
            await asyncio.gather(*tasks)
        finally:  # on error or cancellation, stop the calls still running
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return [results[i] for i in range(len(requests))]

    async def _call(self, session: _Session, request: ChatRequest) -> ChatResult:
        """One request with retries; never raises (except on cancellation)."""
        estimate = estimate_tokens(request)
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._attempt(session, request, estimate)
            except Exception as err:  # every failure becomes a result or a retry
                failure = _classify(err)
            else:
                result.attempts = attempt
                return self._record(result)
            if not failure.retryable or attempt > self.config.max_retries:
                log.debug("teacher call failed: %s after %s", failure.reason, _attempts(attempt))
                return self._record(
                    ChatResult(
                        text=None,
                        latency_s=time.monotonic() - start,
                        attempts=attempt,
                        error=f"api_error: {failure.reason} after {_attempts(attempt)}",
                    )
                )
            delay = self._backoff_s(attempt, failure.retry_after_s)
            log.debug("teacher call: %s, retry %d in %.2fs", failure.reason, attempt, delay)
            await asyncio.sleep(delay)

    async def _attempt(self, session: _Session, request: ChatRequest, estimate: int) -> ChatResult:
        async with session.slots:
            await session.limits.acquire(estimate)
            t0 = time.monotonic()
            # The SDK's generic POST: the same auth, errors and timeouts as
            # chat.completions.create, without its per-call parameter transform
            # and model construction (half the client CPU per call).
            path = "/completions" if request.is_completion else "/chat/completions"
            body = await session.client.post(path, body=_request_body(self.model, request), cast_to=object)
            result = _parse(body, request.is_completion)
            result.latency_s = time.monotonic() - t0
        if result.prompt_tokens or result.completion_tokens:
            session.limits.settle(estimate, result.prompt_tokens + result.completion_tokens)
        return result

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """The server's Retry-After if given, else exponential backoff with full jitter."""
        cap = self.config.backoff_max_s
        if retry_after is not None:
            return min(retry_after, cap)
        return random.uniform(0.0, min(cap, self.config.backoff_initial_s * 2 ** (attempt - 1)))

    def _record(self, result: ChatResult) -> ChatResult:
        self._usage.add(result)
        return result

    async def _check(self, client: AsyncOpenAI) -> None:
        where = f"teacher endpoint {self.base_url}"
        try:
            await client.models.list(timeout=CHECK_TIMEOUT_S)
        except openai.APIConnectionError as err:
            reason = _connection_failure(err)
            if reason == "timeout":
                reason = f"no answer within {CHECK_TIMEOUT_S:g} s"
            raise TeacherError(f"{where} unreachable: {reason}") from None
        except openai.APIStatusError as err:
            if err.status_code in (401, 403):
                raise TeacherError(f"{where} rejected the API key (HTTP {err.status_code})") from None
            if err.status_code >= 500:
                raise TeacherError(f"{where} is failing (HTTP {err.status_code} on GET /models)") from None
            # any other answer (404: no /models route, 429: busy) means the server is up
        except (openai.APIResponseValidationError, ValueError):
            pass  # it answered, just not with a model list


class OpenAIBackend(Backend):
    """``kind: openai``: any OpenAI-compatible endpoint; the embedded server's stages use it too."""

    kind = "openai"

    def preflight(self) -> None:
        teacher = self.teacher()
        try:
            teacher.check()
        finally:
            teacher.close()

    def teacher(self) -> OpenAICompatTeacher:
        return OpenAICompatTeacher(self.config)
