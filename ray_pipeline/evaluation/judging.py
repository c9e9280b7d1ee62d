"""MT-Bench's single-answer grading: a judge model rates each turn of each answer 1-10.

The judge is a teacher like any other (``benchmarks[].judge``: an OpenAI-compatible model, GPT-4 by default as
in MT-Bench; the embedded model in tests), asked through ``teachers.calls.TeacherCalls`` with FastChat's judge
prompts (``prompts/mt_bench_*``; with the GPT-4 reference answer for math, reasoning and coding; the multi-turn
prompt for the second turn), at temperature 0 and FastChat's 2,048 judge tokens. Judge calls are cached in the
run directory like every call, so a rerun pays nothing. The rating is FastChat's ``[[n]]`` (else ``[n]``); a
judgment without one is recorded (``ratings`` None, its text kept) and left out of the means, as FastChat drops
its -1.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.evaluation.mt_bench import JUDGE_MAX_TOKENS, JUDGE_TEMPERATURE, judge_messages, score
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.teachers.base import ChatRequest, ChatResult, Sampling
from ray_pipeline.teachers.rows import Answer, request_row

PREFIX = "judge"
#: FastChat's judge settings (common.py: chat_completion_openai at temperature 0, max_tokens 2048)
JUDGE_SAMPLING = Sampling(temperature=JUDGE_TEMPERATURE, top_p=1.0, max_tokens=JUDGE_MAX_TOKENS)


def judge_rows(samples: list[dict[str, Any]], judge_name: str, cache: dict[str, ChatResult], job_seed: int,
               max_tokens: int = JUDGE_MAX_TOKENS) -> list[dict[str, Any]]:
    """One judge request per answered turn of every MT-Bench sample (``max_tokens``: the judge's answer length)."""
    rows = []
    for sample in samples:
        if sample["suite"] != "mt_bench":
            continue
        problem = Problem.from_json(json.loads(sample["problem"]))
        answers = sample.get("answers") or []
        for turn in range(1, len(answers) + 1):
            template, messages = judge_messages(problem, turn, answers[:turn])
            seed = derived_seed(job_seed, "judge", sample["model"], problem.task_id, sample["sample"], turn)
            request = ChatRequest.make(messages, dataclasses.replace(JUDGE_SAMPLING, seed=seed, max_tokens=max_tokens))
            rows.append({**request_row(request, judge_name, cache), "model": sample["model"], "suite": "mt_bench",
                         "task_id": sample["task_id"], "sample": sample["sample"], "turn": turn,
                         "judge_template": template})
    return rows


def rated_samples(samples: list[dict[str, Any]], judged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored rows of the MT-Bench samples: ``ratings`` per turn (None: not answered, or no rating parsed),
    the judge's texts, ``status`` judged / judge_failed / generation_error."""
    by_sample: dict[tuple[str, str, int], dict[int, Answer]] = {}
    for row in judged:
        by_sample.setdefault((row["model"], row["task_id"], int(row["sample"])), {})[int(row["turn"])] = \
            Answer.read(row, PREFIX)
    scored = []
    for sample in samples:
        if sample["suite"] != "mt_bench":
            continue
        problem = Problem.from_json(json.loads(sample["problem"]))
        turns = by_sample.get((sample["model"], sample["task_id"], int(sample["sample"])), {})
        ratings: list[float | None] = []
        judgments: list[str] = []
        for turn in (1, 2):
            got = turns.get(turn)
            if got is None:  # the turn was not answered, so not judged
                judgments.append("")
                ratings.append(None)
                continue
            judgments.append(got.text or f"judge error: {got.error}")
            ratings.append(score(problem, None if got.error else got.text, turn=turn)["rating"])
        status = ("generation_error" if sample["generation_error"] else
                  "judged" if all(r is not None for r in ratings) else "judge_failed")
        scored.append({
            **{k: sample[k] for k in ("model", "suite", "task_id", "sample", "generation_error", "finish_reason")},
            "category": problem.meta.get("category", ""), "ratings": ratings, "judgments": judgments,
            "passed": False, "status": status,
        })
    return scored
