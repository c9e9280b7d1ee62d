"""The SFT job file (``kind: sft``): the model, the data mix (with selection by lineage), the recipe
(``recipes.yaml`` presets), Ray Train scaling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from ray_pipeline.core.config import JobCommon, RowLocation, StrictModel, relative_to_job


class SFTModelConfig(StrictModel):
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


class SFTSelect(StrictModel):
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


class SFTDataConfig(StrictModel):
    sources: list[SFTDataSource] = Field(min_length=1)
    format: Literal["chat", "alpaca"] = Field("chat", description="chat: the tokenizer's chat template; alpaca: the Alpaca prompt")
    alpaca_template: str = "sft_alpaca@v1"
    system_prompt: str | None = Field(None, description="system message added to every chat example")
    max_seq_len: int = Field(2048, gt=8, description="longer examples are cut (counted and reported)")
    packing: bool = Field(False, description="pack several examples into each max_seq_len sequence")


class LoRAConfig(StrictModel):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


def _recipes() -> dict[str, dict[str, Any]]:
    recipes = yaml.safe_load((Path(__file__).with_name("recipes.yaml")).read_text(encoding="utf-8"))
    return {str(k): v for k, v in recipes.items()}


class TrainingConfig(StrictModel):
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


class ScalingConfig(StrictModel):
    """Ray Train workers: one process (and one GPU, with use_gpu) per worker."""

    num_workers: int = Field(1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0, description="with use_gpu")
    storage_path: str | None = Field(
        None, description="Ray Train checkpoints (default <run dir>/train); shared storage (NFS, s3://) for multi-node"
    )


class SFTRayConfig(StrictModel):
    address: str | None = Field(None, description="Ray address; default $RAY_ADDRESS, else a local Ray")


class SFTJob(JobCommon):
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

    def resolve_paths(self, base: Path) -> None:
        for src in self.data.sources:
            src.path = relative_to_job(base, src.path, must_exist=False)
            if src.hf and (base / src.hf).exists():
                src.hf = relative_to_job(base, src.hf, must_exist=True)
        self.model.path = relative_to_job(base, self.model.path, must_exist=True)
        self.model.chat_template = relative_to_job(base, self.model.chat_template, must_exist=False)

    @property
    def gradient_accumulation_steps(self) -> int:
        t = self.training
        return t.global_batch_size // (t.per_device_batch_size * self.scaling.num_workers)
