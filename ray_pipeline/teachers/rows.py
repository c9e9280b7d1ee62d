"""The teacher stage's row format: the request columns a row carries in, the result columns it carries out.

In: ``messages`` (the JSON of a message list, or of a string: a plain
completion prompt), ``sampling`` (the JSON of the sampling parameters and
seed), ``cache_key`` and ``cached`` (the JSON of the cached result, or "").
:func:`request_row` writes them from a :class:`ChatRequest` built once on the
driver, whose cache key is computed there once; the stage actor decodes the
request once (:func:`request_from_row`).

Out: the nine ``<prefix>_*`` result columns (``RESULT_FIELDS``), written and
read only through :class:`Answer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Mapping, Protocol, Sequence

from ray_pipeline.teachers.base import ChatRequest, ChatResult, Sampling


class SamplingSettings(Protocol):
    """A job's sampling section (``SamplingConfig``, ``EvalSamplingConfig``)."""

    temperature: float
    top_p: float
    max_tokens: int


def sampling_at(cfg: SamplingSettings, seed: int, stop: Sequence[str] | None = None) -> Sampling:
    """The sampling of one request: the job's settings, the request's seed, ``stop`` (default: the settings' own)."""
    if stop is None:
        stop = getattr(cfg, "stop", ())
    return Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed,
                    stop=tuple(stop))


def request_row(request: ChatRequest, model: str, cache: Mapping[str, ChatResult]) -> dict[str, Any]:
    """The request columns of ``request`` to ``model``, with its cached answer when ``cache`` has one."""
    if request.is_completion:
        messages = json.dumps(request.prompt, ensure_ascii=False)
    else:
        messages = json.dumps(request.message_dicts(), ensure_ascii=False)
    key = request.cache_key(model)
    hit = cache.get(key)
    return {
        "messages": messages,
        "sampling": json.dumps(request.sampling.as_dict(), sort_keys=True),
        "cache_key": key,
        "cached": json.dumps(hit.to_json()) if hit is not None else "",
    }


def request_from_row(messages_json: str, sampling_json: str) -> ChatRequest:
    """The request a row's ``messages`` and ``sampling`` columns describe (what the stage actor sends)."""
    sampling = json.loads(sampling_json)
    sampling["stop"] = tuple(sampling.get("stop") or ())
    messages = json.loads(messages_json)
    if isinstance(messages, str):
        return ChatRequest.completion(messages, Sampling(**sampling))
    return ChatRequest.make(messages, Sampling(**sampling))


def cached_result(row: Mapping[str, Any]) -> ChatResult | None:
    """The cached answer a row carries, or None."""
    if not row["cached"]:
        return None
    result = ChatResult.from_json(json.loads(row["cached"]))
    result.cached = True
    return result


@dataclass(frozen=True)
class Answer:
    """One teacher call's outcome as a row records it; the defaults are a call never made."""

    text: str = ""
    error: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0  # 0 for an answer from the cache
    cached: bool = False
    node: str = ""

    @classmethod
    def of(cls, result: ChatResult, node: str) -> "Answer":
        return cls(
            text=result.text or "",
            error=result.error or "",
            finish_reason=result.finish_reason or "",
            prompt_tokens=int(result.prompt_tokens),
            completion_tokens=int(result.completion_tokens),
            latency_s=float(result.latency_s),
            attempts=0 if result.cached else int(result.attempts),
            cached=bool(result.cached),
            node=node,
        )

    @classmethod
    def read(cls, row: Mapping[str, Any], prefix: str) -> "Answer":
        """The answer in ``row``'s ``<prefix>_*`` columns; a column the row lacks reads as a call never made."""
        got = {name: row.get(f"{prefix}_{name}") for name in RESULT_FIELDS}
        return cls(
            text=got["text"] or "",
            error=got["error"] or "",
            finish_reason=got["finish_reason"] or "",
            prompt_tokens=int(got["prompt_tokens"] or 0),
            completion_tokens=int(got["completion_tokens"] or 0),
            latency_s=float(got["latency_s"] or 0.0),
            attempts=int(got["attempts"] or 0),
            cached=bool(got["cached"]),
            node=got["node"] or "",
        )

    @property
    def ok(self) -> bool:
        return not self.error

    def columns(self, prefix: str) -> dict[str, Any]:
        """``{<prefix>_<field>: value}`` in ``RESULT_FIELDS`` order."""
        return {f"{prefix}_{name}": getattr(self, name) for name in RESULT_FIELDS}


RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Answer))
#: {field: its Python type}, for a table's schema
RESULT_TYPES: dict[str, type] = {name: type(getattr(Answer(), name)) for name in RESULT_FIELDS}


def result_columns(results: Sequence[ChatResult | None], node: str) -> dict[str, list[Any]]:
    """The ``RESULT_FIELDS`` columns (without the prefix) of a batch of results."""
    answers = []
    for r in results:
        assert r is not None
        answers.append(Answer.of(r, node))
    return {name: [getattr(a, name) for a in answers] for name in RESULT_FIELDS}
