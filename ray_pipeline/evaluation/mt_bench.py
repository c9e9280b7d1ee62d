"""MT-Bench (Zheng et al., 2023): 80 two-turn questions, each answer graded 1-10 by a judge model.

This module is FastChat's ``fastchat/llm_judge`` (lm-sys/FastChat at commit
0e6d3e4beaab66f4d3f93db72541a4abab8af28d, Apache-2.0) in single-answer grading
mode, as pure functions (no Ray, no model calls; the eval job makes the calls):

- answers (``gen_model_answer.py``): turn 1 asks the first question; turn 2 sees
  the model's first answer and asks the second (:func:`turn_messages`); sampled at
  the question's category's temperature (:data:`CATEGORY_TEMPERATURE`, greedy at
  0), at most :data:`MAX_NEW_TOKENS` new tokens.
- judging (``gen_judgment.py --mode single``, ``common.run_judge_single``): turn 1
  with ``single-v1``, turn 2 with ``single-v1-multi-turn`` (the judge sees both turns
  and grades the second answer); questions of :data:`NEED_REF_CATS` with the
  ``single-math-v1`` variants and the GPT-4 reference answer
  (:func:`judge_messages`; the four prompts are templates in ``prompts/``, see
  :data:`JUDGE_TEMPLATES`). The judge is asked at temperature 0 with at most
  :data:`JUDGE_MAX_TOKENS` tokens; GPT-4 by default (:data:`JUDGE_MODEL`).
- the rating (``common.one_score_pattern`` and its backup): :func:`parse_rating`;
  a judgment without one is FastChat's -1, recorded here as a failure.
- the numbers (``show_result.py --mode single``): :func:`summarise`, means over
  the parsed ratings, failures left out.

Data (:func:`load_problems`): FastChat's ``question.jsonl`` (``question_id``,
``category``, ``turns``) found by ``core.benchmark_data`` (a path, a directory
holding ``question.jsonl``, ``$FUSION_MT_BENCH_PATH``, else the hub copy
``HuggingFaceH4/mt_bench_prompts``, whose rows are ``prompt`` [2 turns],
``category``, ``prompt_id``, ``reference``, in FastChat's order without the
question id). The GPT-4 reference answers are FastChat's
``reference_answer/gpt-4.jsonl``: beside the question file in FastChat's layout
(``reference_answer/gpt-4.jsonl``) or in ``../shared``'s
(``reference_answer_gpt-4.jsonl``), or the ``references`` path. A question's own
``reference`` field (the hub copy's ``reference`` column) is a short human note
FastChat's judging never reads; it is not the reference answer and is not used.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ray_pipeline.core import benchmark_data
from ray_pipeline.core.errors import EvaluationError, first_line, typed_line
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.prompts import load_template

BENCHMARK = "mt_bench"
#: the categories whose questions are judged against a reference answer (common.NEED_REF_CATS)
NEED_REF_CATS = ("math", "reasoning", "coding")
#: MT-Bench's categories in FastChat's question order: ten questions each, ids 81-160
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
FIRST_QUESTION_ID = 81
#: the answer's sampling temperature per category (common.temperature_config); 0 means greedy
CATEGORY_TEMPERATURE: dict[str, float] = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
#: a category not in the table (gen_model_answer.py / gen_api_answer.py)
DEFAULT_TEMPERATURE = 0.7
#: new tokens per answer (gen_model_answer.py --max-new-token, gen_api_answer.py --max-tokens)
MAX_NEW_TOKENS = 1024
#: the judge: gen_judgment.py --judge-model; run_judge_single's temperature and max_tokens (OpenAI judges)
JUDGE_MODEL = "gpt-4"
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 2048
#: FastChat's judge prompt name -> this project's template
JUDGE_TEMPLATES = {
    "single-v1": "mt_bench_single@v1",
    "single-math-v1": "mt_bench_single_math@v1",
    "single-v1-multi-turn": "mt_bench_single_multi_turn@v1",
    "single-math-v1-multi-turn": "mt_bench_single_math_multi_turn@v1",
}
#: where the GPT-4 reference answers are beside a question file: FastChat's layout, then ../shared's
REFERENCE_FILES = ("reference_answer/gpt-4.jsonl", "reference_answer_gpt-4.jsonl")
QUESTION_FILE = "question.jsonl"
#: common.one_score_pattern and one_score_pattern_backup: "[[7]]", else "[7]"; the first match counts
ONE_SCORE_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_PATTERN_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


# ------------------------------------------------------------------------------------------------ data
def load_problems(path: str | None = None, limit: int | None = None, tasks: list[str] | None = None,
                  references: str | None = None) -> list[Problem]:
    """MT-Bench's questions in file order, each with its GPT-4 reference answer when its category needs one.

    ``tasks`` keeps only these task ids (``str(question_id)``), then ``limit`` the first N. ``references``
    names the reference file (default: beside the question file, :data:`REFERENCE_FILES`); it is read only
    when a kept question needs it. ``meta`` = ``{"question_id", "category", "turns", "reference"}``
    (``reference``: the two turns of the reference answer, or ``[]`` outside :data:`NEED_REF_CATS`).
    Missing or malformed data is a one-line :class:`EvaluationError` naming the file and the cause.
    """
    if limit is not None and limit < 0:
        raise EvaluationError(f"MT-Bench: limit must be >= 0, got {limit}")
    where = benchmark_data.locate(BENCHMARK, path=path)
    assert where is not None  # the table names a hub dataset
    if where.path is not None and Path(where.path).is_dir():
        where = dataclasses.replace(where, path=str(Path(where.path) / QUESTION_FILE))
    source, questions = _questions(where)
    if tasks is not None:
        wanted = [str(t) for t in tasks]
        known = {str(qid) for qid, _, _ in questions}
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise EvaluationError(f"MT-Bench {source}: no question {', '.join(unknown[:5])}"
                                  f"{' ...' if len(unknown) > 5 else ''} (task ids are question ids, 81-160)")
        keep = set(wanted)
        questions = [q for q in questions if str(q[0]) in keep]
    if limit is not None:
        questions = questions[:limit]
    needing = [qid for qid, category, _ in questions if category in NEED_REF_CATS]
    refs: dict[int, list[str]] = {}
    ref_file = _reference_file(where, references)
    if needing:
        if ref_file is None:
            raise EvaluationError(f"MT-Bench {source}: questions {_ids(needing)} ({', '.join(NEED_REF_CATS)}) need "
                                  f"FastChat's GPT-4 reference answers and none were found "
                                  f"({_looked_for(where)}); give `references` (reference_answer/gpt-4.jsonl)")
        refs = _references(ref_file)
        missing = [qid for qid in needing if qid not in refs]
        if missing:
            raise EvaluationError(f"MT-Bench {ref_file}: no reference answer for questions {_ids(missing)}")
    return [Problem(benchmark=BENCHMARK, language="", task_id=str(qid), prompt=turns[0],
                    meta={"question_id": qid, "category": category, "turns": list(turns),
                          "reference": list(refs[qid]) if category in NEED_REF_CATS else []})
            for qid, category, turns in questions]


def _questions(where: benchmark_data.Location) -> tuple[str, list[tuple[int, str, list[str]]]]:
    """(where the rows were read, [(question_id, category, turns)]) in row order."""
    source = where.path or f"{where.hub} split {where.split}"
    rows = _rows(where, source)
    has_id = ["question_id" in row if isinstance(row, Mapping) else True for row in rows]
    by_position = not any(has_id)  # the hub copy: FastChat's rows in FastChat's order, without the id
    questions = []
    seen: set[int] = set()
    for number, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise EvaluationError(f"MT-Bench {source}: row {number} is not a JSON object")
        qid = FIRST_QUESTION_ID + number - 1 if by_position else row.get("question_id")
        if isinstance(qid, bool) or not isinstance(qid, int):
            raise EvaluationError(f"MT-Bench {source}: row {number}: question_id must be an integer, got {qid!r}")
        category = row.get("category")
        if not isinstance(category, str) or not category:
            raise EvaluationError(f"MT-Bench {source}: row {number} (question {qid}): no category")
        turns = row.get("turns", row.get("prompt"))
        if not isinstance(turns, Sequence) or isinstance(turns, str) or len(turns) != 2 \
                or not all(isinstance(t, str) and t.strip() for t in turns):
            raise EvaluationError(f"MT-Bench {source}: row {number} (question {qid}): turns must be two "
                                  f"non-empty strings")
        if qid in seen:
            raise EvaluationError(f"MT-Bench {source}: question {qid} appears twice")
        seen.add(qid)
        questions.append((qid, category, list(turns)))
    if not questions:
        raise EvaluationError(f"MT-Bench {source}: no questions in it")
    if by_position:
        _check_fastchat_order(source, [category for _, category, _ in questions])
    return source, questions


def _check_fastchat_order(source: str, categories: list[str]) -> None:
    """Rows without ids are numbered from 81 only when they are FastChat's 80 questions in FastChat's order."""
    expected = [c for c in CATEGORIES for _ in range(10)]
    if categories != expected:
        at = next((i for i, (a, b) in enumerate(zip(categories, expected)) if a != b), min(len(categories), 80))
        found = categories[at] if at < len(categories) else "the end"
        raise EvaluationError(f"MT-Bench {source}: rows without question_id are numbered by position only in "
                              f"FastChat's order (80 rows, 10 per category), but row {at + 1} is {found!r} "
                              f"where {expected[at] if at < 80 else 'the end'!r} belongs; give FastChat's "
                              f"question.jsonl")


def _rows(where: benchmark_data.Location, source: str) -> list[Any]:
    try:
        return [dict(row) if isinstance(row, Mapping) else row for row in benchmark_data.read_rows(where)]
    except benchmark_data.BenchmarkDataError as err:
        raise EvaluationError(f"MT-Bench questions: {first_line(err)}") from None
    except ImportError as err:
        raise EvaluationError(f"MT-Bench: reading {source} needs the 'datasets' package ({first_line(err)}); "
                              f"or give a local question.jsonl") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvaluationError(f"MT-Bench: cannot read {source}: {typed_line(err)}") from None
    except Exception as err:  # the hub, the network, the cache: one line
        raise EvaluationError(f"MT-Bench: cannot load {source}: {typed_line(err)}") from None


def _reference_file(where: benchmark_data.Location, references: str | None) -> Path | None:
    if references is not None and str(references) != "":
        file = Path(references)
        if not file.is_file():
            raise EvaluationError(f"MT-Bench references: {file}: file not found")
        return file
    if where.path is None:
        return None
    return next((f for f in (Path(where.path).parent / name for name in REFERENCE_FILES) if f.is_file()), None)


def _looked_for(where: benchmark_data.Location) -> str:
    if where.path is None:
        return f"the hub copy {where.hub} has none"
    return "looked for " + " and ".join(str(Path(where.path).parent / name) for name in REFERENCE_FILES)


def _references(file: Path) -> dict[int, list[str]]:
    """question_id -> the two turns of FastChat's reference answer (its first choice, as common.run_judge_single)."""
    try:
        rows = benchmark_data.file_rows(file)
    except benchmark_data.BenchmarkDataError as err:
        raise EvaluationError(f"MT-Bench references: {first_line(err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvaluationError(f"MT-Bench references: cannot read {file}: {typed_line(err)}") from None
    refs: dict[int, list[str]] = {}
    for number, row in enumerate(rows, 1):
        qid = row.get("question_id") if isinstance(row, Mapping) else None
        if isinstance(qid, bool) or not isinstance(qid, int):
            raise EvaluationError(f"MT-Bench references {file}: row {number}: no integer question_id")
        choices = row.get("choices")
        turns = choices[0].get("turns") if isinstance(choices, list) and choices and isinstance(
            choices[0], Mapping) else None
        if not isinstance(turns, list) or len(turns) != 2 or not all(isinstance(t, str) for t in turns):
            raise EvaluationError(f"MT-Bench references {file}: row {number} (question {qid}): "
                                  f"choices[0].turns must be two strings")
        if qid in refs:
            raise EvaluationError(f"MT-Bench references {file}: question {qid} appears twice")
        refs[qid] = turns
    return refs


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:8])) + (f" ... ({len(ids)} in all)" if len(ids) > 8 else "")


