"""The job kinds ``fusion run`` and ``fusion validate`` know, and where each one's code is.

Each kind names one module of its own package that provides three functions:

* ``run(job, address=None, force=False, shard=None) -> manifest``: the whole job;
* ``validate(job) -> dict``: the kind's full preflight report (``references.validate_job`` calls it when
  every input the job reads is here);
* ``summary(manifest, run_dir) -> int``: print the run's summary line(s); the exit code (0, or
  ``core.errors.EXIT_INCOMPLETE`` for a run that stopped before its target).

The module is imported only when its kind is used, so importing this (and ``cli``) loads no job, Ray,
torch or vLLM. ``sharded``: the kind takes ``--shard I/N``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ray_pipeline.core.errors import FusionError


@dataclass(frozen=True)
class JobKind:
    """One job kind: the module with its ``run``, ``validate`` and ``summary``."""

    kind: str
    module: str
    sharded: bool = False

    def _load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def run(self, job: Any, address: str | None = None, force: bool = False, shard: Any = None) -> dict[str, Any]:
        if shard is not None and not self.sharded:
            raise FusionError(f"{self.kind} jobs are not sharded")
        return self._load().run(job, address=address, force=force, shard=shard)

    def validate(self, job: Any) -> dict[str, Any]:
        return self._load().validate(job)

    def summary(self, manifest: dict[str, Any], run_dir: Any) -> int:
        return int(self._load().summary(manifest, run_dir))


JOBS: dict[str, JobKind] = {j.kind: j for j in (
    JobKind("instruction_fusion", "ray_pipeline.methods.fusion.job"),
    JobKind("tacie", "ray_pipeline.methods.tacie.job"),
    JobKind("sft", "ray_pipeline.training.job"),
    JobKind("eval", "ray_pipeline.evaluation.job", sharded=True),
)}


def job_kind(kind: str) -> JobKind:
    """The registered kind; a ``FusionError`` for one this version does not run."""
    try:
        return JOBS[kind]
    except KeyError:
        raise FusionError(f"job kind {kind!r} is not supported by this version") from None


def full_validation(job: Any) -> dict[str, Any]:
    """The kind's preflight report, for ``references.validate_job``."""
    return job_kind(job.kind).validate(job)


__all__ = ["JOBS", "JobKind", "job_kind", "full_validation"]
