"""GSM8K: reading the final number of an answer, verdicts, accuracy, the test file, the prompts.

No Ray, no model. The real test split (../shared/data/seeds/gsm8k/test.jsonl) is read where ../shared exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation import gsm8k
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.prompts import load_template
from tests.paths import SHARED

GSM8K_TEST = SHARED / "data/seeds/gsm8k/test.jsonl"


def problem(reference: str, task_id: str = "gsm8k/0") -> Problem:
    return Problem(benchmark="gsm8k", language="", task_id=task_id, prompt="How many?", meta={"answer": reference})


def require_test_split() -> Path:
    if not GSM8K_TEST.is_file():
        pytest.skip(f"../shared is absent ({GSM8K_TEST} not found): GSM8K test-split test skipped")
    return GSM8K_TEST


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------- answers with known verdicts
CASES = [
    # (answer, reference, status, extracted, extracted_by)
    ("She makes 9 * 2 = $18 every day.\nThe answer is 18", "18", "pass", "18", "pattern"),
    ("9 eggs at $2 each.\n**The answer is $18.00.**", "18", "pass", "18", "pattern"),
    ("The final answer is: **1,000**", "1000", "pass", "1000", "pattern"),
    ("so the answer is $\\boxed{72}$.", "72", "pass", "72", "pattern"),
    ("THE ANSWER IS -3.", "-3", "pass", "-3", "pattern"),
    ("9 * 2 = 18, so she makes $18 a day.", "18", "pass", "18", "last_number"),  # no pattern: the last number
    ("In total 114,200 dollars", "114200", "pass", "114200", "last_number"),
    ("Each costs $0.50", "0.5", "pass", "0.5", "last_number"),
    ("The temperature drops to x = -3", "-3", "pass", "-3", "last_number"),
    ("16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = 18 dollars.", "18", "pass", "18", "last_number"),
    ("16 - 3 = 13", "-3", "fail", "13", "last_number"),  # a subtraction's "- 3" is not the number -3
    ("The answer is 17", "18", "fail", "17", "pattern"),
    ("The answer is 18.5", "18", "fail", "18.5", "pattern"),
    ("She makes 9 * 2 = 18 dollars, minus 1 for the stall: 17.", "18", "fail", "17", "last_number"),
    ("The answer is 180", "18", "fail", "180", "pattern"),
    ("I cannot tell how much she makes.", "18", "no_answer", None, None),
    ("", "18", "no_answer", None, None),
    ('The answer is N, where N is unknown.', "18", "no_answer", None, None),
]


@pytest.mark.parametrize("answer,reference,status,extracted,by", CASES)
def test_known_answers_get_their_verdict(answer, reference, status, extracted, by):
    verdict = gsm8k.score(problem(reference), answer)
    assert verdict == {"passed": status == "pass", "status": status, "extracted": extracted,
                       "reference": reference, "extracted_by": by}
    json.dumps(verdict)  # plain JSON


def test_a_pattern_match_beats_a_later_number():
    answer = "The answer is 18.\nCheck: 16 - 3 - 4 = 9 eggs, 9 * 2 = 18, and 25 - 7 = 18 too; 3 days give 54."
    verdict = gsm8k.score(problem("18"), answer)
    assert (verdict["status"], verdict["extracted"], verdict["extracted_by"]) == ("pass", "18", "pattern")
    # the last match of the pattern counts: a corrected answer wins over the first one
    assert gsm8k.extract_answer("The answer is 12. No, wait: the answer is 14, as 7 * 2 = 14.") == ("14", "pattern")
    # without the pattern the same text is read by its last number, and fails
    assert gsm8k.score(problem("18"), answer, pattern=r"#### (\S+)")["extracted"] == "54"


def test_a_generation_error_is_recorded_not_read():
    verdict = gsm8k.score(problem("18"), None)
    assert verdict == {"passed": False, "status": "error", "extracted": None, "reference": "18", "extracted_by": None}


def test_numbers_compare_as_values():
    assert gsm8k.same_number("18.00", "18") and gsm8k.same_number("1,000", "1000") and gsm8k.same_number("-0.50", "-.5")
    assert not gsm8k.same_number("18.01", "18") and not gsm8k.same_number("-18", "18")
    assert gsm8k.normalise_number("costs $1,234.50 now") == "1234.5"
    assert gsm8k.normalise_number("$ 7") == "7" and gsm8k.normalise_number("(-2)") == "-2"
    assert gsm8k.normalise_number("no digits") is None
    # a minus written against a digit, a letter or a bracket is a subtraction, not a sign
    assert gsm8k.extract_answer("she keeps 20-5") == ("5", "last_number")
    assert gsm8k.extract_answer("(3+4)-2 and x-1") == ("1", "last_number")
    assert gsm8k.extract_answer("[7]-2") == ("2", "last_number")


def test_a_configured_pattern_replaces_the_default():
    answer = "Reasoning... 9 * 2 = 18\n#### 18\nHope this helps, 1 more note."
    assert gsm8k.score(problem("18"), answer, pattern=r"####\s*(\S+)")["extracted_by"] == "pattern"
    assert gsm8k.score(problem("18"), answer)["extracted"] == "1"  # the default pattern misses; the last number
    named = r"final:\s*(?P<number>\S+)"
    assert gsm8k.extract_answer("x 3 final: 42 y 7", named) == ("42", "pattern")
    assert gsm8k.extract_answer("x 3 FINAL: 42 y 7", re.compile(named)) == ("7", "last_number")  # compiled as given
    assert gsm8k.extract_answer("x 3 answer 42", r"answer \d+") == ("42", "pattern")  # no group: the whole match
    with pytest.raises(EvaluationError, match=r"not a valid regular expression") as err:
        gsm8k.score(problem("18"), "The answer is 18", pattern=r"answer is (\d+")
    assert "\n" not in str(err.value)


def test_the_default_pattern_is_case_insensitive_and_allows_decoration():
    for text in ("the answer is 18", "The Answer Is: 18", "**The answer is** **18**", "The answer is $18",
                 "The final answer is 18.", "The answer is \\(18\\)"):
        assert gsm8k.extract_answer(text + " (not 20)") == ("18", "pattern"), text


def test_summary_counts_passes_no_answers_and_errors():
    p = problem("18")
    verdicts = [gsm8k.score(p, a) for a in ("The answer is 18", "18", "The answer is 17", "no idea", None)]
    assert gsm8k.summarise(verdicts) == {"accuracy": 0.4, "tasks": 5, "no_answer": 1, "errors": 1}
    assert gsm8k.summarise([]) == {"accuracy": 0.0, "tasks": 0, "no_answer": 0, "errors": 0}


def test_a_problem_without_a_reference_is_an_error():
    with pytest.raises(EvaluationError, match="gsm8k/7: meta has no reference"):
        gsm8k.score(Problem(benchmark="gsm8k", language="", task_id="gsm8k/7", prompt="q"), "The answer is 1")


# ------------------------------------------------------------------------------- references and the test file
def test_references_are_the_number_after_the_marks():
    assert gsm8k.reference_answer("9 * 2 = <<9*2=18>>18 dollars\n#### 18") == "18"
    assert gsm8k.reference_answer("...\n#### 1,450,000") == "1450000"
    assert gsm8k.reference_answer("#### -3") == "-3" and gsm8k.reference_answer("#### 0.50") == "0.5"
    for bad in ("no marks, 18", "#### eighteen", "####"):
        with pytest.raises(ValueError):
            gsm8k.reference_answer(bad)


def test_every_reference_of_the_real_test_split_parses():
    path = require_test_split()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    problems = gsm8k.load_problems(str(path))
    assert len(problems) == len(rows) == 1319
    for index, (p, row) in enumerate(zip(problems, rows)):
        # an independent reading: GSM8K's references are whole numbers, some written with commas
        assert p.meta["answer"] == str(int(row["answer"].split("####")[-1].strip().replace(",", "")))
        assert p.task_id == f"gsm8k/{index}" and p.prompt == row["question"]
        assert p.benchmark == p.suite == "gsm8k" and p.language == "" and p.stop == gsm8k.COMPLETION_STOP
        assert Problem.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert [p.meta["answer"] for p in problems[:3]] == ["18", "3", "70000"]
    # the reference solution's own last line is a correct answer for every problem
    assert all(gsm8k.score(p, row["answer"])["passed"] for p, row in zip(problems, rows))


def test_limit_tasks_and_the_variable(monkeypatch):
    path = require_test_split()
    assert [p.task_id for p in gsm8k.load_problems(str(path), limit=3)] == ["gsm8k/0", "gsm8k/1", "gsm8k/2"]
    chosen = gsm8k.load_problems(str(path), tasks=["gsm8k/1318", "gsm8k/5"])
    assert [p.task_id for p in chosen] == ["gsm8k/5", "gsm8k/1318"]  # file order
    assert [p.task_id for p in gsm8k.load_problems(str(path), tasks=["gsm8k/9", "gsm8k/4"], limit=1)] == ["gsm8k/4"]
    monkeypatch.setenv("FUSION_GSM8K_PATH", str(path))
    assert len(gsm8k.load_problems(limit=2)) == 2


@pytest.mark.parametrize("rows,message", [
    ([{"question": "q", "answer": "a\n#### 5"}, {"question": "q2", "answer": "no marks"}],
     r"row 2: no '####' in the answer"),
    ([{"question": "q", "answer": "#### five"}], r"row 1: '#### five' is not a number"),
    ([{"question": "", "answer": "#### 5"}], r"row 1: no question"),
    ([{"question": "q"}], r"row 1: no answer"),
    ([["q", "#### 5"]], r"row 1: expected an object"),
    ([], r"no GSM8K problems"),
])
def test_malformed_data_is_one_line_naming_the_file(tmp_path, rows, message):
    path = write_rows(tmp_path / "test.jsonl", rows)
    with pytest.raises(EvaluationError, match=message) as err:
        gsm8k.load_problems(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_data_is_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "#### 5"}\n{"question": \n')
    good = write_rows(tmp_path / "good.jsonl", [{"question": "q", "answer": "#### 5"}])
    for path, message, options in ((missing, "file not found", {}), (broken, "line 2: invalid JSON", {}),
                                   (good, "unknown task ids gsm8k/1", {"tasks": ["gsm8k/1"]}),
                                   (good, "limit must be >= 0", {"limit": -1})):
        with pytest.raises(EvaluationError, match=message) as err:
            gsm8k.load_problems(str(path), **options)
        assert "\n" not in str(err.value)
        assert str(path) in str(err.value) or "limit" in options


# ------------------------------------------------------------------------------- prompts
def test_chat_template_asks_for_the_answer_line():
    template = load_template(gsm8k.TEMPLATE)
    assert (template.ref, template.source, template.variables) == ("eval_gsm8k@v1", "project", ("prompt",))
    question = "A robe takes 2 bolts of {blue} fiber and $half that much white fiber. How many bolts?"
    messages = gsm8k.messages(Problem(benchmark="gsm8k", language="", task_id="gsm8k/1", prompt=question + "\n"))
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"].endswith(question)  # inserted verbatim
    assert '"The answer is N"' in messages[0]["content"]
    # the answer the template asks for is read by the default pattern
    assert gsm8k.extract_answer("2 + 1 = 3 bolts.\nThe answer is 3") == ("3", "pattern")


def test_completion_prompt_and_stop_sequences():
    template = load_template(gsm8k.COMPLETION_TEMPLATE)
    assert template.source == "project" and template.variables == ("prompt",)
    p = Problem(benchmark="gsm8k", language="", task_id="gsm8k/1", prompt="  How many bolts?\n")
    assert gsm8k.completion_prompt(p) == "Question: How many bolts?\nAnswer:"
    assert "Question:" in gsm8k.COMPLETION_STOP
