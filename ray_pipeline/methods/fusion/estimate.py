"""What an Instruction Fusion job will cost (``teachers.estimate``), from its job file and its seed pool.

* **fusion calls**: the fusion loop run in expectation (``teachers.estimate.expected_attempts``: it draws until
  M pass and no further, so M / ``estimate.pass_rate`` calls), at most the attempt budget and the allowed pairs;
* **responses**: one per expected valid fusion, at most M;
* **prompt tokens**: the fusion template rendered on the run's own first :data:`SAMPLE_PAIRS` pairs (the job
  seed's draws), the response template on a fused instruction of the expected length;
* **completion tokens**: a fused instruction :data:`FUSED_INSTRUCTION_GROWTH` times a seed's length, its response
  :data:`FUSED_RESPONSE_GROWTH` times a seed's answer (the IF paper's Table 1; the share of ``max_tokens`` when
  the seeds carry no answers), each at most its ``max_tokens``.
"""

from __future__ import annotations

import math
from typing import Any

from ray_pipeline.core.seeds import seed_prompt
from ray_pipeline.methods.fusion.config import InstructionFusionJob
from ray_pipeline.methods.fusion.pairing import PairSampler
from ray_pipeline.prompts import load_template
from ray_pipeline.teachers.estimate import (
    Assumptions,
    Capacity,
    Estimate,
    expected_attempts,
    mean,
    phase,
    prompt_tokens,
    text_tokens,
)

#: IF Table 1 (CodeLlama tokens): H_PI's fused instructions average 222.4 tokens and their responses 712.0,
#: against 185.4 and 441.7 for its seeds (ECP, the Python part of evol-codealpaca-v1)
FUSED_INSTRUCTION_GROWTH = 222.4 / 185.4
FUSED_RESPONSE_GROWTH = 712.0 / 441.7
#: pairs whose fusion prompt is rendered to measure it: the run's own first draws
SAMPLE_PAIRS = 256


def fusion_estimate(job: InstructionFusionJob, seeds: list[dict[str, Any]] | None,
                    notes: tuple[str, ...] = ()) -> Estimate:
    """The estimate of ``job`` over the seed records ``seeds`` (``SeedPool.records``); None: no seed is here,
    so calls only (tokens, dollars and time need the seeds' text)."""
    assume = Assumptions.of(job.estimate)
    teacher = Capacity.of(job.teacher, job.ray)
    notes += teacher.notes(assume)
    target, budget = job.fusion.num_instructions, job.fusion.attempt_budget
    fusion_tpl, response_tpl = load_template(job.fusion.template), load_template(job.response.template)
    fusion_max, response_max = job.fusion.sampling.max_tokens, job.response.sampling.max_tokens

    fusion_prompt = fused = response_prompt = response_prompt_max = answer = None
    available = None
    if seeds is None:
        notes += ("tokens, dollars and time need the seeds' text, and no seed source is here: calls only",)
    else:
        sampler = PairSampler([s["language"] for s in seeds], seed=job.seed, cross_language=job.fusion.cross_language)
        available = sampler.total
        if available < budget:
            notes += (f"{available} seed pairs are allowed: fewer than the attempt budget ({budget})",)
        pairs = sampler.draw_many(min(SAMPLE_PAIRS, available))
        fusion_prompt = mean(prompt_tokens(fusion_tpl.render(instruction_1=seed_prompt(seeds[i]),
                                                             instruction_2=seed_prompt(seeds[j]))) for i, j in pairs)
        seed_length = mean(text_tokens(seed_prompt(s)) for s in seeds)
        fused = assume.completion(fusion_max, None if seed_length is None else FUSED_INSTRUCTION_GROWTH * seed_length)
        bare = prompt_tokens(response_tpl.render(instruction=""))
        response_prompt, response_prompt_max = bare + fused, bare + fusion_max
        answers = mean(text_tokens(s["output"]) for s in seeds if s.get("output"))
        answer = assume.completion(response_max, None if answers is None else FUSED_RESPONSE_GROWTH * answers)
        if fusion_prompt is None:  # fewer than two seeds: no pair to fuse
            fusion_prompt = 0.0

    calls, passed = expected_attempts(target, assume.pass_rate, budget, available)
    calls_max = budget if available is None else min(budget, available)
    responses = min(target, math.floor(passed + 1e-9))
    phases = (
        phase("fusion", teacher, assume, calls=calls, calls_max=calls_max, prompt=fusion_prompt, completion=fused,
              max_tokens=fusion_max),
        phase("response", teacher, assume, calls=responses, calls_max=min(target, calls_max), prompt=response_prompt,
              completion=answer, max_tokens=response_max, prompt_max=response_prompt_max),
    )
    return Estimate(phases, assume, notes)


__all__ = ["FUSED_INSTRUCTION_GROWTH", "FUSED_RESPONSE_GROWTH", "SAMPLE_PAIRS", "fusion_estimate"]
