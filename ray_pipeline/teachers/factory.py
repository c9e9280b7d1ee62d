"""From a teacher config to its backend, and the functions pipelines call on it.

Backends are looked up by the config's ``kind`` (``BACKENDS``: one class per
backend file, imported only when used, so that naming an HTTP teacher never
imports vLLM). ``teacher_session`` runs on the driver and starts whatever the
teacher needs for the whole job (the embedded ``vllm serve``), yielding the
*stage config* the pipeline's stages use; ``build_teacher`` runs inside each
stage actor and makes the :class:`Teacher` from that config, once per actor.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from importlib import import_module
from pathlib import Path
from typing import Union

from ray_pipeline.core.config import EmbeddedTeacherConfig, OpenAITeacherConfig, VLLMTeacherConfig
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.teachers.base import Backend, Teacher
from ray_pipeline.teachers.vllm_engines import VLLMEngines

# The configs a teacher stage runs on (what ``teacher_session`` yields).
StageTeacherConfig = Union[OpenAITeacherConfig, VLLMTeacherConfig, VLLMEngines]
# Any teacher a job may name.
TeacherConfig = Union[OpenAITeacherConfig, VLLMTeacherConfig, EmbeddedTeacherConfig]

#: config kind -> "module:Backend class"
BACKENDS: dict[str, str] = {
    "openai": "ray_pipeline.teachers.openai_compat:OpenAIBackend",
    "vllm": "ray_pipeline.teachers.vllm_engines:VLLMBackend",
    "embedded": "ray_pipeline.teachers.embedded:EmbeddedBackend",
    "vllm_engines": "ray_pipeline.teachers.vllm_engines:VLLMEnginesBackend",  # a started vllm teacher's stages
}


def backend_for(cfg: object) -> Backend:
    """The backend of a teacher config, by its ``kind``."""
    where = BACKENDS.get(getattr(cfg, "kind", None))  # type: ignore[arg-type]
    if where is None:
        raise ConfigError(f"unknown teacher config {cfg!r}")
    module, name = where.split(":")
    return getattr(import_module(module), name)(cfg)


def configured_model_name(cfg: TeacherConfig) -> str:
    """The model name of any teacher config, recorded in lineage and cache keys, known before anything starts."""
    return backend_for(cfg).model_name()


teacher_model_name = configured_model_name  # the same for a stage config


def build_teacher(cfg: StageTeacherConfig) -> Teacher:
    return backend_for(cfg).teacher()


def stage_resources(cfg: StageTeacherConfig, http_cpus: float) -> dict[str, float]:
    """Ray resources of one teacher-stage actor."""
    return backend_for(cfg).stage_resources(http_cpus)


def preflight(cfg: StageTeacherConfig) -> None:
    """Fail fast, with one line, before any work starts."""
    backend_for(cfg).preflight()


def teacher_session(cfg: TeacherConfig, log_dir: Path) -> AbstractContextManager[StageTeacherConfig]:
    """Start the job-wide part of a teacher and yield the config its stages use."""
    return backend_for(cfg).session(log_dir)


def embedded_stage_config(cfg: EmbeddedTeacherConfig, server: object) -> OpenAITeacherConfig:
    """How stages talk to a running embedded server: the OpenAI-compatible HTTP teacher."""
    from ray_pipeline.teachers.embedded import embedded_stage_config as stage_config

    return stage_config(cfg, server)
