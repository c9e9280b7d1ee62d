"""Generation requests for a model under evaluation, and its samples.

One request per (problem, sample): a plain completion of the benchmark prompt
(``prompt: completion``) or the ``eval_instruct`` chat template
(``prompt: chat``), with the benchmark's stop sequences in completion mode. The
text benchmarks ask their own way: GSM8K through ``eval_gsm8k`` (chat) or its
``Question:/Answer:`` form (completion); IFEval its prompt as it is; MT-Bench its
first turn as a chat, and its second turn (:func:`second_turn_rows`) with the
model's first answer in the conversation, at FastChat's temperature per
category. Each benchmark's answer length is its harness's unless the job sets
one (``EvalBenchmarkConfig.answer_tokens``).
The mode is per (model, benchmark): a benchmark's own ``prompt`` overrides the
model's (the IF paper: MultiPL-E in completion mode, HumanEval/MBPP as chat).
Each sample has its own seed, derived from the job seed, the model, the task
and the sample index, so a rerun asks the same questions and is answered from
the run's call cache. Requests are the teacher stage's rows
(``teachers.rows.request_row``), answered through ``teachers.calls.TeacherCalls``:
the same stage actors and backends (OpenAI-compatible endpoint, vLLM engines,
the embedded server) as data generation.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from ray_pipeline.evaluation.config import CODE_BENCHMARKS, EvalBenchmarkConfig, EvalModelConfig, EvalSamplingConfig
from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.evaluation import postprocess
from ray_pipeline.evaluation.problems import LANGUAGE_TITLES, Problem
from ray_pipeline.prompts import load_template
from ray_pipeline.teachers.base import ChatRequest, ChatResult, Sampling
from ray_pipeline.teachers.rows import Answer, request_from_row, request_row, sampling_at

PREFIX = "gen"


def request_rows(
    problems: list[Problem],
    model: EvalModelConfig,
    sampling: EvalSamplingConfig,
    job_seed: int,
    model_name: str,
    cache: dict[str, ChatResult],
    modes: Mapping[str, str] | None = None,
    benchmarks: Mapping[str, EvalBenchmarkConfig] | None = None,
) -> list[dict[str, Any]]:
    """Teacher-stage rows for every (problem, sample), with the problem's JSON riding along.

    ``modes``: {benchmark: completion|chat} (``EvalJob.prompt_modes``); a benchmark not in it takes ``model.prompt``.
    ``benchmarks``: {name: its config}, for each benchmark's answer length and MT-Bench's temperatures.
    """
    rows = []
    for problem in problems:
        chat = prompt_mode(problem.benchmark, model, modes) == "chat"
        bench = (benchmarks or {}).get(problem.benchmark)
        for sample in range(sampling.n):
            seed = derived_seed(job_seed, model.label, problem.suite, problem.task_id, sample)
            request = first_request(problem, chat, model, _sampling(sampling, seed, problem, bench))
            rows.append({
                **request_row(request, model_name, cache),
                "model": model.label,
                "suite": problem.suite,
                "task_id": problem.task_id,
                "sample": sample,
                "problem": json.dumps(problem.to_json(), ensure_ascii=False),
            })
    return rows


def first_request(problem: Problem, chat: bool, model: EvalModelConfig, sampling: Sampling) -> ChatRequest:
    """How ``model`` is asked ``problem`` (MT-Bench: its first turn)."""
    if problem.benchmark in CODE_BENCHMARKS:
        if not chat:
            return ChatRequest.completion(postprocess.completion_prompt(problem), sampling)
        language = LANGUAGE_TITLES.get(problem.language, problem.language.capitalize())
        messages = load_template(model.template).render(language=language, prompt=problem.prompt.strip())
        return ChatRequest.make(messages, dataclasses.replace(sampling, stop=()))
    if problem.benchmark == "gsm8k":
        from ray_pipeline.evaluation import gsm8k

        if not chat:  # "Question: ...\nAnswer:", stopped at the next "Question:" (problem.stop)
            return ChatRequest.completion(gsm8k.completion_prompt(problem), sampling)
        return ChatRequest.make(gsm8k.messages(problem), dataclasses.replace(sampling, stop=()))
    if problem.benchmark == "ifeval":  # the prompt as it is, the only input (lm-eval's ifeval task)
        if not chat:
            return ChatRequest.completion(problem.prompt, sampling)
        return ChatRequest.make([{"role": "user", "content": problem.prompt}], sampling)
    if problem.benchmark == "mt_bench":
        from ray_pipeline.evaluation import mt_bench

        return ChatRequest.make(mt_bench.turn_messages(problem, 1, []), sampling)
    raise ValueError(f"unknown benchmark {problem.benchmark!r}")


def _sampling(sampling: EvalSamplingConfig, seed: int, problem: Problem, bench: EvalBenchmarkConfig | None) -> Sampling:
    """One request's sampling: the job's, the benchmark's answer length, MT-Bench's temperature per category."""
    base = sampling_at(sampling, seed, stop=problem.stop)
    if bench is None:
        return base
    changes: dict[str, Any] = {}
    if bench.answer_tokens is not None:
        changes["max_tokens"] = bench.answer_tokens
    if problem.benchmark == "mt_bench" and bench.category_temperatures:
        from ray_pipeline.evaluation.mt_bench import generation_temperature

        changes["temperature"] = generation_temperature(problem)
    return dataclasses.replace(base, **changes) if changes else base


def second_turn_rows(samples: list[dict[str, Any]], first: list[dict[str, Any]], model_name: str,
                     cache: dict[str, ChatResult]) -> list[dict[str, Any]]:
    """MT-Bench's second turn for each first-turn sample whose answer came: the conversation so far, the second
    question, at the first turn's sampling (``first``: the first turn's rows, in the samples' order)."""
    from ray_pipeline.evaluation import mt_bench

    rows = []
    for sample, row in zip(samples, first):
        if sample["suite"] != "mt_bench" or sample["generation_error"]:
            continue
        problem = Problem.from_json(json.loads(row["problem"]))
        sampling = request_from_row(row["messages"], row["sampling"]).sampling
        request = ChatRequest.make(mt_bench.turn_messages(problem, 2, [sample["answer"]]), sampling)
        rows.append({**request_row(request, model_name, cache),
                     **{k: row[k] for k in ("model", "suite", "task_id", "sample", "problem")}})
    return rows


