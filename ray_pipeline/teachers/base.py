"""The one interface every teacher implements.

A teacher turns a batch of :class:`ChatRequest` into a batch of
:class:`ChatResult`, in order. It never raises for a single failed call: a call
that fails after its retries comes back as a result with ``error`` set, so that
every row of a pipeline ends in a recorded outcome.

Backends (one short file each, each with a :class:`Backend` subclass that the
factory looks up by the config's ``kind``): ``openai_compat`` (any
OpenAI-compatible HTTP endpoint), ``vllm_offline`` (``vllm.LLM`` in the calling
process) and ``embedded`` (the bundled Gemma 3 270M behind ``vllm serve``, used
through ``openai_compat``).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

from ray_pipeline.core.errors import ConfigError

Message = dict[str, str]

#: chunks an HTTP teacher's stage actor works on at once (``Backend.chunk_size``)
CHUNKS_PER_ACTOR = 8


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class ChatRequest:
    """One call: a chat (``messages``), or a plain text completion of ``prompt``.

    A completion request (``prompt`` set, ``messages`` empty) continues the text
    as it is, with no chat template: what base models and benchmark protocols
    such as MultiPL-E's expect. Backends send it to ``/completions`` or
    ``LLM.generate`` instead of ``/chat/completions`` or ``LLM.chat``.
    """

    messages: tuple[tuple[str, str], ...]  # ((role, content), ...), hashable
    sampling: Sampling
    prompt: str | None = None

    @classmethod
    def make(cls, messages: Sequence[Message], sampling: Sampling) -> "ChatRequest":
        return cls(tuple((m["role"], m["content"]) for m in messages), sampling)

    @classmethod
    def completion(cls, prompt: str, sampling: Sampling) -> "ChatRequest":
        return cls((), sampling, prompt)

    @property
    def is_completion(self) -> bool:
        return self.prompt is not None

    def text_length(self) -> int:
        """Characters sent: the prompt, or every message's content."""
        if self.prompt is not None:
            return len(self.prompt)
        return sum(len(content) for _, content in self.messages)

    def message_dicts(self) -> list[Message]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def cache_key(self, model: str) -> str:
        """Content address of this call: model, messages, sampling parameters and seed."""
        content: dict[str, Any] = {"model": model, "messages": self.messages, "sampling": self.sampling.as_dict()}
        if self.prompt is not None:
            content["prompt"] = self.prompt
        payload = json.dumps(content, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class ChatResult:
    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None  # set when the call failed after its retries
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s,
            "attempts": self.attempts,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ChatResult":
        return cls(
            text=d.get("text"),
            finish_reason=d.get("finish_reason"),
            prompt_tokens=int(d.get("prompt_tokens") or 0),
            completion_tokens=int(d.get("completion_tokens") or 0),
            latency_s=float(d.get("latency_s") or 0.0),
            attempts=int(d.get("attempts") or 1),
            error=d.get("error"),
        )


# Called as each call completes (index into the batch, result), so a caller can
# persist results one by one and lose nothing when the process is killed.
ResultCallback = Callable[[int, ChatResult], None]


class Teacher(ABC):
    """Generates chat completions for batches of requests."""

    #: model name recorded in lineage and used in cache keys
    model: str

    @abstractmethod
    def generate(
        self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None
    ) -> list[ChatResult]:
        """Return one result per request, in order; failures are results with ``error`` set."""

    def check(self) -> None:
        """Raise TeacherError with a one-line message if the teacher cannot serve requests."""

    def close(self) -> None:
        """Release connections, engines or processes."""

    def __enter__(self) -> "Teacher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """What one kind of teacher config does around a job: its name, its start, its stage actors.

    One subclass per backend file, registered in ``factory`` under the config's ``kind``. The driver calls
    :meth:`model_name` and :meth:`session`; the teacher stage calls :meth:`teacher` in each actor on the
    config the session yielded (a *stage config*), and sizes its actors with :meth:`stage_resources` and
    :meth:`batch_size`.
    """

    kind: ClassVar[str]

    def __init__(self, config: Any):
        self.config = config

    def model_name(self) -> str:
        """The model name recorded in lineage and in cache keys, known before anything starts."""
        return str(self.config.model)

    def preflight(self) -> None:
        """Fail fast, with one line, before any work starts."""

    @contextmanager
    def session(self, log_dir: Path) -> Iterator[Any]:
        """Start the job-wide part of the teacher (if any) and yield the stage config."""
        self.preflight()
        yield self.config

    def teacher(self) -> Teacher:
        """The teacher of one stage actor (built once per actor)."""
        raise ConfigError(f"teacher kind {self.kind!r} cannot run inside a stage")

    def stage_resources(self, http_cpus: float) -> dict[str, float]:
        """Ray resources of one teacher-stage actor."""
        return {"num_cpus": http_cpus}

    def batch_size(self) -> int:
        """Rows per batch when the job sets none: enough to keep every in-flight call of the teacher busy."""
        return int(getattr(self.config, "concurrency", 16))

    def actor_slots(self, batch_size: int | None = None) -> int:
        """Calls one stage actor keeps in flight (``teachers.pool``): the job's ``ray.batch_size`` or
        :meth:`batch_size`, at most the teacher's ``concurrency``."""
        batch = batch_size or self.batch_size()
        return max(1, min(batch, int(getattr(self.config, "concurrency", batch))))

    def chunk_size(self, slots: int) -> int:
        """Rows a stage actor takes at once out of its ``slots``. An HTTP teacher answers every call on its own:
        small chunks (:data:`CHUNKS_PER_ACTOR` of them), so that a finished call frees its slot within one latency."""
        return max(1, math.ceil(slots / CHUNKS_PER_ACTOR))
