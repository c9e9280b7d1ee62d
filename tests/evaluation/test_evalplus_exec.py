"""HumanEval+/MBPP+ scoring in the sandbox gives evalplus's own verdicts, and none a solution can forge.

Every verdict is compared with ``evalplus.evaluate.check_correctness`` run in
this process (outside the sandbox) on the same solution and expected outputs:
canonical solutions, including the special-oracle tasks, and wrong ones (a wrong
constant, an off-by-one that only the plus inputs catch, an exception, a syntax
error, an endless loop inside the function and one at import). Solutions that
forge their verdict (``tests/hostile_programs.FORGERIES``) pass under evalplus's
own checker and fail here; a solution that leaves an orphan behind is not held
up by it. Also: the data is processed as evalplus processes it, the
expected-output cache is written, reused and extended, and bad input gives
one-line errors.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation import evalplus_data
from ray_pipeline.evaluation.evalplus_data import EvalPlusData, expected_outputs, load_evalplus
from ray_pipeline.evaluation.executors import evalplus as evalplus_executor
from ray_pipeline.evaluation.executors.base import Verdict
from ray_pipeline.evaluation.executors.evalplus import EvalPlusExecutor
from tests.conftest import SHARED, needs_bwrap, require_sandbox, require_shared
from tests.hostile_programs import FORGERIES, FORGES_EVALPLUS, ORPHAN

pytestmark = [pytest.mark.sandbox, needs_bwrap]

HUMANEVAL = SHARED / "data/bench/evalplus/HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP = SHARED / "data/bench/evalplus/MbppPlus-v0.2.0.jsonl.gz"
#: the md5 evalplus 0.3.1 names its ground-truth cache after for the HumanEval+ v0.1.10 release
HUMANEVAL_HASH = "924d06df44399bb3c99d9196cb43018f"
HE_TASKS = ["HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/12", "HumanEval/20", "HumanEval/32",
            "HumanEval/53", "HumanEval/97"]
# 2: set comparison + tuple inputs; 63: nested tuples; 124: complex inputs, atol; 558 and 581: special
# oracles; 737 and 787: output-not-None tasks; 6: plain
MBPP_TASKS = ["Mbpp/2", "Mbpp/6", "Mbpp/63", "Mbpp/124", "Mbpp/558", "Mbpp/581", "Mbpp/737", "Mbpp/787"]


@pytest.fixture(scope="module", autouse=True)
def _needs_data_and_sandbox() -> None:
    require_shared()
    require_sandbox()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gt-cache")


@pytest.fixture(scope="module")
def he() -> EvalPlusData:
    return load_evalplus("humaneval", HUMANEVAL, task_ids=HE_TASKS)


@pytest.fixture(scope="module")
def mbpp() -> EvalPlusData:
    return load_evalplus("mbpp", MBPP, task_ids=MBPP_TASKS)


@pytest.fixture(scope="module")
def executors(he: EvalPlusData, mbpp: EvalPlusData, cache_dir: Path) -> dict[str, EvalPlusExecutor]:
    # 2048 MB: the job default (SandboxConfig.memory_mb), below evalplus's own 4 GiB, which the harness
    # must then not try to set
    return {"humaneval": EvalPlusExecutor("humaneval", he, cache_dir=cache_dir, memory_mb=2048),
            "mbpp": EvalPlusExecutor("mbpp", mbpp, cache_dir=cache_dir, memory_mb=2048)}


def _in_process(data: EvalPlusData, task_id: str, solution: str, cache_dir: Path, base_only: bool = False,
                min_time_limit: float = 1.0) -> dict[str, tuple[str, int] | None]:
    """evalplus's own check_correctness, outside the sandbox: each phase's (status, inputs run)."""
    from evalplus.evaluate import check_correctness

    oracle = expected_outputs(data, [task_id], cache_dir)[task_id]
    ret = check_correctness(data.dataset, 0, data.problems[task_id], solution, oracle, base_only=base_only,
                            fast_check=True, min_time_limit=min_time_limit)
    return {p: (ret[p][0], len(ret[p][1])) if p in ret else None for p in ("base", "plus")}


def _assert_same(verdict: Verdict, theirs: dict[str, Any], executor: EvalPlusExecutor) -> None:
    """Same statuses, and where a phase did not pass, the detail names as many inputs run as evalplus ran."""
    for phase, result in theirs.items():
        if result is not None and result[0] != "pass":
            segment = next(s for s in verdict.detail.split("; ") if s.startswith(f"{phase}: "))
            assert re.search(rf"\b{result[1]} of \d+", segment), (verdict, theirs)
    assert verdict.base_status == theirs["base"][0], (verdict, theirs)
    if executor.base_only:
        assert verdict.status == theirs["base"][0] and theirs["plus"] is None
    else:
        assert verdict.status == theirs["plus"][0], (verdict, theirs)
    assert verdict.passed == (theirs["base"][0] == "pass" and (executor.base_only or theirs["plus"][0] == "pass"))


# ------------------------------------------------------------------------ data
def test_humaneval_data_problems_and_stop(he: EvalPlusData) -> None:
    assert he.hash == HUMANEVAL_HASH
    assert list(he.problems) == HE_TASKS
    problems = he.as_problems()
    assert [p.task_id for p in problems] == HE_TASKS
    p0 = problems[0]
    assert (p0.benchmark, p0.language, p0.entry_point) == ("humaneval", "python", "has_close_elements")
    assert p0.prompt == he.problems["HumanEval/0"]["prompt"] and p0.suite == "humaneval"
    # evalplus's codegen for a base model: extra_eos_for_direct_completion("humaneval") + EOS, the
    # dataset's own first (an OpenAI-compatible server takes only the first 4)
    assert p0.stop == ("\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert ",
                       "<|endoftext|>", "<|endofmask|>", "</s>", "\nif __name__", "\ndef main(", "\nprint(")
    assert load_evalplus("mbpp", MBPP, limit=1).as_problems()[0].stop[:2] == ('\n"""', "\nassert")
    assert list(load_evalplus("humaneval", HUMANEVAL, limit=3).problems) == ["HumanEval/0", "HumanEval/1",
                                                                           "HumanEval/2"]


