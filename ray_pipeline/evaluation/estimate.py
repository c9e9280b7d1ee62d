"""What an eval job's model and judge calls will cost (``teachers.estimate``), from its benchmarks' problems.

Per model: a request per (problem, sample) of every suite scored here, rendered as the run asks it
(``generation.first_request``: its prompt tokens are counted, not assumed), each answer the completion share of
the benchmark's answer length; MT-Bench's second turn per first one, the first answer in its prompt. Per
MT-Bench sample: two judge calls (one a turn), FastChat's judge prompt with the question, the reference and the
answers, at the judge's price (GPT-4 unless the job names another). Every call is expected to be answered.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from ray_pipeline.evaluation.config import EvalJob, EvalModelConfig
from ray_pipeline.evaluation.generation import first_request, prompt_mode
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.teachers.estimate import (
    Assumptions,
    Capacity,
    Estimate,
    Phase,
    approx_tokens,
    mean,
    merged,
    phase,
    prompt_tokens,
)
from ray_pipeline.teachers.pricing import cost_usd, price_for
from ray_pipeline.teachers.rows import sampling_at


def _request_tokens(problem: Problem, chat: bool, model: EvalModelConfig, job: EvalJob) -> int:
    request = first_request(problem, chat, model, sampling_at(job.sampling, 0, stop=problem.stop))
    return approx_tokens(request.text_length(), len(request.messages))


def _with_reference(problem: Problem) -> Problem:
    """The problem as the judge sees it; a reference left empty where the data carries none (the run stops there)."""
    if problem.meta.get("reference"):
        return problem
    return dataclasses.replace(problem, meta={**problem.meta, "reference": ["", ""]})


def eval_estimate(job: EvalJob, problems: Iterable[Problem], notes: tuple[str, ...] = ()) -> Estimate:
    """The estimate of ``job`` over ``problems`` (those of the suites scored here)."""
    from ray_pipeline.evaluation import mt_bench

    assume = Assumptions.of(job.estimate)
    benchmarks = {b.name: b for b in job.benchmarks}
    by_benchmark: dict[str, list[Problem]] = {}
    for problem in problems:
        by_benchmark.setdefault(problem.benchmark, []).append(problem)
    n = job.sampling.n

    def answer_length(name: str) -> int:
        return benchmarks[name].answer_tokens or job.sampling.max_tokens

    phases: list[Phase] = []
    judged: list[Phase] = []
    for model in job.models:
        teacher = Capacity.of(model.backend, job.ray)
        notes += tuple(note for note in teacher.notes(assume) if note not in notes)
        modes = job.prompt_modes(model)
        parts = []
        for name, group in by_benchmark.items():
            chat = prompt_mode(name, model, modes) == "chat"
            length = answer_length(name)
            answer = assume.completion(length)
            parts.append(phase(name, teacher, assume, calls=n * len(group), calls_max=n * len(group),
                               prompt=mean(_request_tokens(p, chat, model, job) for p in group), completion=answer,
                               max_tokens=length))
            if name != "mt_bench":
                continue
            second = mean(prompt_tokens(mt_bench.turn_messages(p, 2, [""])) for p in group)
            parts.append(phase("turn 2", teacher, assume, calls=n * len(group), calls_max=n * len(group),
                               prompt=second + answer, completion=answer, max_tokens=length,
                               prompt_max=second + length))
            bench = benchmarks[name]
            judge = Capacity.of(bench.judge_config(), job.ray)
            verdict = assume.completion(bench.judge_max_tokens)
            for turn in (1, 2):
                bare = mean(prompt_tokens(mt_bench.judge_messages(_with_reference(p), turn, [""] * turn)[1])
                            for p in group)
                judged.append(phase("judge", judge, assume, calls=n * len(group), calls_max=n * len(group),
                                    prompt=bare + turn * answer, completion=verdict, max_tokens=bench.judge_max_tokens,
                                    prompt_max=bare + turn * length))
        if parts:
            phases.append(merged(f"generation:{model.label}", parts))
    if judged:
        phases.append(merged("judge", judged))
    return Estimate(tuple(phases), assume, notes)


def actual_spend(job: EvalJob, generation: dict[str, Any], judging: dict[str, Any] | None
                 ) -> tuple[dict[str, int], dict[str, int], float]:
    """What a run spent, as ``teachers.estimate.beside_actual`` takes it: answered calls per phase (cache hits
    included), tokens, dollars at each model's and the judge's price."""
    prices = {m.label: getattr(m.backend, "price", None) for m in job.models}
    calls, tokens, usd = {}, {"prompt": 0, "completion": 0}, 0.0
    spent = [(f"generation:{label}", g, price_for(g["model"], prices.get(label))) for label, g in generation.items()]
    if judging is not None:
        judge = next(b for b in job.benchmarks if b.name == "mt_bench").judge_config()
        spent.append(("judge", judging, price_for(judging["judge"], getattr(judge, "price", None))))
    for name, record, price in spent:
        calls[name] = record["calls"] + record["cache_hits"]
        tokens["prompt"] += record["prompt_tokens"]
        tokens["completion"] += record["completion_tokens"]
        usd += cost_usd(price, record["prompt_tokens"], record["completion_tokens"])
    return calls, tokens, usd


__all__ = ["actual_spend", "eval_estimate"]
