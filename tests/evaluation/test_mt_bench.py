"""MT-Bench: FastChat's judge prompts word for word, its rating regexes, references, two turns, the numbers, data.

FastChat is lm-sys/FastChat at 0e6d3e4b (fastchat/llm_judge: common.py, gen_judgment.py, show_result.py); its
data files are in ../shared/data/bench/mt-bench (tests that read them skip when ../shared is absent).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from ray_pipeline.core import benchmark_data
from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation import mt_bench
from ray_pipeline.evaluation.mt_bench import (
    CATEGORY_TEMPERATURE, JUDGE_TEMPLATES, judge_messages, load_problems, parse_rating, score, summarise,
    turn_messages,
)
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.prompts import PLACEHOLDER, load_template
from tests.paths import SHARED

MT_BENCH = SHARED / "data/bench/mt-bench"
QUESTIONS = MT_BENCH / "question.jsonl"
JUDGE_PROMPTS = MT_BENCH / "judge_prompts.jsonl"
REFERENCES = MT_BENCH / "reference_answer_gpt-4.jsonl"


def require_mt_bench() -> None:
    if not (QUESTIONS.is_file() and JUDGE_PROMPTS.is_file() and REFERENCES.is_file()):
        pytest.skip(f"../shared is absent ({MT_BENCH} not found): MT-Bench data test skipped")


def fastchat_prompts() -> dict[str, dict]:
    require_mt_bench()
    return {row["name"]: row for row in map(json.loads, JUDGE_PROMPTS.read_text(encoding="utf-8").splitlines())}


def problem(category: str = "writing", reference: list[str] | None = None, qid: int = 81) -> Problem:
    turns = [f"First question of {qid}?", f"Second question of {qid}?"]
    return Problem(benchmark="mt_bench", language="", task_id=str(qid), prompt=turns[0],
                   meta={"question_id": qid, "category": category, "turns": turns, "reference": reference or []})


MATH = problem("math", ["Area is 3", "5pi"], qid=111)
WRITING = problem("writing", qid=81)


# ------------------------------------------------------------------- the judge prompts
@pytest.mark.parametrize("fastchat_name", sorted(JUDGE_TEMPLATES))
def test_each_template_is_fastchats_judge_prompt_word_for_word(fastchat_name):
    released = fastchat_prompts()[fastchat_name]
    template = load_template(JUDGE_TEMPLATES[fastchat_name])
    (system_role, system), (user_role, user) = template.messages
    assert (system_role, user_role) == ("system", "user")
    assert system == released["system_prompt"]
    # our {{name}} placeholders written back as FastChat's str.format fields give its prompt_template exactly
    assert PLACEHOLDER.sub(lambda m: "{" + m.group(1) + "}", user) == released["prompt_template"]
    assert set(template.variables) == set(re.findall(r"\{(\w+)\}", released["prompt_template"]))
    assert template.source == "benchmark"
    assert released["type"] == "single" and released["output_format"] == "[[rating]]"


def test_the_four_single_answer_prompts_are_all_the_released_single_prompts():
    released = fastchat_prompts()
    assert sorted(JUDGE_TEMPLATES) == sorted(name for name, row in released.items() if row["type"] == "single")


# ------------------------------------------------------------------- the rating
@pytest.mark.parametrize("judgment,rating", [
    # the shape the prompt asks for, after an explanation
    ("The assistant's answer is relevant and well organised, covering the culture and the attractions "
     "of Hawaii with vivid detail. It could mention more specific events.\n\nRating: [[7]]", 7.0),
    ("The answer is correct but terse.\n\nRating: [[8.5]]", 8.5),
    ("Rating: [[10]]", 10.0),
    # the backup pattern: one bracket
    ("The assistant made an arithmetic mistake in the second step. Rating: [3]", 3.0),
    ("I would rate it [7].", 7.0),
    # several [[n]]: FastChat takes the first match (re.search), here the echoed example of the format
    ('Following the format "[[rating]]", for example: "Rating: [[5]]", my rating is: Rating: [[9]]', 5.0),
    # "[[n]]" wins over an earlier "[n]": the first pattern is tried on the whole text first
    ("Step [2] is wrong, but the result holds.\n\nRating: [[6]]", 6.0),
])
def test_ratings_are_read_as_fastchat_reads_them(judgment, rating):
    assert parse_rating(judgment) == rating


@pytest.mark.parametrize("judgment", [
    "Rating: 7/10",
    "The response is excellent. I rate it 9 out of 10.",
    "Rating: [[rating]]",
    "Rating: [[ 7 ]]",
    "Rating: **8**",
    "$ERROR$",  # FastChat's output when the judge's API call failed
    "",
    None,
])
def test_a_judgment_without_a_rating_gives_none(judgment):
    assert parse_rating(judgment) is None


def test_score_records_a_judge_without_rating_as_a_failure_not_a_crash():
    rated = score(WRITING, "Good.\n\nRating: [[6]]", turn=1)
    assert rated == {"passed": True, "status": "rated", "task_id": "81", "category": "writing", "turn": 1,
                     "rating": 6.0}
    assert score(WRITING, "A fine answer, I give it 6 out of 10.", turn=2)["status"] == "no_rating"
    failed = score(MATH, None, turn=2)
    assert (failed["passed"], failed["status"], failed["rating"], failed["turn"]) == (False, "error", None, 2)


# ------------------------------------------------------------------- generation turns
def test_turn_one_asks_the_first_question_and_turn_two_sees_the_first_answer():
    assert turn_messages(WRITING, 1) == [{"role": "user", "content": "First question of 81?"}]
    assert turn_messages(WRITING, 2, ["answer one"]) == [
        {"role": "user", "content": "First question of 81?"},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "Second question of 81?"},
    ]
    with pytest.raises(ValueError):
        turn_messages(WRITING, 2, [])
    with pytest.raises(ValueError):
        turn_messages(WRITING, 3, ["a", "b"])


def test_generation_temperatures_are_fastchats():
    assert CATEGORY_TEMPERATURE == {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                                    "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
    assert mt_bench.generation_temperature(MATH) == 0.0
    assert mt_bench.generation_temperature(problem("stem")) == 0.1
    assert mt_bench.generation_temperature(problem("poetry")) == 0.7  # FastChat's default for other categories
    assert (mt_bench.MAX_NEW_TOKENS, mt_bench.JUDGE_TEMPERATURE, mt_bench.JUDGE_MAX_TOKENS) == (1024, 0.0, 2048)


# ------------------------------------------------------------------- judge messages
def test_a_math_question_is_judged_against_its_reference_and_a_writing_question_is_not():
    ref, messages = judge_messages(MATH, 1, ["The area is 3."])
    assert ref == "mt_bench_single_math@v1"
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == "You are a helpful assistant."
    assert "[The Start of Reference Answer]\nArea is 3\n[The End of Reference Answer]" in messages[1]["content"]
    assert "[Question]\nFirst question of 111?\n\n" in messages[1]["content"]
    answer = "[The Start of Assistant's Answer]\nThe area is 3.\n[The End of Assistant's Answer]"
    assert answer in messages[1]["content"]

    ref, messages = judge_messages(WRITING, 1, ["A blog post."])
    assert ref == "mt_bench_single@v1"
    assert "Reference" not in messages[0]["content"] + messages[1]["content"]
    assert "[The Start of Assistant's Answer]\nA blog post.\n[The End of Assistant's Answer]" in messages[1]["content"]


@pytest.mark.parametrize("category,ref", [
    ("reasoning", "mt_bench_single_math@v1"), ("coding", "mt_bench_single_math@v1"),
    ("extraction", "mt_bench_single@v1"), ("stem", "mt_bench_single@v1"),
])
def test_reasoning_and_coding_take_the_reference_prompt_too(category, ref):
    assert judge_messages(problem(category, ["r1", "r2"]), 1, ["a"])[0] == ref


def test_turn_two_is_judged_with_the_multi_turn_prompt_holding_both_answers():
    ref, messages = judge_messages(WRITING, 2, ["answer one", "answer two"])
    assert ref == "mt_bench_single_multi_turn@v1"
    user = messages[1]["content"]
    assert "### User:\nFirst question of 81?\n\n### Assistant A:\nanswer one\n\n" in user
    assert "### User:\nSecond question of 81?\n\n### Assistant A:\nanswer two\n\n" in user
    assert messages[0]["content"].endswith('"Rating: [[5]]".\n\n')

    ref, messages = judge_messages(MATH, 2, ["It is 3.", "It is 5 pi."])
    assert ref == "mt_bench_single_math_multi_turn@v1"
    user = messages[1]["content"]
    assert "### Reference answer:\nArea is 3\n\n" in user and "### Reference answer:\n5pi\n\n" in user
    assert "### Assistant A:\nIt is 3.\n\n" in user and "### Assistant A:\nIt is 5 pi.\n\n" in user


def test_judging_needs_the_answers_and_a_reference_where_fastchat_uses_one():
    with pytest.raises(ValueError):
        judge_messages(WRITING, 2, ["only the first"])
    with pytest.raises(ValueError):
        judge_messages(WRITING, 1, [None])
    with pytest.raises(EvaluationError, match="111 .*no reference answer"):
        judge_messages(problem("math", qid=111), 1, ["3"])


def test_answers_with_braces_and_placeholders_are_inserted_verbatim():
    answer = "def f(x): return {'a': x}  # {{answer}} {question}"
    _, messages = judge_messages(WRITING, 1, [answer])
    assert f"[The Start of Assistant's Answer]\n{answer}\n[The End" in messages[1]["content"]


def test_judge_messages_render_exactly_what_fastchat_sends_for_real_questions():
    released = fastchat_prompts()
    problems = {p.meta["category"]: p for p in load_problems(str(QUESTIONS))}
    answers = ["First answer with {braces}.", "Second answer."]
    for category, p in problems.items():
        ref_based = category in mt_bench.NEED_REF_CATS
        for turn in (1, 2):
            name = ("single-math-v1" if ref_based else "single-v1") + ("-multi-turn" if turn == 2 else "")
            kwargs = {}
            if ref_based:  # common.run_judge_single
                kwargs["ref_answer_1"] = p.meta["reference"][0]
                if turn == 2:
                    kwargs["ref_answer_2"] = p.meta["reference"][1]
            turns = p.meta["turns"]
            if turn == 2:
                user = released[name]["prompt_template"].format(question_1=turns[0], question_2=turns[1],
                                                                answer_1=answers[0], answer_2=answers[1], **kwargs)
            else:
                user = released[name]["prompt_template"].format(question=turns[0], answer=answers[0], **kwargs)
            ref, messages = judge_messages(p, turn, answers)
            assert ref == JUDGE_TEMPLATES[name]
            assert messages == [{"role": "system", "content": released[name]["system_prompt"]},
                                {"role": "user", "content": user}]


# ------------------------------------------------------------------- the numbers
def test_summarise_means_parsed_ratings_and_counts_failures():
    rows = [
        {"task_id": "81", "category": "writing", "turn": 1, "rating": 8.0},
        {"task_id": "81", "category": "writing", "turn": 2, "rating": 6.0},
        {"task_id": "111", "category": "math", "turn": 1, "rating": 3.0},
        {"task_id": "111", "category": "math", "turn": 2, "rating": None},  # no [[n]]: recorded, not averaged
        {"task_id": "112", "category": "math", "turn": 1, "rating": 10.0},
        {"task_id": "112", "category": "math", "turn": 2, "rating": 2.0},
    ]
    assert summarise(rows) == {
        "score": pytest.approx((8 + 6 + 3 + 10 + 2) / 5),
        "turn1": pytest.approx(7.0),
        "turn2": pytest.approx(4.0),
        "categories": {"writing": pytest.approx(7.0), "math": pytest.approx(5.0)},
        "judged": 5,
        "failed": 1,
        "tasks": 3,
    }


def test_a_judge_that_never_rates_gives_failures_and_no_score():
    verdicts = [score(p, "I think this answer is quite good overall.", turn=t) for p in (WRITING, MATH) for t in (1, 2)]
    summary = summarise(verdicts)
    assert summary == {"score": None, "turn1": None, "turn2": None, "categories": {"writing": None, "math": None},
                       "judged": 0, "failed": 4, "tasks": 2}
    json.dumps(summary)  # plain JSON


def test_summarise_refuses_rows_it_cannot_place():
    with pytest.raises(ValueError):
        summarise([{"task_id": "81", "category": "writing", "turn": 3, "rating": 5.0}])
    with pytest.raises(ValueError):
        summarise([{"task_id": "81", "category": "writing", "turn": 1, "rating": "7"}])


# ------------------------------------------------------------------- data
def test_all_80_questions_and_30_references_load_from_shared():
    require_mt_bench()
    problems = load_problems(str(QUESTIONS))
    assert [p.task_id for p in problems] == [str(i) for i in range(81, 161)]
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    refs = {r["question_id"]: r["choices"][0]["turns"] for r in map(json.loads, REFERENCES.read_text().splitlines())}
    for p, row in zip(problems, rows):
        assert (p.benchmark, p.language, p.suite, p.prompt) == ("mt_bench", "", "mt_bench", row["turns"][0])
        assert p.meta == {"question_id": row["question_id"], "category": row["category"], "turns": row["turns"],
                          "reference": refs[row["question_id"]] if row["category"] in mt_bench.NEED_REF_CATS else []}
    with_refs = [p for p in problems if p.meta["reference"]]
    assert len(with_refs) == 30 and {p.meta["category"] for p in with_refs} == {"math", "reasoning", "coding"}
    assert {c: sum(p.meta["category"] == c for p in problems) for c in mt_bench.CATEGORIES} == dict.fromkeys(
        mt_bench.CATEGORIES, 10)
    assert Problem.from_json(json.loads(json.dumps(problems[30].to_json()))) == problems[30]
    # the directory stands for its question.jsonl; tasks, then limit
    assert load_problems(str(MT_BENCH), tasks=["160", "111", "81"]) == [problems[0], problems[30], problems[79]]
    assert load_problems(str(MT_BENCH), limit=3) == problems[:3]


def test_the_variable_names_the_data(monkeypatch):
    require_mt_bench()
    monkeypatch.setenv("FUSION_MT_BENCH_PATH", str(QUESTIONS))
    assert len(load_problems(limit=25)[-1].meta["reference"]) == 2  # question 105, reasoning


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def reference_row(qid: int, turns=("ref one", "ref two")) -> dict:
    return {"question_id": qid, "answer_id": "x", "model_id": "gpt-4", "choices": [{"index": 0, "turns": list(turns)}]}


QUESTION_ROWS = [{"question_id": 81, "category": "writing", "turns": ["w1", "w2"]},
                 {"question_id": 111, "category": "math", "turns": ["m1", "m2"], "reference": ["3", "5pi"]}]


def test_fastchat_layout_and_a_references_path(tmp_path):
    questions = write_jsonl(tmp_path / "mt_bench/question.jsonl", QUESTION_ROWS)
    write_jsonl(tmp_path / "mt_bench/reference_answer/gpt-4.jsonl", [reference_row(81), reference_row(111)])
    writing_problem, math_problem = load_problems(str(questions))
    assert writing_problem.meta["reference"] == []  # FastChat judges only NEED_REF_CATS against a reference
    # the GPT-4 reference answer, not the question's own short "reference" note
    assert math_problem.meta["reference"] == ["ref one", "ref two"]
    other = write_jsonl(tmp_path / "elsewhere/refs.jsonl", [reference_row(111, ("other 1", "other 2"))])
    assert load_problems(str(questions), references=str(other))[1].meta["reference"] == ["other 1", "other 2"]


def hub_copy() -> list[dict]:
    """Rows shaped like HuggingFaceH4/mt_bench_prompts: FastChat's 80 questions in order, no question_id."""
    rows = []
    for n in range(80):
        prompt = [f"question {81 + n} turn 1", f"question {81 + n} turn 2"]
        rows.append({"prompt": prompt, "category": mt_bench.CATEGORIES[n // 10], "reference": [],
                     "prompt_id": int(hashlib.sha256("".join(prompt).encode()).hexdigest(), 16) % 10 ** 8})
    return rows


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.delenv("FUSION_MT_BENCH_PATH", raising=False)
    rows = hub_copy()
    asked = []

    def fake_hub_rows(ref, config, split="test", revision=None):
        asked.append((ref, config, split))
        return rows

    monkeypatch.setattr(benchmark_data, "hub_rows", fake_hub_rows)
    return rows, asked


def test_the_hub_copy_is_numbered_in_fastchats_order_and_needs_references(hub, tmp_path):
    rows, asked = hub
    refs = write_jsonl(tmp_path / "gpt-4.jsonl", [reference_row(q) for q in range(101, 131)])
    problems = load_problems(references=str(refs))
    assert asked[0] == ("HuggingFaceH4/mt_bench_prompts", None, "train")
    assert [p.task_id for p in problems] == [str(i) for i in range(81, 161)]
    assert problems[20].meta == {"question_id": 101, "category": "reasoning",
                                 "turns": ["question 101 turn 1", "question 101 turn 2"],
                                 "reference": ["ref one", "ref two"]}
    # questions that need no reference load without a reference file
    assert [p.task_id for p in load_problems(tasks=["81", "145"])] == ["81", "145"]
    with pytest.raises(EvaluationError, match=r"101, 102.*references") as err:
        load_problems()
    assert "\n" not in str(err.value)


def test_hub_rows_out_of_fastchats_order_are_refused(hub):
    rows, _ = hub
    rows[0], rows[20] = rows[20], rows[0]
    with pytest.raises(EvaluationError, match=r"row 1 is 'reasoning' where 'writing' belongs"):
        load_problems(tasks=["81"])


@pytest.mark.parametrize("content,expected", [
    (None, r"question\.jsonl: file not found"),
    ('{"question_id": 81, "category": "writing", "turns": ["a", "b"]}\n{not json\n', r"question\.jsonl: line 2"),
    ('{"question_id": 81, "category": "writing", "turns": ["only one"]}\n', r"question\.jsonl: row 1 .*two"),
    ('{"question_id": 81, "category": "writing"}\n', r"question\.jsonl: row 1 .*turns"),
    ('{"question_id": "81", "category": "writing", "turns": ["a", "b"]}\n', r"question\.jsonl: row 1: question_id"),
    ('{"question_id": 81, "turns": ["a", "b"]}\n', r"question\.jsonl: row 1 .*category"),
    ('{"question_id": 81, "category": "writing", "turns": ["a", "b"]}\n' * 2, r"question\.jsonl: question 81 .*twice"),
    ('[1, 2]\n', r"question\.jsonl: row 1 is not a JSON object"),
    ("\n", r"question\.jsonl: no questions"),
])
def test_bad_question_files_give_one_line_errors_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "question.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(EvaluationError, match=expected) as err:
        load_problems(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("references,expected", [
    (None, r"questions 111 .*need .*reference_answer_gpt-4\.jsonl"),
    ([reference_row(112)], r"gpt-4\.jsonl: no reference answer for questions 111"),
    ([{"question_id": 111, "choices": [{"turns": ["only one"]}]}], r"gpt-4\.jsonl: row 1 \(question 111\)"),
    ([reference_row(111), reference_row(111)], r"gpt-4\.jsonl: question 111 appears twice"),
    ([{"choices": []}], r"gpt-4\.jsonl: row 1: no integer question_id"),
])
def test_bad_or_missing_references_give_one_line_errors(tmp_path, references, expected):
    questions = write_jsonl(tmp_path / "question.jsonl", QUESTION_ROWS)
    if references is not None:
        write_jsonl(tmp_path / "reference_answer/gpt-4.jsonl", references)
    with pytest.raises(EvaluationError, match=expected) as err:
        load_problems(str(questions))
    assert "\n" not in str(err.value)
    # the writing question alone needs no reference
    assert [p.task_id for p in load_problems(str(questions), tasks=["81"])] == ["81"]


def test_bad_arguments_give_one_line_errors(tmp_path):
    questions = write_jsonl(tmp_path / "question.jsonl", QUESTION_ROWS[:1])
    with pytest.raises(EvaluationError, match="limit must be >= 0"):
        load_problems(str(questions), limit=-1)
    with pytest.raises(EvaluationError, match="no question 99"):
        load_problems(str(questions), tasks=["99"])
    with pytest.raises(EvaluationError, match=r"nope\.jsonl: file not found"):
        load_problems(str(questions), references=str(tmp_path / "nope.jsonl"))