def test_mbpp_records_equal_evalplus_get_mbpp_plus(mbpp: EvalPlusData, tmp_path: Path) -> None:
    """Inputs deserialised as evalplus does (tuples, sets, complex numbers), and the same hash."""
    out = tmp_path / "theirs.pkl"
    code = (
        "import pickle, sys\n"
        "from evalplus.data import get_mbpp_plus, get_mbpp_plus_hash\n"
        "p = get_mbpp_plus()\n"
        f"pickle.dump(({{t: p[t] for t in {MBPP_TASKS!r}}}, get_mbpp_plus_hash()), open(sys.argv[1], 'wb'))\n"
    )
    env = {**os.environ, "MBPP_OVERRIDE_PATH": str(MBPP)}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, capture_output=True, timeout=120)
    theirs, their_hash = pickle.loads(out.read_bytes())
    assert mbpp.hash == their_hash
    for tid in MBPP_TASKS:
        assert repr(mbpp.problems[tid]) == repr(theirs[tid]), tid  # repr: tuple vs list, complex, set all show
    assert isinstance(mbpp.problems["Mbpp/124"]["base_input"][0][1], complex)
    assert isinstance(mbpp.problems["Mbpp/2"]["base_input"][0][0], tuple)


def test_override_variable_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(HUMANEVAL))
    data = load_evalplus("humaneval", limit=2)
    assert data.path == str(HUMANEVAL) and list(data.problems) == ["HumanEval/0", "HumanEval/1"]


# ------------------------------------------------------------------- verdicts
def test_canonical_solutions_match_evalplus(he: EvalPlusData, mbpp: EvalPlusData, cache_dir: Path,
                                            executors: dict[str, EvalPlusExecutor]) -> None:
    """prompt + canonical_solution: pass on base and plus, except where evalplus 0.3.1 itself fails it."""
    jobs = [(data, tid) for data in (he, mbpp) for tid in data.problems]
    problems = {p.task_id: p for data in (he, mbpp) for p in data.as_problems()}

    def score(job: tuple[EvalPlusData, str]) -> Verdict:
        data, tid = job
        rec = data.problems[tid]
        return executors[data.dataset].score(problems[tid], rec["prompt"] + rec["canonical_solution"])

    with ThreadPoolExecutor(max_workers=2) as pool:  # the executor is shared by threads, as in ExecutionStage
        verdicts = list(pool.map(score, jobs))
    for (data, tid), verdict in zip(jobs, verdicts):
        rec = data.problems[tid]
        theirs = _in_process(data, tid, rec["prompt"] + rec["canonical_solution"], cache_dir)
        assert verdict.passed and verdict.base_passed and verdict.status == "pass", (tid, verdict)
        assert verdict.detail == "" and verdict.exit_code == 0
        if tid == "HumanEval/32":
            # the one difference on purpose (docs/fidelity.md): evalplus 0.3.1's find_zero oracle `continue`s
            # before it records the input as passed, so even the canonical solution fails there; upstream fixed
            # it, and so does our oracle
            assert theirs == {"base": ("fail", 0), "plus": ("fail", 0)}
        else:
            _assert_same(verdict, theirs, executors[data.dataset])


