"""What a job refers to outside itself, and what ``fusion validate`` can check of it offline.

A job names hub datasets (seeds, SFT sources, decontamination and evaluation
benchmarks), hub models (teacher, scorer, SFT base, models under evaluation),
run directories of other jobs, URLs and API models. Offline, validate checks
what it can: a local path, a bundled model, the syntax of a hub id
(``owner/name``) and whether the hub id is in the local Hugging Face cache.
What it cannot check (a hub id that is not cached, an API model, a run that
has not happened yet) is listed as "not checked offline" instead of failing;
a malformed hub id is an error.

:func:`check_references` lists the references; :func:`validate_job` is the
whole ``fusion validate``: the kind's full preflight when every input it reads
is here, else the same checks on the inputs that are here, the rest listed.
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

    @property
    def complete(self) -> bool:
        """Every input the kind's preflight reads is here."""
        return not any(r.needed and r.status == NOT_CHECKED for r in self.refs)


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


def _hub(refs: References, field_name: str, value: str, kind: str, needed: bool, note: str = "") -> None:
    """A value that is a local path or a hub id of ``kind`` (dataset or model)."""
    if _looks_local(value):
        exists = Path(value).expanduser().exists()
        refs.add(field_name, f"local {kind}", value, LOCAL if exists else NOT_CHECKED,
                 note if exists else (note or "not there yet: made by another job?"), needed=needed and not exists)
        return
    check_hub_id(value, field_name)
    cached = hub_cache_hit(value, kind)
    refs.add(field_name, f"hub {kind}", value, CACHED if cached else NOT_CHECKED,
             ("in the local Hugging Face cache" + (f", {note}" if note else "")) if cached else note, needed=needed)


# ------------------------------------------------------------ per job kind
def _teacher(refs: References, field_name: str, teacher: Any, needed: bool = False) -> None:
    kind = getattr(teacher, "kind", None)
    if kind == "openai":
        where = teacher.resolved_base_url() or "the OpenAI API"
        refs.add(f"{field_name}.model", "API model", teacher.model, NOT_CHECKED, f"served by {where}, reached at run time")
    elif kind == "vllm":
        _hub(refs, f"{field_name}.model", teacher.model, "model", needed)
    elif kind == "embedded":
        refs.add(field_name, "model", "embedded", BUNDLED)


def _embedding(refs: References, field_name: str, model: str) -> None:
    from ray_pipeline.analysis.embeddings import BUNDLED_ALIASES

    if model in BUNDLED_ALIASES:
        refs.add(field_name, "embedding model", model, BUNDLED)
    else:
        _hub(refs, field_name, model, "model", needed=False)


def _row_location(refs: References, field_name: str, src: Any, needed: bool = True) -> None:
    if src.hf is not None:
        note = f"config {src.hf_config}, split {src.split}" if src.hf_config else f"split {src.split}"
        _hub(refs, f"{field_name}.hf", src.hf, "dataset", needed, note)
    elif src.path is not None and "://" in src.path:
        refs.add(f"{field_name}.path", "URL", src.path, NOT_CHECKED, "downloaded at run time", needed=needed)
    elif src.path is not None:
        refs.add(f"{field_name}.path", "file", src.path, LOCAL)  # read by the checks (a missing one is an error)


def _evalplus_cached(dataset: str) -> bool:
    try:
        from evalplus.data.utils import get_dataset_metadata

        if dataset == "humaneval":
            from evalplus.data.humaneval import HUMANEVAL_PLUS_VERSION as version

            _, path = get_dataset_metadata("HumanEvalPlus", version, False, False)
        else:
            from evalplus.data.mbpp import MBPP_PLUS_VERSION as version

            _, path = get_dataset_metadata("MbppPlus", version, False, False)
        return os.path.isfile(path)
    except Exception:  # noqa: BLE001 - an evalplus without these helpers: not cached as far as we know
        return False


