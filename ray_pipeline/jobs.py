"""The job kinds ``fusion run`` and ``fusion validate`` know, where each one's code is, and reading job files.

Each kind names its schema (a pydantic model in its package's ``config.py``) and one module of its own
package that provides these functions:

* ``run(job, address=None, force=False, shard=None) -> manifest``: the whole job;
* ``validate(job) -> dict``: the kind's full preflight report (``references.validate_job`` calls it when
  every input the job reads is here);
* ``summary(manifest, run_dir) -> int``: print the run's summary line(s); the exit code (0, or
  ``core.errors.EXIT_INCOMPLETE`` for a run that stopped before its target).
* ``references(job, refs)``: add every input the job reads from outside itself to ``refs``
  (``core.references.References``), for ``fusion validate``'s offline check;
* ``partial_validation(job, refs) -> dict``: the checks of the inputs that are here, when some are not.

:func:`load_job` reads a job file and validates it with its kind's schema (no module of the kind's code is
imported: a schema is plain pydantic); :func:`validate_job` is the whole ``fusion validate``.

The module is imported only when its kind is used, so importing this (and ``cli``) loads no job, Ray,
torch or vLLM. ``sharded``: the kind takes ``--shard I/N``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from ray_pipeline.core.config import JobCommon, format_validation_error, read_yaml_file
from ray_pipeline.core.errors import ConfigError, FusionError
from ray_pipeline.core.references import References
from ray_pipeline.prompts import template_report


@dataclass(frozen=True)
class JobKind:
    """One job kind: the module with its ``run``, ``validate`` and ``summary``."""

    kind: str
    module: str
    schema: str  # "module:Class" of its job file's pydantic model
    sharded: bool = False

    def _load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def schema_class(self) -> type[JobCommon]:
        module, name = self.schema.split(":")
        return getattr(importlib.import_module(module), name)

    def run(self, job: Any, address: str | None = None, force: bool = False, shard: Any = None) -> dict[str, Any]:
        if shard is not None and not self.sharded:
            raise FusionError(f"{self.kind} jobs are not sharded")
        return self._load().run(job, address=address, force=force, shard=shard)

    def validate(self, job: Any) -> dict[str, Any]:
        return self._load().validate(job)

    def summary(self, manifest: dict[str, Any], run_dir: Any) -> int:
        return int(self._load().summary(manifest, run_dir))

    def references(self, job: Any) -> References:
        refs = References()
        self._load().references(job, refs)
        return refs

    def partial_validation(self, job: Any, refs: References) -> dict[str, Any]:
        return self._load().partial_validation(job, refs)


JOBS: dict[str, JobKind] = {j.kind: j for j in (
    JobKind("instruction_fusion", "ray_pipeline.methods.fusion.job",
            "ray_pipeline.methods.fusion.config:InstructionFusionJob"),
    JobKind("tacie", "ray_pipeline.methods.tacie.job", "ray_pipeline.methods.tacie.config:TaCIEJob"),
    JobKind("sft", "ray_pipeline.training.job", "ray_pipeline.training.config:SFTJob"),
    JobKind("eval", "ray_pipeline.evaluation.job", "ray_pipeline.evaluation.config:EvalJob", sharded=True),
)}


def job_kind(kind: str) -> JobKind:
    """The registered kind; a ``FusionError`` for one this version does not run."""
    try:
        return JOBS[kind]
    except KeyError:
        raise FusionError(f"job kind {kind!r} is not supported by this version") from None


def parse_job(data: Any, source: str = "job") -> Any:
    """Validate a job mapping with its kind's schema; ConfigError naming the bad field."""
    kinds = ", ".join(JOBS)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a job file must be a YAML mapping with a 'kind' field")
    if "kind" not in data:
        raise ConfigError(f"{source}: kind: missing (one of: {kinds})")
    if data["kind"] not in JOBS:
        raise ConfigError(f"{source}: kind: {data['kind']!r} is not a job kind (one of: {kinds})")
    try:
        return JOBS[data["kind"]].schema_class().model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_job(path: str | os.PathLike[str]) -> Any:
    """Read and validate a job file; relative input paths are resolved against its directory."""
    p = Path(path)
    job = parse_job(read_yaml_file(p, "job file"), str(p))
    job.resolve_paths(p.resolve().parent)
    return job


def check_references(job: Any) -> References:
    """Every external reference of a job and whether it is here; ConfigError for a malformed hub id."""
    return job_kind(job.kind).references(job)


def validate_job(job: Any) -> dict[str, Any]:
    """``fusion validate``: the kind's full preflight report when every input it reads is here, else the
    checks of what is here (templates, and the kind's partial checks); both with what was and was not
    checked offline (``core.references``)."""
    kind = job_kind(job.kind)
    refs = check_references(job)
    report = {"job": job.name, "kind": job.kind}
    if refs.complete:
        report.update(kind.validate(job))
        report["offline_check"] = "complete"
    else:
        report.update(template_report(job))
        report.update(kind.partial_validation(job, refs))
        report["offline_check"] = "partial: the inputs not here were skipped"
    report["checked_offline"] = refs.checked
    report["not_checked_offline"] = refs.not_checked
    return report


__all__ = ["JOBS", "JobKind", "check_references", "job_kind", "load_job", "parse_job", "validate_job"]
