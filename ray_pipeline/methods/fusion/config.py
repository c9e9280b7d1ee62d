"""The Instruction Fusion job file (``kind: instruction_fusion``): how many fused instructions, with which
templates, and the diversity report. Shared parts (seeds, teacher, Ray) are in ``core.config``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ray_pipeline.core.config import DataJob, EmbeddingConfig, ResponseConfig, SamplingConfig, StrictModel


class FusionConfig(StrictModel):
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


class InstructionFusionJob(DataJob):
    kind: Literal["instruction_fusion"]
    fusion: FusionConfig
    response: ResponseConfig = Field(default_factory=ResponseConfig)
    diversity: bool = Field(
        True, description="diversity U (eq. 8-10) of the seeds, the fused instructions and both in the manifest, "
        "as the IF paper's analysis (section 3); embeds every seed and fused instruction",
    )
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
