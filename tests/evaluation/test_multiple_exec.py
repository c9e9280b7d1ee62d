"""MultiPL-E: the data loader, and the six executors scoring hand-written completions.

Each language with a toolchain here scores real problems from ../shared with a
correct, a wrong and a broken completion, and gets MultiPL-E's status words
(EVAL.md section 3). Missing toolchains (Swift here) are skipped, with a reason.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation import multiple_data
from ray_pipeline.evaluation.executors.java import JAVATUPLES_ENV, JavaExecutor
from ray_pipeline.evaluation.executors.languages import multiple_executor
from ray_pipeline.evaluation.executors.multiple import MultiplEExecutor
from ray_pipeline.evaluation.executors.swift import SwiftExecutor
from ray_pipeline.evaluation.multiple_data import HF_DATASET, HF_REVISION, load_multiple
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.evaluation.sandbox import Sandbox
from tests.conftest import SHARED, needs_bwrap, require_shared

pytestmark = [pytest.mark.sandbox, needs_bwrap]

MULTIPLE_DIR = SHARED / "data/bench/multipl-e"
#: problem counts of SOURCE.md
COUNTS = {"cpp": 161, "java": 158, "js": 161, "php": 161, "rs": 156, "swift": 158}


def problem(language: str, task_id: str) -> Problem:
    require_shared()
    found = [p for p in load_multiple(language, MULTIPLE_DIR) if p.task_id == task_id]
    assert len(found) == 1, task_id
    return found[0]


# ---------------------------------------------------------------------- data
@pytest.mark.parametrize("language", sorted(COUNTS))
def test_counts_match_source(language: str) -> None:
    require_shared()
    problems = load_multiple(language, MULTIPLE_DIR)
    assert len(problems) == COUNTS[language]
    assert all(p.benchmark == "multiple" and p.language == language and p.suite == f"multiple-{language}"
               for p in problems)
    assert all(p.entry_point and p.entry_point in p.tests for p in problems)


def test_problem_fields() -> None:
    require_shared()
    js = problem("javascript", "HumanEval_23_strlen")
    assert js.language == "js" and js.entry_point == "strlen"
    assert js.stop == ("\nfunction ", "\n/*", "\n//", "\nconsole.log")
    assert js.prompt.endswith("function strlen(string){\n") and "assert.deepEqual(candidate(\"x\"),1);" in js.tests
    assert problem("cpp", "HumanEval_23_strlen").entry_point == "string_length"
    java = problem("java", "HumanEval_107_even_odd_palindrome")
    assert java.entry_point == "evenOddPalindrome" and java.stop == ("\n    }\n",)


def test_limit_keeps_file_order(tmp_path: Path) -> None:
    require_shared()
    source = MULTIPLE_DIR / "humaneval-rs-reworded.jsonl"
    names = [json.loads(line)["name"] for line in source.read_text().splitlines()[:3]]
    assert [p.task_id for p in load_multiple("rust", MULTIPLE_DIR, limit=3)] == names
    assert [p.task_id for p in load_multiple("rs", source, limit=3)] == names
    assert load_multiple("rs", source, limit=0) == []
    array = tmp_path / "rs.json"  # MultiPL-E's own prompts/*.json form
    array.write_text(json.dumps([json.loads(line) for line in source.read_text().splitlines()], indent=2))
    assert load_multiple("rs", array) == load_multiple("rs", source)


ROW = {"name": "HumanEval_0_f", "language": "js", "prompt": "function f(x){\n", "tests": "test();\n",
       "stop_tokens": ["\nfunction "]}


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (json.dumps(ROW) + "\n{not json\n", "line 2 is not valid JSON"),
    (json.dumps({k: v for k, v in ROW.items() if k != "tests"}), "line 1 lacks field(s) tests"),
    (json.dumps({**ROW, "stop_tokens": "\n}"}), "'stop_tokens' must be a list"),
    (json.dumps({**ROW, "prompt": ""}), "'prompt' must be a non-empty string"),
    (json.dumps({**ROW, "language": "php"}), "is a 'php' problem, not 'js'"),
    (json.dumps(ROW) + "\n" + json.dumps(ROW), "HumanEval_0_f appears twice"),
    ("[1, 2]\n", "line 1 is not a JSON object"),
    ("\n", "no MultiPL-E problems"),
])
def test_bad_input_is_one_line_error(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "humaneval-js-reworded.jsonl").write_text(content)
    with pytest.raises(EvaluationError) as info:
        load_multiple("js", tmp_path)
    text = str(info.value)
    assert message in text and str(tmp_path / "humaneval-js-reworded.jsonl") in text and "\n" not in text


def test_unknown_language_and_bad_limit() -> None:
    with pytest.raises(EvaluationError, match="unknown MultiPL-E language 'go'"):
        load_multiple("go", "/nonexistent")
    with pytest.raises(EvaluationError, match="limit must be >= 0"):
        load_multiple("js", "/nonexistent", limit=-1)


def test_hub_loading_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    def fake_load_dataset(path: str, name: str, split: str, revision: str) -> list[dict]:
        calls.append((path, name, split, revision))
        if name != "humaneval-js":
            raise ConnectionError("offline")
        return [ROW, {**ROW, "name": "HumanEval_1_g", "prompt": "function g(y){\n"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    problems = load_multiple("javascript", limit=1)
    assert calls == [(HF_DATASET, "humaneval-js", "test", HF_REVISION)]
    assert [(p.task_id, p.entry_point) for p in problems] == [("HumanEval_0_f", "f")]
    with pytest.raises(EvaluationError, match="cannot load nuprl/MultiPL-E config humaneval-php .*ConnectionError"):
        load_multiple("php")


# ----------------------------------------------------------------- executors
@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox()
    box.check()
    return box


def available(language: str, sandbox: Sandbox, **options: float) -> MultiplEExecutor:
    executor = multiple_executor(language, sandbox, **options)
    reason = executor.unavailable_reason()
    if reason:
        pytest.skip(f"MultiPL-E {language} cannot run here: {reason}")
    return executor


STRLEN = "HumanEval_23_strlen"
GCD = "HumanEval_13_greatest_common_divisor"
EVEN_ODD = "HumanEval_107_even_odd_palindrome"

# (language, problem, completion, status, passed, text in detail)
CASES = [
    ("java", STRLEN, "\n        return string.length();", "OK", True, ""),
    ("java", STRLEN, "\n        return string.length() + 1;", "Exception", False, "AssertionError"),  # -ea is live
    ("java", STRLEN, "\n        return string.length;", "SyntaxError", False, "error: cannot find symbol"),
    ("java", EVEN_ODD, """
        long even = 0, odd = 0;
        for (long i = 1; i <= n; i++) {
            String s = Long.toString(i);
            if (new StringBuilder(s).reverse().toString().equals(s)) {
                if (i % 2 == 0) even++; else odd++;
            }
        }
        return Pair.with(even, odd);""", "OK", True, ""),
    ("js", STRLEN, "\n  return string.length;\n}", "OK", True, ""),
    ("js", STRLEN, "\n  return string.length + 1;\n}", "AssertionError", False, "AssertionError [ERR_ASSERTION]"),
    ("js", STRLEN, "\n  return string.length +;\n}", "SyntaxError", False, "SyntaxError"),
    ("js", STRLEN, "\n  return strng.length;\n}", "ReferenceError", False, "strng is not defined"),
    ("js", GCD, "\n  while (b) { [a, b] = [b, a % b]; }\n  return a;\n}", "OK", True, ""),
    ("cpp", STRLEN, "\n    return string.size();", "OK", True, ""),
    ("cpp", STRLEN, "\n    return string.size() + 1;", "Exception", False, "Assertion"),
    ("cpp", STRLEN, "\n    return string.size()", "SyntaxError", False, "error"),
    ("cpp", GCD, "\n    while (b) { long t = a % b; a = b; b = t; }\n    return a;", "OK", True, ""),
    ("php", GCD, "\n    while ($b) { $t = $a % $b; $a = $b; $b = $t; }\n    return $a;\n}", "OK", True, ""),
    ("php", GCD, "\n    return $a * $b;\n}", "Exception", False, "Test failed!"),
    # PHP's own strlen() cannot be redeclared: no completion passes this one, in MultiPL-E too
    ("php", STRLEN, "\n    return 0;\n}", "Exception", False, "Cannot redeclare strlen()"),
    # MultiPL-E looks for "PHP Parse error" in stdout; Debian's php.ini logs it to stderr: Exception
    ("php", GCD, "\n    return $a +;\n}", "Exception", False, "PHP Parse error"),
    ("rs", STRLEN, "\n    string.len() as isize", "OK", True, ""),
    ("rs", STRLEN, "\n    string.len() as isize + 1", "Exception", False, "panicked"),
    ("rs", STRLEN, "\n    string.len() as i32", "SyntaxError", False, "error[E0308]"),
    ("rs", GCD, "\n    let (mut a, mut b) = (a, b);\n    while b != 0 { let t = a % b; a = b; b = t; }\n    a",
     "OK", True, ""),
    ("swift", STRLEN, "\n    return string.count", "OK", True, ""),
    ("swift", STRLEN, "\n    return string.count + 1", "Exception", False, ""),
]


@pytest.mark.parametrize("language, task_id, completion, status, passed, detail", CASES,
                         ids=[f"{c[0]}-{c[1].split('_')[1]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_scores_like_multiple(sandbox: Sandbox, language: str, task_id: str, completion: str, status: str,
                              passed: bool, detail: str) -> None:
    executor = available(language, sandbox)
    verdict = executor.score(problem(language, task_id), completion)
    assert (verdict.status, verdict.passed) == (status, passed), verdict
    assert (verdict.exit_code == 0) == passed
    assert detail in verdict.detail and "\n" not in verdict.detail
    assert verdict.base_passed is None and verdict.wall_s > 0


def test_run_timeout(sandbox: Sandbox) -> None:
    executor = available("cpp", sandbox, run_timeout_s=1.0)
    verdict = executor.score(problem("cpp", STRLEN), "\n    while (true) {}\n    return 0;")
    assert (verdict.status, verdict.passed, verdict.exit_code) == ("Timeout", False, -1)
    assert verdict.detail == "run: timeout after 1 s" and 1.0 <= verdict.wall_s < 5


def test_php_timeout_is_an_exception(sandbox: Sandbox) -> None:
    executor = available("php", sandbox, run_timeout_s=0.5)
    verdict = executor.score(problem("php", GCD), "\n    while (true) {}\n}")
    assert (verdict.status, verdict.passed, verdict.exit_code) == ("Exception", False, -1)


@pytest.mark.parametrize("language, status", [("cpp", "SyntaxError"), ("rs", "Timeout")])
def test_build_timeout_status(sandbox: Sandbox, language: str, status: str) -> None:
    executor = available(language, sandbox, build_timeout_s=0.02)
    verdict = executor.score(problem(language, STRLEN), "\n    return 0;")
    assert (verdict.status, verdict.passed, verdict.exit_code) == (status, False, -1)
    assert verdict.detail == "build: timeout after 0.02 s"


def test_identical_programs_run_once(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    executor = available("js", sandbox)
    strlen = problem("js", STRLEN)
    first = executor.score(strlen, "\n  return string.length;\n}")

    def no_second_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("an identical program was run again")

    monkeypatch.setattr(executor.sandbox, "run", no_second_run)
    assert executor.score(strlen, "\n  return string.length;\n}") == first
    with pytest.raises(AssertionError, match="run again"):
        executor.score(strlen, "\n  return string.length + 0;\n}")


def test_missing_swiftc_is_a_reason(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    swift = SwiftExecutor(sandbox)
    assert swift.unavailable_reason() == "swiftc not found"
    with pytest.raises(EvaluationError, match="cannot score MultiPL-E swift: swiftc not found"):
        swift.score(Problem("multiple", "swift", "t", "func f() {\n", "f", ("\n}",), "}\n"), "")


def test_java_without_javatuples_is_unavailable(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    available("java", sandbox)  # javac and java are here
    missing = tmp_path / "javatuples-1.2.jar"
    reason = JavaExecutor(sandbox, javatuples_jar=missing).unavailable_reason()
    assert reason is not None and "javatuples jar not found" in reason and str(missing) in reason
    monkeypatch.setenv(JAVATUPLES_ENV, str(missing))
    assert str(missing) in (JavaExecutor(sandbox).unavailable_reason() or "")
    missing.write_bytes(b"PK")  # a jar found through the environment is used, bound read-only
    java = JavaExecutor(sandbox)
    assert java.unavailable_reason() is None and str(missing) in java.sandbox.read_only


def test_executor_registry(sandbox: Sandbox) -> None:
    assert multiple_executor("JavaScript", sandbox).language == "js"
    assert multiple_executor("rust", sandbox).language == "rs"
    assert multiple_executor("c++", sandbox).EXTENSION == ".cpp"
    with pytest.raises(EvaluationError, match="unknown MultiPL-E language 'ruby'"):
        multiple_executor("ruby", sandbox)
    assert multiple_data.data_file_name("rust") == "humaneval-rs-reworded.jsonl"


# ------------------------------------------------------------ limits and exit codes as MultiPL-E's
#: completions of the self-check's `add` problem (no ../shared needed) that do what MultiPL-E's evaluator lets a
#: program do, each on the first call only (x == 0), then answer right; (language, completion)
GENEROUS = {
    "allocate_2_5_gb": ("cpp", "    if (x == 0) { char *p = new char[2500ull << 20]; p[0] = 1; p[1] = p[0]; }\n"
                               "    return x + y;\n"),
    "cpp_100_threads": ("cpp", "    if (x == 0) {\n        std::vector<std::thread> ts;\n"
                               "        for (int i = 0; i < 100; i++)\n"
                               "            ts.emplace_back([] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); });\n"
                               "        for (auto &t : ts) t.join();\n    }\n    return x + y;\n"),
    "print_1_mb": ("cpp", "    if (x == 0) { std::string s(1 << 20, 'x'); std::cout << s << std::endl; }\n"
                          "    return x + y;\n"),
    "rust_100_threads": ("rs", "    if x == 0 {\n        let hs: Vec<_> = (0..100).map(|_| std::thread::spawn(|| "
                               "std::thread::sleep(std::time::Duration::from_millis(300)))).collect();\n"
                               "        for h in hs { h.join().unwrap(); }\n    }\n    x + y\n"),
    "java_heap_2_1_gb": ("java", "        if (x == 0) { long[] big = new long[270_000_000]; big[1] = 1; x += big[0]; }\n"
                                 "        return x + y;\n"),
}


def _known(executor: MultiplEExecutor) -> Problem:
    return executor.known_programs().problem


@pytest.mark.parametrize("name", sorted(GENEROUS))
def test_limits_accept_what_multiple_accepts(sandbox: Sandbox, name: str) -> None:
    """Memory, threads, heaps and output volume that MultiPL-E's evaluator allows pass here too."""
    language, completion = GENEROUS[name]
    executor = available(language, sandbox)
    verdict = executor.score(_known(executor), completion)
    assert verdict.passed and (verdict.status, verdict.exit_code) == ("OK", 0), verdict


