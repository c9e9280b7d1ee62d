"""GSM8K (Cobbe et al., 2021): the test split's problems, the final number of an answer, accuracy.

- Problems: the ``gsm8k`` row of ``core.benchmark_data`` (a path, ``$FUSION_GSM8K_PATH``, else the hub's
  ``openai/gsm8k`` ``main`` test split), rows ``{question, answer}``; task ids ``gsm8k/<row index>``
  (0-based, in file order). The reference is the number after ``####`` in ``answer`` (commas dropped),
  kept in ``Problem.meta["answer"]``; a row whose reference is not a number is an error, not a problem.
- Prompts: chat models get ``prompts/eval_gsm8k.v1.yaml`` (:data:`TEMPLATE`, :func:`messages`), base models
  ``prompts/eval_gsm8k_completion.v1.yaml`` (:data:`COMPLETION_TEMPLATE`, :func:`completion_prompt`) cut at
  :data:`COMPLETION_STOP` (also each problem's ``stop``). Both ask zero-shot; the TaCIE paper prints no prompt.
- Reading an answer: the last match of a pattern (default :data:`DEFAULT_PATTERN`, "The answer is N"), else
  the last number in the text. Numbers may carry ``$``, thousands commas, a sign and decimals; they are
  compared as decimals ("18.00" == "18", "1,000" == "1000").
- Verdicts: :func:`score` per answer, :func:`summarise` per model (exact-match accuracy).

Pure functions: no Ray, no teacher calls.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Iterable, Mapping

from ray_pipeline.core.benchmark_data import locate, read_rows
from ray_pipeline.core.errors import EvaluationError, first_line
from ray_pipeline.evaluation.problems import Problem, select_problems
from ray_pipeline.prompts import load_template

BENCHMARK = "gsm8k"
TEMPLATE = "eval_gsm8k@v1"
COMPLETION_TEMPLATE = "eval_gsm8k_completion@v1"
#: where a base model's answer ends: the ``until`` of lm-evaluation-harness's gsm8k task (v3.0, lm-eval 0.4.13)
COMPLETION_STOP = ("Question:", "</s>", "<|im_end|>")
REFERENCE_MARK = "####"

#: a number as answers write it: a sign written against it where it cannot be a subtraction ("= -3", not
#: "16-3" or "10 - 3"), an optional "$", digits with
#: or without thousands commas, decimals; "18." ends a sentence (the "." is not taken)
NUMBER = re.compile(r"(?:(?<![\w)\]])(?P<sign>[-\u2212]))?(?:\$\s?)?"
                    r"(?P<digits>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
#: "The answer is N" (or "The final answer is: N"), case-insensitive, N possibly bold, in $...$, \boxed{},
#: with a "$" or commas; the number is the ``number`` group
DEFAULT_PATTERN = (r"the\s+(?:final\s+)?answer\s+is\s*:?[\s*_]*(?:\$|\\\(|\\\[|\\boxed\{|\\text\{)*[\s*_]*"
                   r"(?P<number>[-\u2212]?\$?\s?\d[\d,]*(?:\.\d+)?)")


# ---------------------------------------------------------------------------------------------- numbers
def normalise_number(text: str) -> str | None:
    """The first number in ``text`` in a canonical form ("$1,000.50" -> "1000.5", "18.00" -> "18"); None if none."""
    m = NUMBER.search(text)
    if m is None:
        return None
    return _canonical(m)


def _canonical(m: re.Match[str]) -> str:
    value = Decimal(m["digits"].replace(",", ""))
    if m["sign"]:
        value = -value
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def same_number(a: str, b: str) -> bool:
    """Whether two number strings are the same value (``normalise_number`` forms or plain decimals)."""
    try:
        return Decimal(a.replace(",", "")) == Decimal(b.replace(",", ""))
    except InvalidOperation:
        return False


def reference_answer(solution: str) -> str:
    """The number after the last ``####`` of a GSM8K reference solution; ValueError when there is none."""
    if REFERENCE_MARK not in solution:
        raise ValueError(f"no '{REFERENCE_MARK}' in the answer")
    tail = solution.rsplit(REFERENCE_MARK, 1)[1].strip()
    number = NUMBER.fullmatch(tail.replace(" ", ""))
    if number is None:
        raise ValueError(f"'{REFERENCE_MARK} {tail[:40]}' is not a number")
    return _canonical(number)


# ---------------------------------------------------------------------------------------------- answers
@lru_cache(maxsize=32)
def compile_pattern(pattern: str | None = None) -> re.Pattern[str]:
    """The answer pattern, case-insensitive; its number is the group ``number``, else group 1, else the match.

    An invalid regular expression is an :class:`EvaluationError`.
    """
    try:
        return re.compile(DEFAULT_PATTERN if pattern is None else pattern, re.IGNORECASE)
    except re.error as err:
        raise EvaluationError(f"gsm8k answer pattern {pattern!r} is not a valid regular expression: {err}") from None


