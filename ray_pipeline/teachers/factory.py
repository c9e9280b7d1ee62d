"""From a teacher config to a running teacher.

``teacher_session`` runs on the driver and starts whatever the teacher needs for
the whole job (the embedded ``vllm serve``), yielding the config that the
pipeline's stages use; ``build_teacher`` runs inside each stage actor and makes
the :class:`Teacher` from that config, once per actor.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Union

from ray_pipeline.core.config import EmbeddedTeacherConfig, OpenAITeacherConfig, VLLMTeacherConfig
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.teachers.base import Teacher

if TYPE_CHECKING:
    from ray_pipeline.teachers.embedded import EmbeddedServer

StageTeacherConfig = Union[OpenAITeacherConfig, VLLMTeacherConfig]


def teacher_model_name(cfg: StageTeacherConfig) -> str:
    """The model name recorded in lineage and in cache keys."""
    if isinstance(cfg, VLLMTeacherConfig):
        from ray_pipeline.teachers.vllm_offline import model_name

        return model_name(cfg)
    return cfg.model


def configured_model_name(cfg: object) -> str:
    """The model name of any teacher config, known before anything starts (the embedded server's fixed name)."""
    if isinstance(cfg, EmbeddedTeacherConfig):
        from ray_pipeline.teachers.embedded import SERVED_MODEL_NAME

        return SERVED_MODEL_NAME
    return teacher_model_name(cfg)  # type: ignore[arg-type]


def build_teacher(cfg: StageTeacherConfig) -> Teacher:
    if isinstance(cfg, OpenAITeacherConfig):
        from ray_pipeline.teachers.openai_compat import OpenAICompatTeacher

        return OpenAICompatTeacher(cfg)
    if isinstance(cfg, VLLMTeacherConfig):
        from ray_pipeline.teachers.vllm_offline import VLLMOfflineTeacher

        return VLLMOfflineTeacher(cfg)
    raise ConfigError(f"teacher kind {getattr(cfg, 'kind', cfg)!r} cannot run inside a stage")


def stage_resources(cfg: StageTeacherConfig, http_cpus: float) -> dict[str, float]:
    """Ray resources of one teacher-stage actor."""
    if isinstance(cfg, VLLMTeacherConfig):
        return {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus * cfg.tensor_parallel_size}
    return {"num_cpus": http_cpus}


def preflight(cfg: StageTeacherConfig) -> None:
    """Fail fast, with one line, before any work starts."""
    if isinstance(cfg, OpenAITeacherConfig):
        teacher = build_teacher(cfg)
        try:
            teacher.check()
        finally:
            teacher.close()
    elif isinstance(cfg, VLLMTeacherConfig):
        from ray_pipeline.teachers.vllm_offline import check_config

        check_config(cfg)


def embedded_stage_config(cfg: EmbeddedTeacherConfig, server: "EmbeddedServer") -> OpenAITeacherConfig:
    """How stages talk to a running embedded server: the OpenAI-compatible HTTP teacher."""
    return OpenAITeacherConfig(
        model=server.model,
        base_url=server.base_url,
        api_key="EMPTY",
        concurrency=cfg.concurrency,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
    )


@contextmanager
def teacher_session(cfg: object, log_dir: Path) -> Iterator[StageTeacherConfig]:
    """Start the job-wide part of a teacher and yield the config its stages use."""
    if isinstance(cfg, EmbeddedTeacherConfig):
        from ray_pipeline.teachers.embedded import EmbeddedServer

        with EmbeddedServer(cfg, log_path=log_dir / "embedded-vllm.log") as server:
            stage_cfg = embedded_stage_config(cfg, server)
            preflight(stage_cfg)
            yield stage_cfg
        return
    if isinstance(cfg, (OpenAITeacherConfig, VLLMTeacherConfig)):
        preflight(cfg)
        yield cfg
        return
    raise ConfigError(f"unknown teacher config {cfg!r}")