def check_references(job: Any) -> References:
    """Every external reference of a job and whether it is here; ConfigError for a malformed hub id."""
    refs = References()
    for i, src in enumerate(getattr(job, "seeds", None) or []):
        _row_location(refs, f"seeds[{i}]", src)
    if hasattr(job, "teacher"):
        _teacher(refs, "teacher", job.teacher)
    if job.kind == "instruction_fusion" and getattr(job, "diversity", False) and hasattr(job, "embedding"):
        _embedding(refs, "embedding.model", job.embedding.model)
    if job.kind == "tacie":
        _embedding(refs, "embedding.model", job.embedding.model)
        if job.scorer.model not in (None, "embedded"):
            _hub(refs, "scorer.model", job.scorer.model, "model", needed=False, note=f"{job.scorer.backend} backend")
        else:
            refs.add("scorer.model", "model", "embedded", BUNDLED)
        from ray_pipeline.core.benchmark_data import locate

        for i, bench in enumerate(job.filters.decontaminate):
            where = f"filters.decontaminate[{i}]"
            found = locate(bench.name)  # a named benchmark's variable or hub dataset
            if bench.path:
                refs.add(f"{where}.path", "file", bench.path, LOCAL)
            elif bench.hf:
                _hub(refs, f"{where}.hf", bench.hf, "dataset", True, f"split {bench.split}")
            elif found is not None and found.path is not None:
                refs.add(where, "file", found.path, LOCAL, f"${found.env}")
            elif found is not None and found.hub:
                _hub(refs, where, found.hub, "dataset", True,
                     f"{bench.name} prompts" + (f", config {found.config}" if found.config else ""))
    if job.kind == "sft":
        from ray_pipeline.training.data import RUN_SFT_FILE

        model = job.model.path
        if model == "embedded":
            refs.add("model.path", "model", model, BUNDLED)
        else:
            _hub(refs, "model.path", model, "model", needed=True)
        for i, src in enumerate(job.data.sources):
            if src.run is not None:
                run = Path(src.run).expanduser()
                here = (run / RUN_SFT_FILE).is_file()
                refs.add(f"data.sources[{i}].run", "run directory", src.run, LOCAL if here else NOT_CHECKED,
                         "" if here else "made by its data job, which has not run here", needed=True)
            else:
                _row_location(refs, f"data.sources[{i}]", src)
    if job.kind == "eval":
        from ray_pipeline.core.benchmark_data import NAMED_BENCHMARKS

        for i, model in enumerate(job.models):
            _teacher(refs, f"models[{i}].backend", model.backend)
        for i, bench in enumerate(job.benchmarks):
            where = f"benchmarks[{i}]"
            env = NAMED_BENCHMARKS[bench.name].env
            if bench.path:
                refs.add(f"{where}.path", "file", bench.path, LOCAL)
            elif env and os.environ.get(env):
                refs.add(where, "file", os.environ[env], LOCAL, f"${env}")
            elif bench.name == "multiple":
                _hub(refs, where, NAMED_BENCHMARKS["multiple"].hub, "dataset", True, "MultiPL-E prompts")
            elif _evalplus_cached(bench.name):
                refs.add(where, "benchmark data", f"evalplus {bench.name}", CACHED, "in evalplus's cache")
            else:
                refs.add(where, "benchmark data", f"evalplus {bench.name} release", NOT_CHECKED,
                         f"downloaded at run time; or set {env}", needed=True)
    return refs


# ---------------------------------------------------------------- validate
def _templates(job: Any) -> dict[str, Any]:
    """Every prompt template the job names (``*template`` fields holding ``name@version``), loaded, by field."""
    from ray_pipeline.prompts import load_template

    found: dict[str, Any] = {}

    def walk(data: Any, where: str) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                here = f"{where}.{key}" if where else key
                if key.endswith("template") and isinstance(value, str) and "@" in value and "/" not in value:
                    found[here] = load_template(value)
                else:
                    walk(value, here)
        elif isinstance(data, list):
            for n, value in enumerate(data):
                walk(value, f"{where}[{n}]")

    walk(job.model_dump(), "")
    return found


def _partial(job: Any, refs: References) -> dict[str, Any]:
    """The checks that need only what is here: templates, and the inputs that are local or cached."""
    from ray_pipeline.core.seeds import load_seeds

    from ray_pipeline.prompts import not_from_papers

    templates = _templates(job)
    out: dict[str, Any] = {"templates": {k: t.ref for k, t in templates.items()},
                           "templates_not_from_papers": not_from_papers(templates)}
    if job.kind in ("instruction_fusion", "tacie"):
        here = [s for i, s in enumerate(job.seeds) if not refs.missing(f"seeds[{i}].hf") and not refs.missing(f"seeds[{i}].path")]
        out["seeds"] = load_seeds(here, job.seed).summary() if here else None
    if job.kind == "tacie":
        from ray_pipeline.methods.tacie.filters import load_benchmark_prompts

        out["decontaminate"] = {b.name: len(load_benchmark_prompts(b)) for i, b in enumerate(job.filters.decontaminate)
                                if not refs.missing(f"filters.decontaminate[{i}]")
                                and not refs.missing(f"filters.decontaminate[{i}].hf")}
    if job.kind == "sft":
        from ray_pipeline.core.models import check_causal_lm, resolve_model
        from ray_pipeline.training.data import load_sft_rows

        if not refs.missing("model.path"):
            resolved = resolve_model(job.model.path, job.model.chat_template, "model.path", "model.chat_template")
            check_causal_lm(resolved.path, "model.path")
            out["model"] = resolved.path
        here = [s for i, s in enumerate(job.data.sources)
                if not any(refs.missing(f"data.sources[{i}].{k}") for k in ("run", "hf", "path"))]
        if here:
            rows, mix = load_sft_rows(here, job.seed)
            out["data"] = {"rows": len(rows), "sources": [m.to_dict() for m in mix]}
        out["gradient_accumulation_steps"] = job.gradient_accumulation_steps
    if job.kind == "eval":
        from ray_pipeline.evaluation.benchmarks import load_suites

        here = [b for i, b in enumerate(job.benchmarks)
                if not refs.missing(f"benchmarks[{i}]") and not refs.missing(f"benchmarks[{i}].path")]
        out["suites"] = {s.name: {"tasks": len(s.problems)} for s in load_suites(here)} if here else {}
        out["prompt_modes"] = {m.label: job.prompt_modes(m) for m in job.models}
    return out


def validate_job(job: Any, full: Any) -> dict[str, Any]:
    """``fusion validate``: ``full(job)`` (the kind's preflight report) when every input it reads is here,
    else the checks of what is here; both with what was and was not checked offline."""
    refs = check_references(job)
    report = {"job": job.name, "kind": job.kind}
    if refs.complete:
        report.update(full(job))
        report["offline_check"] = "complete"
    else:
        report.update(_partial(job, refs))
        report["offline_check"] = "partial: the inputs not here were skipped"
    report["checked_offline"] = refs.checked
    report["not_checked_offline"] = refs.not_checked
    return report
