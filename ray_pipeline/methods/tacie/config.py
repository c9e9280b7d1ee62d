"""The TaCIE job file (``kind: tacie``): seed collection, decomposition, the uncertainty scorer, evolution
rounds (Algorithm 1's amounts) and the filters. Shared parts (seeds, teacher, Ray) are in ``core.config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ray_pipeline.core.config import (
    DataJob,
    EmbeddingConfig,
    ResponseConfig,
    SamplingConfig,
    StrictModel,
    relative_to_job,
)


class CollectionConfig(StrictModel):
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


class DecompositionConfig(StrictModel):
    template: str = Field("tacie_decompose@v2", description="tacie_decompose@v2: Appendix B.1; @v1: this project's")
    # B.1 copies code and passages into the background verbatim
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=1024))


class ScorerConfig(StrictModel):
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


class EvolutionConfig(StrictModel):
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


class BenchmarkSource(StrictModel):
    """Benchmark prompts to decontaminate against: a named benchmark, a file, or a hub dataset."""

    name: str = Field(description="humaneval, mbpp, gsm8k, or any label for a custom file")
    path: str | None = Field(None, description="JSON/JSONL(.gz) file (default for the named ones: the evalplus override variables)")
    hf: str | None = None
    hf_config: str | None = None
    split: str = "test"
    field: str | None = Field(None, description="text field (default: prompt, question, text)")


class FilterConfig(StrictModel):
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


class TaCIEJob(DataJob):
    kind: Literal["tacie"]
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    collection: CollectionConfig = Field(default_factory=CollectionConfig)
    decomposition: DecompositionConfig = Field(default_factory=DecompositionConfig)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    response: TaCIEResponseConfig = Field(default_factory=lambda: TaCIEResponseConfig())
    filters: FilterConfig = Field(default_factory=FilterConfig)

    def resolve_paths(self, base: Path) -> None:
        super().resolve_paths(base)
        for bench in self.filters.decontaminate:
            bench.path = relative_to_job(base, bench.path, must_exist=False)
        self.scorer.model = relative_to_job(base, self.scorer.model, must_exist=True)
        self.scorer.chat_template = relative_to_job(base, self.scorer.chat_template, must_exist=False)
        self.embedding.model = relative_to_job(base, self.embedding.model, must_exist=True)
