"""Driver-side plumbing every pipeline uses to call its teacher.

``RequestBuilder`` turns a template and its values into teacher-stage rows
(messages, sampling with a per-request seed, cache key, and the cached answer
when there is one); ``TeacherCalls`` runs such rows through the one
``TeacherStage`` on a Ray Data actor pool, stops a run whose teacher is down
(``DEAD_TEACHER_STREAK`` failures in a row) and keeps the token and call tally
the manifest reports. Rows the cache answers in full never reach a stage, and a
teacher given as a start function starts only at the first call the cache
cannot answer: a rerun of a finished job starts nothing.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

from ray_pipeline.core.config import RayConfig, SamplingConfig, VLLMTeacherConfig
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.core.executor import run_stage
from ray_pipeline.prompts import PromptTemplate
from ray_pipeline.teachers.stage import TeacherStage, request_from_row, result_columns
from ray_pipeline.teachers.base import ChatResult
from ray_pipeline.teachers.factory import StageTeacherConfig, stage_resources

# This many teacher calls failing in a row (after their retries) means the
# teacher is down, not that some prompts are bad: stop instead of spending the
# seed pairs, and let a rerun resume from the cache.
DEAD_TEACHER_STREAK = 16
# Default rows per batch when the job does not set one: enough to keep every
# in-flight slot of an HTTP teacher busy, and a large batch for an engine.
_VLLM_BATCH = 64


def sampling_json(cfg: SamplingConfig, seed: int) -> str:
    return json.dumps(
        {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
            "seed": seed,
            "stop": list(cfg.stop),
        },
        sort_keys=True,
    )


@dataclass
class RequestBuilder:
    """Turns a template and its values into teacher-stage rows (messages, sampling, cache key, cached answer)."""

    template: PromptTemplate
    sampling: SamplingConfig
    model: str
    cache: dict[str, ChatResult]

    def request(self, seed: int, **values: str) -> dict[str, Any]:
        messages = json.dumps(self.template.render(**values), ensure_ascii=False)
        sampling = sampling_json(self.sampling, seed)
        key = request_from_row(messages, sampling).cache_key(self.model)
        hit = self.cache.get(key)
        return {
            "messages": messages,
            "sampling": sampling,
            "cache_key": key,
            "cached": json.dumps(hit.to_json()) if hit is not None else "",
        }


def answer_from_cache(requests: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Rows whose answers are all cached (``RequestBuilder`` rows), answered as the teacher stage would, with no teacher.

    For a rerun that needs no call: nothing is started (no server, no engine, no actors).
    """
    results = []
    for row in requests:
        if not row["cached"]:
            raise ValueError("answer_from_cache: a row has no cached answer")
        result = ChatResult.from_json(json.loads(row["cached"]))
        result.cached = True
        results.append(result)
    columns = result_columns(results, node="")
    return [{**row, **{f"{prefix}_{name}": values[i] for name, values in columns.items()}}
            for i, row in enumerate(requests)]


class Breaker:
    """Counts teacher calls failing in a row; trips at DEAD_TEACHER_STREAK."""

    def __init__(self, cache_dir: object):
        self.cache_dir = cache_dir
        self.streak = 0

    def observe(self, error: str) -> None:
        self.streak = self.streak + 1 if error else 0
        if self.streak >= DEAD_TEACHER_STREAK:
            raise TeacherError(
                f"the teacher failed {self.streak} calls in a row (last: {error}); finished calls are cached "
                f"in {self.cache_dir}: fix the teacher and run the same command again to resume"
            )


@dataclass
class CallTally:
    """Tokens of every answered row, and what this process actually spent (cache hits excluded)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    spent_prompt: int = 0
    spent_completion: int = 0
    by_prefix: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict[str, Any], prefix: str) -> None:
        p, c = int(row[f"{prefix}_prompt_tokens"]), int(row[f"{prefix}_completion_tokens"])
        self.prompt_tokens += p
        self.completion_tokens += c
        self.by_prefix[prefix] = self.by_prefix.get(prefix, 0) + 1
        if row[f"{prefix}_cached"]:
            self.cache_hits += 1
        else:
            self.calls += 1
            self.retries += max(0, int(row[f"{prefix}_attempts"]) - 1)
            self.spent_prompt += p
            self.spent_completion += c


class TeacherCalls:
    """Runs request rows through the teacher stage; one per pipeline run.

    Built with a started teacher's stage config, or with ``start``: a context-manager factory yielding one (e.g.
    ``teacher_session``), entered only when a call misses the cache and left when this object is (use it as a
    context manager). A rerun whose answers are all cached then starts no teacher at all.
    """

    def __init__(self, stage_cfg: StageTeacherConfig | None, ray_cfg: RayConfig, cache_dir: object,
                 start: Callable[[], AbstractContextManager[StageTeacherConfig]] | None = None):
        if stage_cfg is None and start is None:
            raise ValueError("TeacherCalls needs a stage config or a way to start the teacher")
        self.stage_cfg = stage_cfg
        self.ray_cfg = ray_cfg
        self.cache_dir = str(cache_dir)
        self.breaker = Breaker(cache_dir)
        self.tally = CallTally()
        self._start = start
        self._stack = ExitStack()

    @property
    def started(self) -> bool:
        return self.stage_cfg is not None

    def __enter__(self) -> "TeacherCalls":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _stage_config(self) -> StageTeacherConfig:
        if self.stage_cfg is None:
            assert self._start is not None
            self.stage_cfg = self._stack.enter_context(self._start())
        return self.stage_cfg

    def run(self, requests: list[dict[str, Any]], prefix: str, order_key: str | None = None) -> list[dict[str, Any]]:
        """Answer ``requests`` (rows from ``RequestBuilder.request`` plus any fields of the caller's own).

        Rows come back in input order with the ``<prefix>_*`` result columns. Failures are fed to the
        breaker in ``order_key`` order (default: input order), so a dead teacher stops the run.
        """
        if not requests:
            return []
        if all(row["cached"] for row in requests):
            answered = answer_from_cache(requests, prefix)
        else:
            stage_cfg = self._stage_config()
            default_batch = _VLLM_BATCH if isinstance(stage_cfg, VLLMTeacherConfig) else getattr(stage_cfg, "concurrency", 16)
            answered = run_stage(
                requests,
                TeacherStage,
                {"teacher_cfg": stage_cfg, "cache_dir": self.cache_dir, "prefix": prefix},
                batch_size=self.ray_cfg.batch_size or default_batch,
                num_actors=self.ray_cfg.num_actors,
                resources=stage_resources(stage_cfg, self.ray_cfg.num_cpus_per_actor),
            )
        ordered = sorted(answered, key=lambda r: r[order_key]) if order_key else answered
        for row in ordered:
            self.tally.add(row, prefix)
            self.breaker.observe(row[f"{prefix}_error"])
        return answered