def test_find_zero_can_be_scored_as_evalplus_0_3_1(he: EvalPlusData, cache_dir: Path) -> None:
    """The switch back to evalplus 0.3.1's HumanEval/32 oracle gives its verdict on the canonical solution."""
    executor = EvalPlusExecutor("humaneval", he, cache_dir=cache_dir, find_zero="0.3.1")
    rec = he.problems["HumanEval/32"]
    solution = rec["prompt"] + rec["canonical_solution"]
    problem = next(p for p in he.as_problems() if p.task_id == "HumanEval/32")
    verdict = executor.score(problem, solution)
    assert (verdict.base_status, verdict.status, verdict.passed) == ("fail", "fail", False)
    _assert_same(verdict, _in_process(he, "HumanEval/32", solution, cache_dir), executor)


WRONG = [
    # (dataset, task, body replacing the canonical solution, base status, plus status)
    ("humaneval", "HumanEval/2", "    return 0.5\n", "fail", "fail"),  # wrong constant
    ("humaneval", "HumanEval/0", None, "pass", "fail"),  # `<` -> `<=`: only plus inputs catch it
    ("humaneval", "HumanEval/12", "    raise ValueError('no')\n", "fail", "fail"),  # exception
    ("mbpp", "Mbpp/581", "def surface_Area(b, s:\n    return 1\n", "fail", "fail"),  # syntax error
    ("mbpp", "Mbpp/737", "import re\ndef check_str(s):\n    return None\n", "fail", "fail"),  # not-None oracle
]


@pytest.mark.parametrize("dataset,task_id,body,base,plus", WRONG, ids=[w[1] for w in WRONG])
def test_wrong_solutions_fail_as_in_evalplus(dataset: str, task_id: str, body: str | None, base: str, plus: str,
                                             executors: dict[str, EvalPlusExecutor], cache_dir: Path) -> None:
    executor = executors[dataset]
    rec = executor.data.problems[task_id]
    if body is None:
        solution = rec["prompt"] + rec["canonical_solution"].replace("< threshold", "<= threshold")
    else:
        solution = (rec["prompt"] if dataset == "humaneval" else "") + body
    problem = next(p for p in executor.data.as_problems() if p.task_id == task_id)
    verdict = executor.score(problem, solution)
    assert (verdict.base_status, verdict.status) == (base, plus), verdict
    assert not verdict.passed and verdict.base_passed == (base == "pass")
    assert verdict.detail and "\n" not in verdict.detail
    _assert_same(verdict, _in_process(executor.data, task_id, solution, cache_dir), executor)


def test_endless_loops(he: EvalPlusData, cache_dir: Path) -> None:
    """In the function: evalplus's per-input limit stops it (fail). At import: evalplus kills it (timeout)."""
    problem = next(p for p in he.as_problems() if p.task_id == "HumanEval/2")
    prompt = he.problems["HumanEval/2"]["prompt"]
    short = EvalPlusExecutor("humaneval", he, cache_dir=cache_dir, min_time_limit=0.1)
    in_fn = prompt + "    while True:\n        pass\n"
    verdict = short.score(problem, in_fn)
    assert (verdict.base_status, verdict.status) == ("fail", "fail") and "input 1 of" in verdict.detail
    _assert_same(verdict, _in_process(he, "HumanEval/2", in_fn, cache_dir, min_time_limit=0.1), short)

    base_only = EvalPlusExecutor("humaneval", he, cache_dir=cache_dir, min_time_limit=0.1, base_only=True)
    at_import = prompt + "    return 0.0\nwhile True:\n    pass\n"
    verdict = base_only.score(problem, at_import)
    assert (verdict.base_status, verdict.status, verdict.passed) == ("timeout", "timeout", False)
    assert verdict.detail == "base: timeout after 0 of 3 inputs"
    assert verdict.wall_s < 10  # evalplus's own timeout (3 x 0.1 s + 2 s grace), not the sandbox's
    _assert_same(verdict, _in_process(he, "HumanEval/2", at_import, cache_dir, base_only=True,
                                      min_time_limit=0.1), base_only)


