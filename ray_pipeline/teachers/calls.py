"""The one path from a pipeline to its teacher.

``RequestBuilder`` turns a template and its values into teacher-stage rows
(``rows.request_row``: the request and its cache key computed once, and the
cached answer when there is one); ``TeacherCalls`` runs such rows through the
job's one ``pool.TeacherPool`` of ``TeacherStage`` actors, either all at once
(``run``) or as a stream the caller feeds as answers come back (``stream``),
stops a run whose teacher is down (``tally.Breaker``) and keeps the one
``tally.CallTally`` the manifest reports. Rows the cache answers never reach
a stage, and a teacher started lazily (``TeacherCalls.lazy``, the way every
pipeline starts it) starts only at the first call the cache cannot answer:
a rerun of a finished job starts nothing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, contextmanager
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ray_pipeline.core.config import RayConfig
from ray_pipeline.prompts import PromptTemplate
from ray_pipeline.teachers.base import ChatRequest, ChatResult
from ray_pipeline.teachers.factory import StageTeacherConfig, teacher_session
from ray_pipeline.teachers.pool import CallStream, TeacherPool
from ray_pipeline.teachers.rows import Answer, SamplingSettings, cached_result, request_row, sampling_at
from ray_pipeline.teachers.tally import DEAD_TEACHER_STREAK, Breaker, CallTally

__all__ = ["DEAD_TEACHER_STREAK", "Breaker", "CallStream", "CallTally", "RequestBuilder", "TeacherCalls", "cached_answer"]


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


def cached_answer(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``row`` (whose ``cached`` column holds an answer) with that answer in its ``<prefix>_*`` columns, as the
    teacher stage would answer it: no teacher, server, engine or actor is started for it."""
    result = cached_result(row)
    assert result is not None
    return {**row, **Answer.of(result, node="").columns(prefix)}


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
        self._pool: TeacherPool | None = None
        self._release_on_exit = False

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

    def stream(self) -> CallStream:
        """A stream over the job's stage actors (started, and the teacher with them, on first use)."""
        if self._pool is None:
            stage_cfg = self._stage_config()  # entered first, so the actors end before the teacher's session
            self._pool = TeacherPool(stage_cfg, self.ray_cfg, self.cache_dir)
            if not self._release_on_exit:
                self._stack.callback(self.release)
                self._release_on_exit = True
        return CallStream(self._pool)

    def release(self) -> None:
        """End the stage actors now (their CPUs go back to Ray); the next call starts new ones. The teacher's
        session (a server, engines) stays up."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def observe(self, row: dict[str, Any], prefix: str) -> Answer:
        """Count ``row``'s answer in the tally and feed it to the breaker (which raises when the teacher is down).
        A streaming caller observes its rows in its own fixed order (attempt order), whatever the timing."""
        answer = Answer.read(row, prefix)
        self.tally.count(answer, prefix)
        self.breaker.observe(answer.error)
        return answer

    def run(self, requests: list[dict[str, Any]], prefix: str, order_key: str | None = None) -> list[dict[str, Any]]:
        """Answer ``requests`` (rows from ``RequestBuilder.request`` plus any fields of the caller's own).

        Rows come back in input order with the ``<prefix>_*`` result columns. Answers are tallied, and failures
        fed to the breaker, in ``order_key`` order (default: input order), so a dead teacher stops the run.
        """
        if not requests:
            return []
        answered: list[dict[str, Any] | None] = [cached_answer(row, prefix) if row["cached"] else None
                                                for row in requests]
        todo = deque(i for i, row in enumerate(answered) if row is None)
        if todo:
            stream = self.stream()
            while todo or stream.busy:
                while todo and stream.room > 0:
                    i = todo.popleft()
                    stream.put({**requests[i], _INDEX: i}, prefix)
                for _, row in stream.results():
                    answered[row.pop(_INDEX)] = row
        done = [row for row in answered if row is not None]
        assert len(done) == len(requests)
        for row in sorted(done, key=lambda r: r[order_key]) if order_key else done:
            self.observe(row, prefix)
        return done


#: the column ``run`` numbers its rows with while they are in flight
_INDEX = "_calls_index"