def extract_answer(text: str, pattern: str | re.Pattern[str] | None = None) -> tuple[str | None, str | None]:
    """(number, how): the number of the pattern's last match holding one ("pattern"), else the text's last
    number ("last_number"), else (None, None)."""
    compiled = pattern if isinstance(pattern, re.Pattern) else compile_pattern(pattern)
    for m in reversed(list(compiled.finditer(text))):
        if "number" in compiled.groupindex:
            captured = m["number"]
        else:
            captured = m.group(1) if compiled.groups else m.group(0)
        number = normalise_number(captured or "")
        if number is not None:
            return number, "pattern"
    numbers = list(NUMBER.finditer(text))
    if numbers:
        return _canonical(numbers[-1]), "last_number"
    return None, None


def score(problem: Problem, answer: str | None, pattern: str | re.Pattern[str] | None = None) -> dict[str, Any]:
    """One answer's verdict: ``passed``, ``status`` (pass | fail | no_answer | error: the generation failed,
    ``answer`` is None), ``extracted`` (the number read, canonical), ``reference``, ``extracted_by``
    (pattern | last_number | None). ``pattern``: the "The answer is" regex (default :data:`DEFAULT_PATTERN`)."""
    reference = problem.meta.get("answer")
    if not isinstance(reference, str) or normalise_number(reference) is None:
        raise EvaluationError(f"gsm8k problem {problem.task_id}: meta has no reference number (answer)")
    verdict: dict[str, Any] = {"passed": False, "status": "error", "extracted": None, "reference": reference,
                               "extracted_by": None}
    if answer is None:
        return verdict
    extracted, how = extract_answer(answer, pattern)
    if extracted is None:
        return {**verdict, "status": "no_answer"}
    passed = same_number(extracted, reference)
    return {**verdict, "passed": passed, "status": "pass" if passed else "fail", "extracted": extracted,
            "extracted_by": how}


def summarise(verdicts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One model's numbers: ``accuracy`` (passed / tasks; 0.0 with no tasks), ``tasks``, ``no_answer`` (answers
    with no number), ``errors`` (generations that failed; counted as wrong, as no_answer is)."""
    verdicts = list(verdicts)
    passed = sum(1 for v in verdicts if v.get("passed"))
    return {
        "accuracy": passed / len(verdicts) if verdicts else 0.0,
        "tasks": len(verdicts),
        "no_answer": sum(1 for v in verdicts if v.get("status") == "no_answer"),
        "errors": sum(1 for v in verdicts if v.get("status") == "error"),
    }


# ---------------------------------------------------------------------------------------------- prompts
def messages(problem: Problem) -> list[dict[str, str]]:
    """The chat request: :data:`TEMPLATE` rendered with the question."""
    return load_template(TEMPLATE).render(prompt=problem.prompt.strip())


def completion_prompt(problem: Problem) -> str:
    """The text a base model continues ("Question: ...\\nAnswer:"); cut its answer at :data:`COMPLETION_STOP`."""
    (message,) = load_template(COMPLETION_TEMPLATE).render(prompt=problem.prompt.strip())
    return message["content"]


# ---------------------------------------------------------------------------------------------- problems
def load_problems(path: str | None = None, limit: int | None = None, tasks: list[str] | None = None) -> list[Problem]:
    """GSM8K's test problems in file order: those in ``tasks`` (task ids) when given, then the first ``limit``.

    Every row is checked (a ``question`` and an ``answer`` ending in ``#### N``) whatever is kept; missing or
    malformed data is a one-line :class:`EvaluationError` naming the file (or hub dataset) and the cause.
    """
    if limit is not None and limit < 0:
        raise EvaluationError(f"gsm8k: limit must be >= 0, got {limit}")
    where = locate(BENCHMARK, path=path)
    assert where is not None  # the table names a hub dataset
    source = where.path or f"{where.hub} {where.config} {where.split}"
    try:
        rows = list(read_rows(where))
    except Exception as err:  # file, JSON, gzip and hub errors all mean "cannot load"
        message = first_line(err)
        raise EvaluationError(message if where.path and where.path in message else f"{source}: {message}") from None
    problems = [_problem(index, row, source) for index, row in enumerate(rows)]
    if not problems:
        raise EvaluationError(f"{source}: no GSM8K problems in it")
    return select_problems(problems, tasks, limit, source)


def _problem(index: int, row: Any, source: str) -> Problem:
    where = f"{source}: row {index + 1}"
    if not isinstance(row, Mapping):
        raise EvaluationError(f"{where}: expected an object with question and answer, got {type(row).__name__}")
    question, solution = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise EvaluationError(f"{where}: no question")
    if not isinstance(solution, str):
        raise EvaluationError(f"{where}: no answer")
    try:
        reference = reference_answer(solution)
    except ValueError as err:
        raise EvaluationError(f"{where}: {err}") from None
    return Problem(benchmark=BENCHMARK, language="", task_id=f"{BENCHMARK}/{index}", prompt=question,
                   stop=COMPLETION_STOP, meta={"answer": reference})
