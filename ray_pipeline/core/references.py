"""What a job refers to outside itself, and what ``fusion validate`` can check of it offline.

A job names hub datasets (seeds, SFT sources, decontamination and evaluation
benchmarks), hub models (teacher, scorer, SFT base, models under evaluation),
run directories of other jobs, URLs and API models. Offline, validate checks
what it can: a local path, a bundled model, the syntax of a hub id
(``owner/name``) and whether the hub id is in the local Hugging Face cache.
What it cannot check (a hub id that is not cached, an API model, a run that
has not happened yet) is listed as "not checked offline" instead of failing;
a malformed hub id is an error.

Each job kind lists its references with the helpers here (its ``job.py``'s ``references``);
``ray_pipeline.jobs.validate_job`` runs the kind's full preflight when every input it reads is here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_pipeline.core.errors import ConfigError

#: statuses: checked here (local, bundled, cached) or not (not_checked)
LOCAL, BUNDLED, CACHED, NOT_CHECKED = "local", "bundled", "cached", "not_checked"


@dataclass
class Reference:
    field: str  # the job field, e.g. "seeds[0].hf"
    what: str  # "hub dataset", "hub model", "run directory", "URL", "API model", "benchmark data"
    value: str
    status: str
    note: str = ""
    needed: bool = False  # the kind's preflight reads it (not checked: that preflight cannot run whole)

    def line(self) -> str:
        if self.status == NOT_CHECKED:
            return f"{self.what} {self.value} exists ({self.field}{'; ' + self.note if self.note else ''})"
        return f"{self.field}: {self.what} {self.value} ({self.status}{', ' + self.note if self.note else ''})"


@dataclass
class References:
    refs: list[Reference] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> Reference:
        ref = Reference(*args, **kwargs)
        self.refs.append(ref)
        return ref

    @property
    def checked(self) -> list[str]:
        return [r.line() for r in self.refs if r.status != NOT_CHECKED]

    @property
    def not_checked(self) -> list[str]:
        return [r.line() for r in self.refs if r.status == NOT_CHECKED]

    def missing(self, field_name: str) -> bool:
        """Whether the reference of ``field_name`` cannot be read here (a needed one skipped by the checks)."""
        return any(r.field == field_name and r.status == NOT_CHECKED for r in self.refs)

    def here(self, prefix: str, keys: tuple[str, ...] = ("path", "hf")) -> bool:
        """Whether the input at ``prefix`` (e.g. ``seeds[0]``) can be read here: neither it nor its ``keys`` missing."""
        return not self.missing(prefix) and not any(self.missing(f"{prefix}.{k}") for k in keys)

    @property
    def complete(self) -> bool:
        """Every input the kind's preflight reads is here."""
        return not any(r.needed and r.status == NOT_CHECKED for r in self.refs)

    # ------------------------------------------------------------ adders
    def hub(self, field_name: str, value: str, kind: str, needed: bool, note: str = "") -> None:
        """A value that is a local path or a hub id of ``kind`` (dataset or model)."""
        if _looks_local(value):
            exists = Path(value).expanduser().exists()
            self.add(field_name, f"local {kind}", value, LOCAL if exists else NOT_CHECKED,
                     note if exists else (note or "not there yet: made by another job?"), needed=needed and not exists)
            return
        check_hub_id(value, field_name)
        cached = hub_cache_hit(value, kind)
        self.add(field_name, f"hub {kind}", value, CACHED if cached else NOT_CHECKED,
                 ("in the local Hugging Face cache" + (f", {note}" if note else "")) if cached else note, needed=needed)

    def model(self, field_name: str, value: str, bundled: bool, what: str = "model", note: str = "") -> None:
        """A model: bundled with the package (``bundled``), else a local path or hub id (not needed offline)."""
        if bundled:
            self.add(field_name, what, value, BUNDLED)
        else:
            self.hub(field_name, value, "model", needed=False, note=note)

    def teacher(self, field_name: str, teacher: Any, needed: bool = False) -> None:
        """A teacher config (``core.config``'s openai / vllm / embedded)."""
        kind = getattr(teacher, "kind", None)
        if kind == "openai":
            where = teacher.resolved_base_url() or "the OpenAI API"
            self.add(f"{field_name}.model", "API model", teacher.model, NOT_CHECKED, f"served by {where}, reached at run time")
        elif kind == "vllm":
            self.hub(f"{field_name}.model", teacher.model, "model", needed)
        elif kind == "embedded":
            self.add(field_name, "model", "embedded", BUNDLED)

    def rows(self, field_name: str, src: Any, needed: bool = True) -> None:
        """A ``core.config.RowLocation``: a hub dataset, a URL, or a file (read by the checks)."""
        if src.hf is not None:
            note = f"config {src.hf_config}, split {src.split}" if src.hf_config else f"split {src.split}"
            self.hub(f"{field_name}.hf", src.hf, "dataset", needed, note)
        elif src.path is not None and "://" in src.path:
            self.add(f"{field_name}.path", "URL", src.path, NOT_CHECKED, "downloaded at run time", needed=needed)
        elif src.path is not None:
            self.add(f"{field_name}.path", "file", src.path, LOCAL)  # read by the checks (a missing one is an error)


# ------------------------------------------------------------------ hub ids
def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or Path(value).expanduser().exists()


def check_hub_id(value: str, field_name: str) -> None:
    """ConfigError (one line) unless ``value`` is a Hugging Face repo id: ``name`` or ``owner/name``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as err:
        cause = str(err).splitlines()[0]
        raise ConfigError(f"{field_name}: {value!r} is neither a local path nor a Hugging Face hub id ({cause})") from None


def hub_cache_hit(repo_id: str, repo_type: str) -> bool:
    """Whether the local Hugging Face caches hold ``repo_id`` (hub cache; for datasets also the datasets cache)."""
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    if hub.is_dir():
        return True
    if repo_type == "dataset":
        cache = os.environ.get("HF_DATASETS_CACHE") or str(Path(constants.HF_HOME) / "datasets")
        return (Path(cache) / repo_id.replace("/", "___")).is_dir()
    return False


def seeds_here(job: Any, refs: References) -> list[Any]:
    """The job's seed sources that can be read here."""
    return [s for i, s in enumerate(job.seeds) if refs.here(f"seeds[{i}]")]


__all__ = ["BUNDLED", "CACHED", "LOCAL", "NOT_CHECKED", "Reference", "References", "check_hub_id",
           "hub_cache_hit", "seeds_here"]