def add_second_turn(samples: list[dict[str, Any]], answered: list[dict[str, Any]]) -> None:
    """Put each second-turn answer (``answered``: rows of :func:`second_turn_rows`) on its sample: ``answers``
    [first, second]; a second turn that failed leaves ``answers`` [first] and its error on the sample."""
    turn2 = {(r["task_id"], int(r["sample"])): Answer.read(r, PREFIX) for r in answered}
    for sample in samples:
        if sample["suite"] != "mt_bench":
            continue
        sample["answers"] = [] if sample["generation_error"] else [sample["answer"]]
        got = turn2.get((sample["task_id"], sample["sample"]))
        if got is None:
            continue
        if got.error:
            sample["generation_error"] = f"turn 2: {got.error}"
        else:
            sample["answers"].append(got.text)
            sample["completion_tokens"] += got.completion_tokens


def prompt_mode(benchmark: str, model: EvalModelConfig, modes: Mapping[str, str] | None = None) -> str:
    """completion or chat: the mode of ``model`` on ``benchmark``."""
    return (modes or {}).get(benchmark) or model.prompt


def to_sample(row: dict[str, Any], mode: str | Mapping[str, str]) -> dict[str, Any]:
    """A generated sample: the raw answer and the solution the executor will run.

    ``mode``: completion or chat, or {benchmark: mode} (the problem's benchmark picks it).
    """
    problem = Problem.from_json(json.loads(row["problem"]))
    if not isinstance(mode, str):
        mode = mode[problem.benchmark]
    got = Answer.read(row, PREFIX)
    answer, error = got.text, got.error
    if error or problem.benchmark not in CODE_BENCHMARKS:
        solution = ""  # a text benchmark reads the answer itself
    elif mode == "chat":
        solution = postprocess.solution_from_chat(problem, answer)
    else:
        solution = postprocess.solution_from_completion(problem, answer)
    return {
        "model": row["model"],
        "suite": row["suite"],
        "task_id": row["task_id"],
        "sample": int(row["sample"]),
        "answer": answer,
        "solution": solution,
        "generation_error": error,
        "finish_reason": got.finish_reason,
        "completion_tokens": got.completion_tokens,
        "problem": row["problem"],
    }
