"""The one path from a pipeline to its teacher.

``RequestBuilder`` turns a template and its values into teacher-stage rows
(``rows.request_row``: the request and its cache key computed once, and the
cached answer when there is one); ``TeacherCalls`` runs such rows through the
one ``TeacherStage`` on a Ray Data actor pool, stops a run whose teacher is
down (``tally.Breaker``) and keeps the one ``tally.CallTally`` the manifest
reports. Rows the cache answers in full never reach a stage, and a teacher
started lazily (``TeacherCalls.lazy``, the way every pipeline starts it)
starts only at the first call the cache cannot answer: a rerun of a finished
job starts nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ray_pipeline.core.config import RayConfig
from ray_pipeline.core.executor import run_stage
from ray_pipeline.prompts import PromptTemplate
from ray_pipeline.teachers.base import ChatRequest, ChatResult
from ray_pipeline.teachers.factory import StageTeacherConfig, backend_for, teacher_session
from ray_pipeline.teachers.rows import Answer, SamplingSettings, cached_result, request_row, sampling_at
from ray_pipeline.teachers.stage import TeacherStage
from ray_pipeline.teachers.tally import DEAD_TEACHER_STREAK, Breaker, CallTally

__all__ = ["DEAD_TEACHER_STREAK", "Breaker", "CallTally", "RequestBuilder", "TeacherCalls", "answer_from_cache"]


@dataclass
class RequestBuilder:
    """Turns a template and its values into teacher-stage rows (messages, sampling, cache key, cached answer)."""

    template: PromptTemplate
    sampling: SamplingSettings
    model: str
    cache: dict[str, ChatResult]

    def request(self, seed: int, **values: str) -> dict[str, Any]:
        request = ChatRequest.make(self.template.render(**values), sampling_at(self.sampling, seed))
        return request_row(request, self.model, self.cache)


def answer_from_cache(requests: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Rows whose answers are all cached (``RequestBuilder`` rows), answered as the teacher stage would, with no teacher.

    For a rerun that needs no call: nothing is started (no server, no engine, no actors).
    """
    answered = []
    for row in requests:
        result = cached_result(row)
        if result is None:
            raise ValueError("answer_from_cache: a row has no cached answer")
        answered.append({**row, **Answer.of(result, node="").columns(prefix)})
    return answered


class TeacherCalls:
    """Runs request rows through the teacher stage; one per pipeline run (or per evaluated model).

    Made with :meth:`lazy` (the teacher starts at the first cache miss), or with a started teacher's stage
    config, or with ``start``: a context-manager factory yielding one, entered only when a call misses the
    cache and left when this object is (use it as a context manager).
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

    @classmethod
    def lazy(cls, teacher_cfg: object, ray_cfg: RayConfig, cache_dir: object, log_dir: object,
             on_start: Callable[[], None] | None = None) -> "TeacherCalls":
        """Calls whose teacher (any job's teacher config) starts at the first call the cache cannot answer.

        ``on_start`` runs once the teacher is up and has passed its preflight, before the first call (e.g. to
        start the run directory: an unreachable teacher then fails before anything is written).
        """

        @contextmanager
        def start() -> Iterator[StageTeacherConfig]:
            with teacher_session(teacher_cfg, Path(str(log_dir))) as stage_cfg:
                if on_start is not None:
                    on_start()
                yield stage_cfg

        return cls(None, ray_cfg, cache_dir, start=start)

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

        Rows come back in input order with the ``<prefix>_*`` result columns. Answers are tallied, and failures
        fed to the breaker, in ``order_key`` order (default: input order), so a dead teacher stops the run.
        """
        if not requests:
            return []
        if all(row["cached"] for row in requests):
            answered = answer_from_cache(requests, prefix)
        else:
            stage_cfg = self._stage_config()
            backend = backend_for(stage_cfg)
            answered = run_stage(
                requests,
                TeacherStage,
                {"teacher_cfg": stage_cfg, "cache_dir": self.cache_dir, "prefix": prefix},
                batch_size=self.ray_cfg.batch_size or backend.batch_size(),
                num_actors=self.ray_cfg.num_actors,
                resources=backend.stage_resources(self.ray_cfg.num_cpus_per_actor),
            )
        ordered = sorted(answered, key=lambda r: r[order_key]) if order_key else answered
        for row in ordered:
            answer = Answer.read(row, prefix)
            self.tally.count(answer, prefix)
            self.breaker.observe(answer.error)
        return answered
