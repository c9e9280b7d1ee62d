"""The ``kind: vllm`` backend (``VLLMBackend``) and its engines: started once per job, shared by every stage.

A ``vllm.LLM`` takes seconds (a small model on CPU) to minutes (a large one on GPUs) to load. A stage
actor is made for each ``TeacherCalls.run`` (each batch of fusions, each TaCIE operation of each
round), so an engine inside the stage actor would be loaded again for every one of them. Instead
``VLLMBackend.session`` starts ``engines`` Ray actors (``EngineActor``: one engine each, with the
teacher's CPUs and GPUs) for the whole job, and yields :class:`VLLMEngines`, the stage config that
names them. The stage actors are light (``num_cpus`` ``STAGE_CPUS``): their teacher
(:class:`EngineClient`) sends each batch to one engine and waits for its results. The engine
actors end with the session.

This mirrors ``kind: embedded``, whose session starts one ``vllm serve`` for the job and whose
stages are HTTP clients of it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from ray_pipeline.core.config import VLLMTeacherConfig
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.teachers.base import Backend, ChatRequest, ChatResult, ResultCallback, Teacher
from ray_pipeline.teachers.vllm_offline import BATCH_SIZE, VLLMOfflineTeacher, check_config, model_name

#: CPUs of one stage actor: it only forwards batches to an engine actor and waits
STAGE_CPUS = 0.25
#: seconds an engine actor gets to release its engine at the end of the job before it is killed
CLOSE_TIMEOUT_S = 60.0


def engine_slots(batch: int) -> int:
    """An engine takes whole batches: a stage actor keeps two in flight, one generating and the next waiting."""
    return 2 * batch


def engine_chunk(slots: int) -> int:
    return max(1, slots // 2)


class EngineActor:
    """One ``vllm.LLM`` (a ``VLLMOfflineTeacher``) in a Ray actor, for the whole job."""

    def __init__(self, config: VLLMTeacherConfig):
        self.teacher = VLLMOfflineTeacher(config)

    def ready(self) -> bool:
        self.teacher.check()
        return True

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        return self.teacher.generate(requests)

    def close(self) -> None:
        self.teacher.close()


@dataclass(frozen=True)
class VLLMEngines:
    """The stage config of a started ``kind: vllm`` teacher: its model name and its engine actors."""

    model: str
    handles: tuple[Any, ...] = field(repr=False)
    batch: int
    kind: str = "vllm_engines"


@contextlib.contextmanager
def start_engines(config: VLLMTeacherConfig, model: str, batch: int) -> Iterator[VLLMEngines]:
    """Start ``config.engines`` engine actors, wait until each has loaded its model, stop them all at the end."""
    import ray

    actor = ray.remote(EngineActor).options(num_cpus=config.num_cpus,
                                            num_gpus=config.num_gpus * config.tensor_parallel_size)
    handles = [actor.remote(config) for _ in range(config.engines)]
    try:
        try:
            ray.get([h.ready.remote() for h in handles])
        except ray.exceptions.RayActorError as err:
            cause = err.__cause__ or err
            message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            raise TeacherError(f"vllm teacher: an engine actor did not start: {message[:400]}") from None
        except ray.exceptions.RayTaskError as err:
            raise TeacherError(str(err.as_instanceof_cause()).strip().splitlines()[-1][:500]) from None
        yield VLLMEngines(model=model, handles=tuple(handles), batch=batch)
    finally:
        with contextlib.suppress(Exception):
            ray.wait([h.close.remote() for h in handles], num_returns=len(handles), timeout=CLOSE_TIMEOUT_S)
        for h in handles:
            with contextlib.suppress(Exception):
                ray.kill(h)


class EngineClient(Teacher):
    """A stage actor's teacher: each batch goes to one of the job's engine actors (in turn)."""

    def __init__(self, engines: VLLMEngines):
        self.model = engines.model
        self.handles = engines.handles
        start = os.getpid() % len(self.handles)  # stage actors spread over the engines
        self._turn = itertools.islice(itertools.cycle(range(len(self.handles))), start, None)

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[ChatResult]:
        import ray

        requests = list(requests)
        if not requests:
            return []
        handle = self.handles[next(self._turn)]
        try:
            results = ray.get(handle.generate.remote(requests))
        except ray.exceptions.RayError as err:  # the engine actor died: every row records it
            text = " ".join(str(err).split())[:300] or type(err).__name__
            results = [ChatResult(text=None, error=f"vllm_error: engine actor failed: {text}") for _ in requests]
        if on_result is not None:
            for i, result in enumerate(results):
                on_result(i, result)
        return results


class VLLMEnginesBackend(Backend):
    """The stage side of ``kind: vllm`` (the config ``VLLMBackend.session`` yields): light stage actors."""

    kind = "vllm_engines"
    config: VLLMEngines

    def model_name(self) -> str:
        return self.config.model

    def teacher(self) -> EngineClient:
        return EngineClient(self.config)

    def stage_resources(self, http_cpus: float) -> dict[str, float]:
        return {"num_cpus": STAGE_CPUS}

    def batch_size(self) -> int:
        return self.config.batch

    def actor_slots(self, batch_size: int | None = None) -> int:
        return engine_slots(batch_size or self.batch_size())

    def chunk_size(self, slots: int) -> int:
        return engine_chunk(slots)


class VLLMBackend(Backend):
    """``kind: vllm``: ``engines`` ``vllm.LLM`` actors started once for the job; stages send them batches."""

    kind = "vllm"
    config: VLLMTeacherConfig

    def model_name(self) -> str:
        return model_name(self.config)

    def preflight(self) -> None:
        check_config(self.config)

    @contextlib.contextmanager
    def session(self, log_dir: Path) -> Iterator[Any]:
        """Start the job's engine actors (loading the model once) and yield the stage config naming them."""
        self.preflight()
        with start_engines(self.config, self.model_name(), BATCH_SIZE) as engines:
            yield engines

    def teacher(self) -> VLLMOfflineTeacher:
        return VLLMOfflineTeacher(self.config)

    def stage_resources(self, http_cpus: float) -> dict[str, float]:
        cfg = self.config
        return {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus * cfg.tensor_parallel_size}

    def batch_size(self) -> int:
        return BATCH_SIZE

    def actor_slots(self, batch_size: int | None = None) -> int:
        return engine_slots(batch_size or self.batch_size())

    def chunk_size(self, slots: int) -> int:
        return engine_chunk(slots)