# ------------------------------------------------------------------------------------------------ generation
def generation_temperature(problem: Problem) -> float:
    """The temperature FastChat samples this question's answers at (0: greedy)."""
    return CATEGORY_TEMPERATURE.get(problem.meta.get("category", ""), DEFAULT_TEMPERATURE)


def turn_messages(problem: Problem, turn: int, answers: Sequence[str] = ()) -> list[dict[str, str]]:
    """The chat that asks for ``turn``'s answer: [user t1], or [user t1, assistant answers[0], user t2]."""
    turns = _turns(problem, turn)
    if turn == 1:
        return [{"role": "user", "content": turns[0]}]
    first = _answers(problem, answers, 1)[0]
    return [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": first},
            {"role": "user", "content": turns[1]}]


# ------------------------------------------------------------------------------------------------ judging
def judge_template(problem: Problem, turn: int) -> str:
    """The template ref FastChat judges this turn with: single(-math)-v1, or its multi-turn variant for turn 2."""
    _turns(problem, turn)
    math_prompt = problem.meta.get("category") in NEED_REF_CATS
    name = ("single-math-v1" if math_prompt else "single-v1") + ("-multi-turn" if turn == 2 else "")
    return JUDGE_TEMPLATES[name]


def judge_messages(problem: Problem, turn: int, answers: Sequence[str]) -> tuple[str, list[dict[str, str]]]:
    """(template ref, [system, user]) asking the judge to rate ``answers[turn - 1]``, as common.run_judge_single.

    Turn 1 fills ``question`` / ``answer`` (+ ``ref_answer_1``); turn 2 fills ``question_1``, ``question_2``,
    ``answer_1``, ``answer_2`` (+ ``ref_answer_1``, ``ref_answer_2``) for the multi-turn prompt.
    """
    ref = judge_template(problem, turn)
    turns = _turns(problem, turn)
    given = _answers(problem, answers, turn)
    if turn == 1:
        values = {"question": turns[0], "answer": given[0]}
    else:
        values = {"question_1": turns[0], "question_2": turns[1], "answer_1": given[0], "answer_2": given[1]}
    if problem.meta.get("category") in NEED_REF_CATS:
        reference = problem.meta.get("reference") or []
        if len(reference) != 2:
            raise EvaluationError(f"MT-Bench question {problem.task_id} ({problem.meta.get('category')}) has no "
                                  f"reference answer; FastChat judges it against one (load_problems attaches it)")
        values["ref_answer_1"] = reference[0]
        if turn == 2:
            values["ref_answer_2"] = reference[1]
    return ref, load_template(ref).render(**values)


