"""The teacher's stage actors for a whole job, and a stream of calls over them with a bound on what is in flight.

``TeacherPool`` starts ``ray.num_actors`` stage actors (``teachers.stage.TeacherStage``, one teacher each,
spread over the cluster's nodes) when a job's first call misses the cache, and keeps them until the job ends:
every later call of the job (each fusion, each response, each TaCIE operation of each round, each evaluated
model's samples) goes to the same actors, so no call waits for an actor to start.

``CallStream`` is how the driver uses them: rows go in one at a time (``put``), leave in chunks
(``Backend.chunk_size``) to the actor with the fewest calls in flight, and come back as each chunk finishes
(``results``). At most ``capacity`` calls are in flight: the sum over the actors of what each keeps
(``Backend.actor_slots``: the teacher's ``concurrency``, or ``ray.batch_size`` when the job sets it). A
pipeline that decides what to ask next from what came back (Instruction Fusion draws pairs until M are
valid) does so between two ``results`` calls, and the driver stays the one place that decides what is kept.

Why not Ray Data: its streaming executor runs a fixed graph from a source to a sink, and this loop has an
edge back (results decide the next draws); ``ray.data.llm`` processors likewise consume a finished dataset.
The stage itself stays a plain class over rows, which Ray Data can still run (``map_batches``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, Mapping

from ray_pipeline.core.config import RayConfig
from ray_pipeline.core.errors import TeacherError, first_line
from ray_pipeline.teachers.factory import StageTeacherConfig, backend_for
from ray_pipeline.teachers.stage import REQUEST_COLUMNS, TeacherStage

log = logging.getLogger(__name__)

#: a chunk whose actor died is sent again this many times (to a restarted actor) before the run stops
CHUNK_RETRIES = 2
#: seconds the actors get to flush their cache files at the end before they are killed
CLOSE_TIMEOUT_S = 30.0


class TeacherPool:
    """``num_actors`` stage actors of one started teacher (a stage config), ended by :meth:`close`."""

    def __init__(self, stage_cfg: StageTeacherConfig, ray_cfg: RayConfig, cache_dir: str):
        import ray

        backend = backend_for(stage_cfg)
        self.slots = backend.actor_slots(ray_cfg.batch_size)  # calls in flight per actor
        self.chunk = min(self.slots, backend.chunk_size(self.slots))
        self.num_actors = max(1, ray_cfg.num_actors)
        options: dict[str, Any] = {
            **backend.stage_resources(ray_cfg.num_cpus_per_actor),
            "max_concurrency": math.ceil(self.slots / self.chunk) + 1,  # +1: ready() while chunks run
            "max_restarts": CHUNK_RETRIES,
            "scheduling_strategy": "SPREAD",
        }
        actor = ray.remote(TeacherStage).options(**options)
        self.actors = [actor.remote(stage_cfg, cache_dir) for _ in range(self.num_actors)]
        try:
            self.nodes = ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as err:
            self.close()
            raise TeacherError(f"a teacher stage actor did not start: {first_line(_cause(err))}") from None

    @property
    def capacity(self) -> int:
        """Calls in flight at most, over every actor."""
        return self.slots * self.num_actors

    def close(self) -> None:
        """Each actor flushes its cache file and closes its teacher (at once, within CLOSE_TIMEOUT_S), then ends."""
        import ray

        try:
            ray.wait([a.close.remote() for a in self.actors], num_returns=len(self.actors), timeout=CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a dead actor has nothing left to flush
            pass
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []


def _cause(err: BaseException) -> BaseException:
    import ray

    if isinstance(err, ray.exceptions.RayTaskError):
        return err.as_instanceof_cause()
    return err.__cause__ or err


class CallStream:
    """Rows to a pool, at most ``capacity`` in flight, answers back as chunks finish.

    ``put`` queues a row (``RequestBuilder`` request columns plus any of the caller's own: they come back
    unchanged) under a prefix; queued rows leave in chunks of one prefix. ``room`` is what may still be put
    without passing the bound. ``results`` sends what is queued and returns the rows of at least one
    finished chunk, each with its ``<prefix>_*`` columns, as ``(prefix, row)`` pairs.
    """

    def __init__(self, pool: TeacherPool):
        self.pool = pool
        self.capacity = pool.capacity
        self._queued: dict[str, deque[dict[str, Any]]] = {}
        self._flight: dict[Any, tuple[int, str, list[dict[str, Any]], int]] = {}  # ref -> (actor, prefix, rows, tries)
        self._load = [0] * len(pool.actors)
        self.in_flight = 0

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queued.values())

    @property
    def room(self) -> int:
        return self.capacity - self.in_flight - self.queued

    @property
    def busy(self) -> bool:
        return bool(self._flight) or self.queued > 0

    def put(self, row: Mapping[str, Any], prefix: str) -> None:
        queue = self._queued.setdefault(prefix, deque())
        queue.append(dict(row))
        if len(queue) >= self.pool.chunk:
            self._send(prefix, self.pool.chunk)

    def flush(self) -> None:
        """Send every queued row now, in chunks of at most the pool's chunk size."""
        for prefix, queue in self._queued.items():
            while queue:
                self._send(prefix, min(len(queue), self.pool.chunk))

    def _send(self, prefix: str, n: int, rows: list[dict[str, Any]] | None = None, tries: int = 0) -> None:
        if rows is None:
            queue = self._queued[prefix]
            rows = [queue.popleft() for _ in range(n)]
        actor = min(range(len(self._load)), key=lambda i: self._load[i])
        requests = [{key: row[key] for key in REQUEST_COLUMNS} for row in rows]
        ref = self.pool.actors[actor].answer.remote(requests, prefix)
        self._flight[ref] = (actor, prefix, rows, tries)
        self._load[actor] += len(rows)
        self.in_flight += len(rows)

    def results(self) -> list[tuple[str, dict[str, Any]]]:
        """The rows of every chunk finished by now, waiting for one if none is."""
        import ray

        self.flush()
        if not self._flight:
            return []
        refs = list(self._flight)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)  # every chunk done by now
        if not ready:
            ready, _ = ray.wait(refs, num_returns=1)
        out: list[tuple[str, dict[str, Any]]] = []
        for ref in ready:
            actor, prefix, rows, tries = self._flight.pop(ref)
            self._load[actor] -= len(rows)
            self.in_flight -= len(rows)
            try:
                answered = ray.get(ref)
            except ray.exceptions.RayActorError as err:  # the actor died (OOM, a lost node): send the chunk again
                if tries >= CHUNK_RETRIES:
                    raise TeacherError(f"a teacher stage actor died {tries + 1} times on the same calls: "
                                       f"{first_line(_cause(err))}") from None
                log.warning("a teacher stage actor died (%s); its %d calls are sent again", first_line(_cause(err)),
                            len(rows))
                self._send(prefix, len(rows), rows, tries + 1)
                continue
            except ray.exceptions.RayTaskError as err:
                raise TeacherError(f"the teacher stage failed: {first_line(_cause(err))}") from None
            out.extend((prefix, {**row, **columns}) for row, columns in zip(rows, answered))
        return out


__all__ = ["CHUNK_RETRIES", "CallStream", "TeacherPool"]