def test_killed_programs_get_multiple_exit_codes(sandbox: Sandbox) -> None:
    """A failed C assert aborts (SIGABRT: -6), a null write segfaults (SIGSEGV: -11), as MultiPL-E's results say."""
    executor = available("cpp", sandbox)
    problem = _known(executor)
    aborted = executor.score(problem, executor.known_programs().wrong)
    assert (aborted.status, aborted.exit_code, aborted.passed) == ("Exception", -6, False), aborted
    crashed = executor.score(problem, "    if (x == 0) { volatile int *p = nullptr; *p = 1; }\n    return x + y;\n")
    assert (crashed.status, crashed.exit_code, crashed.passed) == ("Exception", -11, False), crashed


def test_limits_are_configurable(sandbox: Sandbox) -> None:
    """A smaller memory or process limit than the default fails what the default lets through."""
    executor = available("cpp", sandbox, memory_mb=1024)
    verdict = executor.score(_known(executor), GENEROUS["allocate_2_5_gb"][1])
    assert not verdict.passed and verdict.status == "Exception", verdict
    few = available("cpp", sandbox, nproc=16)
    verdict = few.score(_known(few), GENEROUS["cpp_100_threads"][1])
    assert not verdict.passed and verdict.status == "Exception", verdict


def test_an_exit_code_above_the_signals_is_kept(sandbox: Sandbox) -> None:
    """PHP exits 255 on an uncaught exception: MultiPL-E records 255, and so does this (not a signal)."""
    executor = available("php", sandbox)
    verdict = executor.score(_known(executor), executor.known_programs().wrong)
    assert (verdict.status, verdict.exit_code) == ("Exception", 255), verdict