def parse_rating(text: str | None) -> float | None:
    """The judge's rating: the first "[[n]]", else the first "[n]" (common.py's two patterns); None when neither.

    As in FastChat, the number is not checked against 1..10. None also for no text (a failed judge call).
    """
    if not text:
        return None
    match = ONE_SCORE_PATTERN.search(text) or ONE_SCORE_PATTERN_BACKUP.search(text)
    return float(match.group(1)) if match else None


def score(problem: Problem, answer: str | None, *, turn: int) -> dict[str, Any]:
    """One judgment's verdict; ``answer`` is the judge's text for ``turn`` (None: the judge call failed).

    ``status``: ``rated``, ``no_rating`` (no "[[n]]" / "[n]" in it: FastChat's -1) or ``error``; ``passed``
    means a rating was read. The row is what :func:`summarise` takes.
    """
    _turns(problem, turn)
    rating = parse_rating(answer)
    status = "error" if answer is None else ("rated" if rating is not None else "no_rating")
    return {"passed": rating is not None, "status": status, "task_id": problem.task_id,
            "category": problem.meta.get("category", ""), "turn": turn, "rating": rating}


# ------------------------------------------------------------------------------------------------ numbers
def summarise(ratings: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """MT-Bench's numbers from rows ``{"task_id", "category", "turn", "rating": float | None}``.

    ``score``: the mean over every parsed rating of both turns (show_result.py's average), ``turn1`` /
    ``turn2`` the per-turn means, ``categories`` the mean per category over both turns; ratings that did not
    parse are counted in ``failed`` and left out of the means, as FastChat drops -1. ``judged``: the ratings
    in the means; ``tasks``: the questions seen. A mean with nothing to average is None.
    """
    rows = list(ratings)
    parsed: list[tuple[str, int, float]] = []
    for row in rows:
        turn, rating = row.get("turn"), row.get("rating")
        if turn not in (1, 2):
            raise ValueError(f"MT-Bench rating of task {row.get('task_id')!r}: turn must be 1 or 2, got {turn!r}")
        if rating is None:
            continue
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating):
            raise ValueError(f"MT-Bench rating of task {row.get('task_id')!r}: not a number: {rating!r}")
        parsed.append((str(row.get("category", "")), turn, float(rating)))
    categories = sorted({str(row.get("category", "")) for row in rows},
                        key=lambda c: (CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES), c))
    return {
        "score": _mean(r for _, _, r in parsed),
        "turn1": _mean(r for _, t, r in parsed if t == 1),
        "turn2": _mean(r for _, t, r in parsed if t == 2),
        "categories": {c: _mean(r for cat, _, r in parsed if cat == c) for c in categories},
        "judged": len(parsed),
        "failed": len(rows) - len(parsed),
        "tasks": len({str(row.get("task_id")) for row in rows}),
    }


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------------------------------ checks
def _turns(problem: Problem, turn: int) -> list[str]:
    if turn not in (1, 2):
        raise ValueError(f"MT-Bench question {problem.task_id}: turn must be 1 or 2, got {turn!r}")
    turns = problem.meta.get("turns")
    if not isinstance(turns, list) or len(turns) != 2:
        raise ValueError(f"MT-Bench question {problem.task_id}: meta['turns'] must hold the two turns")
    return turns


def _answers(problem: Problem, answers: Sequence[str], needed: int) -> list[str]:
    given = list(answers)[:needed]
    if len(given) < needed or not all(isinstance(a, str) for a in given):
        raise ValueError(f"MT-Bench question {problem.task_id}: needs the model's answers to turns 1..{needed} "
                         f"as strings (a failed generation is recorded, not judged)")
    return given