def test_sandbox_kill_and_checker_crash_are_fail(he: EvalPlusData, cache_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    problem = next(p for p in he.as_problems() if p.task_id == "HumanEval/0")
    rec = he.problems["HumanEval/0"]
    canonical = rec["prompt"] + rec["canonical_solution"]
    crashed = EvalPlusExecutor("humaneval", he, cache_dir=cache_dir, memory_mb=16).score(problem, canonical)
    assert (crashed.passed, crashed.status, crashed.base_status) == (False, "fail", "fail")
    assert crashed.detail.startswith("checker crashed (exit ") and "\n" not in crashed.detail
    monkeypatch.setattr(evalplus_executor, "STARTUP_MARGIN_S", 0.05)  # a sandbox wall limit of 0.05 s
    monkeypatch.setattr(EvalPlusExecutor, "_check_timeout", lambda self, ref_time: 0.0)
    killed = EvalPlusExecutor("humaneval", he, cache_dir=cache_dir)
    verdict = killed.score(problem, canonical)
    assert (verdict.passed, verdict.status, verdict.base_status) == (False, "fail", "fail")
    assert verdict.detail.startswith("sandbox killed at its wall-clock limit")


def test_sandbox_wall_limit_exceeds_evalplus_timeouts(executors: dict[str, EvalPlusExecutor]) -> None:
    executor = executors["mbpp"]
    oracle = expected_outputs(executor.data, ["Mbpp/2"], executor.cache_dir)["Mbpp/2"]
    task = executor._task("Mbpp/2")
    theirs = 0.0
    for phase in ("base", "plus"):  # evalplus.eval.untrusted_check: join(timeout + 1)
        limits = [max(1.0, 4.0 * t) for t in oracle[f"{phase}_time"]]
        theirs += min(60, sum(limits)) + 1 + 1
    assert task.wall_s > theirs


# ---------------------------------------------------------------------- cache
def test_ground_truth_cache_written_reused_extended(he: EvalPlusData, mbpp: EvalPlusData, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from evalplus.gen.util import trusted_exec

    first = expected_outputs(mbpp, ["Mbpp/737", "Mbpp/6"], tmp_path)
    files = {t: evalplus_data.cache_path(mbpp, t, tmp_path) for t in ("Mbpp/737", "Mbpp/6")}
    assert all(f.is_file() for f in files.values())
    assert files["Mbpp/6"].parent.name == f"mbpp-{mbpp.hash}"
    assert not [p for p in files["Mbpp/6"].parent.iterdir() if p.name.startswith(".tmp-")]
    rec = mbpp.problems["Mbpp/737"]  # an output-not-None task: only booleans recorded
    assert first["Mbpp/737"]["plus"] == trusted_exec(rec["prompt"] + rec["canonical_solution"], rec["plus_input"],
                                                     "check_str", output_not_none=True)
    assert all(isinstance(x, bool) for x in first["Mbpp/737"]["base"])
    assert len(first["Mbpp/6"]["plus_time"]) == len(mbpp.problems["Mbpp/6"]["plus_input"])
    stamps = {t: f.stat().st_mtime_ns for t, f in files.items()}

    computed: list[str] = []
    real = evalplus_data.compute_oracle
    monkeypatch.setattr(evalplus_data, "compute_oracle",
                        lambda ds, r: computed.append(r["task_id"]) or real(ds, r))
    files["Mbpp/6"].write_bytes(b"not a pickle")  # an unreadable entry is recomputed
    more = expected_outputs(mbpp, ["Mbpp/737", "Mbpp/6", "Mbpp/2"], tmp_path)
    assert computed == ["Mbpp/6", "Mbpp/2"]
    assert files["Mbpp/737"].stat().st_mtime_ns == stamps["Mbpp/737"]
    assert more["Mbpp/737"] == first["Mbpp/737"] and more["Mbpp/6"]["plus"] == first["Mbpp/6"]["plus"]
    assert evalplus_data.cache_path(mbpp, "Mbpp/2", tmp_path).is_file()
    assert pickle.loads(files["Mbpp/6"].read_bytes())["base"] == first["Mbpp/6"]["base"]
    computed.clear()
    expected_outputs(mbpp, ["Mbpp/2", "Mbpp/6"], tmp_path)
    assert computed == []
    expected_outputs(he, ["HumanEval/0"], tmp_path)  # another dataset, another directory
    assert evalplus_data.cache_path(he, "HumanEval/0", tmp_path).parent.name == f"humaneval-{HUMANEVAL_HASH}"


# ------------------------------------------------------------------ bad input
def _one_line(exc: pytest.ExceptionInfo[EvaluationError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_bad_input_one_line_errors(tmp_path: Path, he: EvalPlusData) -> None:
    with pytest.raises(EvaluationError) as exc:
        load_evalplus("apps", HUMANEVAL)
    assert "unknown evalplus dataset 'apps'" in _one_line(exc)
    with pytest.raises(EvaluationError) as exc:
        load_evalplus("humaneval", tmp_path / "missing.jsonl")
    assert "data file not found" in _one_line(exc) and "missing.jsonl" in str(exc.value)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"task_id": "X/1", "question": "?"}) + "\n")
    with pytest.raises(EvaluationError) as exc:
        load_evalplus("humaneval", foreign)
    assert "record 1 lacks prompt, entry_point" in _one_line(exc)
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(EvaluationError) as exc:
        load_evalplus("mbpp", broken)
    assert "cannot read" in _one_line(exc)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"task_id": "HumanEval/0",\n')
    with pytest.raises(EvaluationError) as exc:
        load_evalplus("humaneval", garbage)
    assert "cannot read" in _one_line(exc)
    with pytest.raises(EvaluationError) as exc:
        load_evalplus("humaneval", HUMANEVAL, task_ids=["HumanEval/0", "HumanEval/999"])
    assert "HumanEval/999" in _one_line(exc)
    with pytest.raises(EvaluationError) as exc:
        load_evalplus("humaneval", HUMANEVAL, limit=0)
    assert "limit" in _one_line(exc)
    with pytest.raises(EvaluationError) as exc:
        EvalPlusExecutor("mbpp", he)
    assert "given humaneval data" in _one_line(exc)
    executor = EvalPlusExecutor("humaneval", load_evalplus("humaneval", HUMANEVAL, limit=1), cache_dir=tmp_path)
    other = next(p for p in he.as_problems() if p.task_id == "HumanEval/2")
    with pytest.raises(EvaluationError) as exc:
        executor.score(other, "x = 1\n")
    assert "HumanEval/2 is not in the loaded data" in _one_line(exc)


# ------------------------------------------------------------------ forgeries
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_verdicts_fail(name: str, executors: dict[str, EvalPlusExecutor], cache_dir: Path) -> None:
    """Solutions that forge the verdict instead of answering fail here; several pass under evalplus's checker."""
    executor = executors["humaneval"]
    problem = next(p for p in executor.data.as_problems() if p.task_id == "HumanEval/2")
    solution = executor.data.problems["HumanEval/2"]["prompt"].split("def truncate_number")[0] + FORGERIES[name]
    verdict = executor.score(problem, solution)
    assert not verdict.passed and not verdict.base_passed, verdict
    assert verdict.status != "pass" and verdict.base_status != "pass"
    assert verdict.detail and "\n" not in verdict.detail
    if name in FORGES_EVALPLUS:  # the attack is real: evalplus's own checker is fooled (the others would write
        # to this process's descriptors, so they are not run outside a sandbox)
        theirs = _in_process(executor.data, "HumanEval/2", solution, cache_dir)
        assert theirs["base"][0] == "pass" and theirs["plus"][0] == "pass", theirs


def test_an_orphan_does_not_hold_the_sandbox(executors: dict[str, EvalPlusExecutor]) -> None:
    """A correct solution that leaves a process behind passes at once, and the process is gone."""
    executor = executors["humaneval"]
    problem = next(p for p in executor.data.as_problems() if p.task_id == "HumanEval/2")
    marker = f"fusion-orphan-{os.getpid()}"
    verdict = executor.score(problem, ORPHAN.format(marker=marker))
    assert verdict.passed, verdict
    assert verdict.wall_s < 5, verdict  # evalplus waits its whole per-phase timeout for it
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker in _cmdline(p)]
    assert left == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_outputs_leave_the_sandbox_as_plain_data_of_their_exact_type(executors: dict[str, EvalPlusExecutor]) -> None:
    """NumPy scalars and subclasses of plain types count as the value they hold; a tuple for a list does not."""
    executor = executors["mbpp"]
    problem = next(p for p in executor.data.as_problems() if p.task_id == "Mbpp/63")  # max_difference -> int
    rec = executor.data.problems["Mbpp/63"]
    numpy_int = rec["canonical_solution"] + "\nimport numpy\n_real = max_difference\n" \
                                            "def max_difference(test_list):\n    return numpy.int64(_real(test_list))\n"
    assert executor.score(problem, numpy_int).passed
    he = executors["humaneval"]
    problem = next(p for p in he.data.as_problems() if p.task_id == "HumanEval/12")  # longest -> str or None
    rec = he.data.problems["HumanEval/12"]
    as_tuple = rec["prompt"] + rec["canonical_solution"] + "\n_real = longest\ndef longest(strings):\n" \
                                                          "    return (_real(strings),)\n"
    verdict = he.score(problem, as_tuple)
    assert not verdict.passed and "wrong output" in verdict.detail
