"""Scoring the text benchmarks whose verdict is a rule over the answer: GSM8K (the final number, exact match)
and IFEval (lm-eval's instruction checkers, strict and loose).

A scored row has the sample's identity, ``passed`` (GSM8K: the number is the reference's; IFEval: every
instruction of the prompt followed, strict), ``status`` and the benchmark's own verdict fields (GSM8K's
``extracted`` and ``reference``; IFEval's ``loose_passed`` and each instruction's verdict). Answers whose
generation failed are scored as the benchmark scores a missing answer (a fail), with the error kept.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ray_pipeline.evaluation.config import EvalBenchmarkConfig
from ray_pipeline.evaluation.problems import Problem

#: the benchmarks scored here (MT-Bench is judged: ``evaluation.judging``; code runs: ``execution_stage``)
CHECKED = ("gsm8k", "ifeval")


def check_samples(samples: list[dict[str, Any]], benchmarks: Mapping[str, EvalBenchmarkConfig]) -> list[dict[str, Any]]:
    """Scored rows of the GSM8K and IFEval samples among ``samples`` (the others are not returned)."""
    scored = []
    for sample in samples:
        if sample["suite"] not in CHECKED:
            continue
        problem = Problem.from_json(json.loads(sample["problem"]))
        answer = None if sample["generation_error"] else sample["answer"]
        if problem.benchmark == "gsm8k":
            from ray_pipeline.evaluation import gsm8k

            verdict = gsm8k.score(problem, answer, pattern=benchmarks["gsm8k"].answer_pattern)
        else:
            from ray_pipeline.evaluation import ifeval

            verdict = ifeval.score(problem, answer)
        scored.append({
            **{k: sample[k] for k in ("model", "suite", "task_id", "sample", "generation_error", "finish_reason")},
            **verdict,
            "passed": bool(verdict["passed"]),
        })
    return scored
