"""Generation requests for a model under evaluation, and its samples.

One request per (problem, sample): a plain completion of the benchmark prompt
(``prompt: completion``) or the ``eval_instruct`` chat template
(``prompt: chat``), with the benchmark's stop sequences in completion mode.
The mode is per (model, benchmark): a benchmark's own ``prompt`` overrides the
model's (the IF paper: MultiPL-E in completion mode, HumanEval/MBPP as chat).
Each sample has its own seed, derived from the job seed, the model, the task
and the sample index, so a rerun asks the same questions and is answered from
the run's call cache. Requests are the teacher stage's rows
(``teachers.rows.request_row``), answered through ``teachers.calls.TeacherCalls``:
the same Ray Data stage and backends (OpenAI-compatible endpoint, in-process
vLLM, the embedded server) as data generation.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ray_pipeline.evaluation.config import EvalModelConfig, EvalSamplingConfig
from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.evaluation import postprocess
from ray_pipeline.evaluation.problems import LANGUAGE_TITLES, Problem
from ray_pipeline.prompts import load_template
from ray_pipeline.teachers.base import ChatRequest, ChatResult
from ray_pipeline.teachers.rows import Answer, request_row, sampling_at

PREFIX = "gen"


def request_rows(
    problems: list[Problem],
    model: EvalModelConfig,
    sampling: EvalSamplingConfig,
    job_seed: int,
    model_name: str,
    cache: dict[str, ChatResult],
    modes: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Teacher-stage rows for every (problem, sample), with the problem's JSON riding along.

    ``modes``: {benchmark: completion|chat} (``EvalJob.prompt_modes``); a benchmark not in it takes ``model.prompt``.
    """
    template = None
    rows = []
    for problem in problems:
        chat = prompt_mode(problem.benchmark, model, modes) == "chat"
        if chat and template is None:
            template = load_template(model.template)
        if not chat:
            prompt = postprocess.completion_prompt(problem)
        else:
            language = LANGUAGE_TITLES.get(problem.language, problem.language.capitalize())
            messages = template.render(language=language, prompt=problem.prompt.strip())
        for sample in range(sampling.n):
            seed = derived_seed(job_seed, model.label, problem.suite, problem.task_id, sample)
            if not chat:
                request = ChatRequest.completion(prompt, sampling_at(sampling, seed, stop=problem.stop))
            else:
                request = ChatRequest.make(messages, sampling_at(sampling, seed, stop=()))
            rows.append({
                **request_row(request, model_name, cache),
                "model": model.label,
                "suite": problem.suite,
                "task_id": problem.task_id,
                "sample": sample,
                "problem": json.dumps(problem.to_json(), ensure_ascii=False),
            })
    return rows


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
    if error:
        solution = ""
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
