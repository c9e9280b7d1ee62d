"""No silent wrong score: the scoring self-check, and an evaluation from a checkout under /tmp.

Before a run scores anything, every suite scores a known-correct and a
known-wrong solution through its own executor, sandbox and limits
(``Executor.self_check``). Here it passes for every executor this machine can
run, and each way of breaking the scoring path stops it with one line: a
checker that cannot start, a comparison that accepts anything, Java without
``-ea``, C++ with ``NDEBUG``, a memory limit too small for the interpreter. A
run then writes nothing. Last, a whole evaluation runs from a copy of the
project and a virtualenv under /tmp (where the sandbox's work directory is
mounted) and scores right answers as passing.

None of this needs ``../shared``: the data is written by ``tests/eval_data.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest
import yaml

from ray_pipeline.jobs import load_job
from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation import evalplus_oracle
from ray_pipeline.evaluation.evalplus_data import load_evalplus
from ray_pipeline.evaluation.executors import evalplus as evalplus_executor
from ray_pipeline.evaluation.executors.cpp import CppExecutor
from ray_pipeline.evaluation.executors.evalplus import EvalPlusExecutor
from ray_pipeline.evaluation.executors.java import JavaExecutor
from ray_pipeline.evaluation.executors.languages import multiple_executor
from ray_pipeline.evaluation.problems import MULTIPLE_LANGUAGES
from ray_pipeline.evaluation.sandbox import Sandbox
from tests.conftest import REPO, needs_bwrap, read_jsonl, require_sandbox
from tests.eval_data import answer, write_evalplus, write_multiple

pytestmark = [pytest.mark.sandbox, needs_bwrap]


@pytest.fixture(scope="module", autouse=True)
def _sandbox_works() -> None:
    require_sandbox()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_evalplus(tmp_path_factory.mktemp("evalplus") / "synth.jsonl")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gt-cache")


def _evalplus(data_file: Path, cache_dir: Path, **options) -> EvalPlusExecutor:
    return EvalPlusExecutor("humaneval", load_evalplus("humaneval", data_file), cache_dir=cache_dir, **options)


def _available(language: str):
    executor = multiple_executor(language, Sandbox())
    reason = executor.unavailable_reason()
    if reason:
        pytest.skip(f"MultiPL-E {language}: {reason}")
    return executor


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


# ------------------------------------------------------------------ passing
def test_self_check_passes_for_python(data_file: Path, cache_dir: Path) -> None:
    executor = _evalplus(data_file, cache_dir)
    known = executor.known_programs()
    assert known.problem.task_id == "Synth/1"  # the task with the fewest inputs
    executor.self_check()
    assert not executor.score(known.problem, known.wrong).passed


@pytest.mark.parametrize("language", MULTIPLE_LANGUAGES)
def test_self_check_passes_for_each_multiple_language(language: str) -> None:
    executor = _available(language)
    executor.self_check()
    known = executor.known_programs()
    wrong = executor.score(known.problem, known.wrong)
    assert not wrong.passed and wrong.status != "SyntaxError", wrong  # wrong by its answer, not by its syntax


# ------------------------------------------------------------------ broken
def test_a_checker_that_cannot_start_stops_the_check(data_file: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evalplus_executor, "HARNESS", data_file.parent / "no_such_runner.py")
    with pytest.raises(EvaluationError) as err:
        _evalplus(data_file, cache_dir).self_check()
    message = _one_line(err)
    assert "known-correct solution of Synth/1 did not pass" in message and "checker crashed" in message
    assert "no_such_runner.py" in message  # the checker's own message


def test_a_memory_limit_too_small_for_the_interpreter_stops_the_check(data_file: Path, cache_dir: Path) -> None:
    with pytest.raises(EvaluationError) as err:
        _evalplus(data_file, cache_dir, memory_mb=16).self_check()
    assert "known-correct solution of Synth/1 did not pass (fail): checker crashed" in _one_line(err)


def test_a_comparison_that_accepts_anything_stops_the_check(data_file: Path, cache_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evalplus_oracle, "accepts", lambda dataset, entry, inp, out, exp, atol: (True, atol))
    with pytest.raises(EvaluationError) as err:
        _evalplus(data_file, cache_dir).self_check()
    assert "known-wrong solution of Synth/1 passed" in _one_line(err)


def test_java_without_assertions_stops_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = _available("java")
    real = JavaExecutor.run_argv
    monkeypatch.setattr(JavaExecutor, "run_argv", lambda self, *a: [x for x in real(self, *a) if x != "-ea"])
    with pytest.raises(EvaluationError) as err:
        executor.self_check()
    assert "known-wrong solution of fusion_preflight_add passed" in _one_line(err)


def test_cpp_with_ndebug_stops_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = _available("cpp")
    real = CppExecutor.build_argv
    monkeypatch.setattr(CppExecutor, "build_argv", lambda self, *a: real(self, *a) + ["-DNDEBUG"])
    with pytest.raises(EvaluationError) as err:
        executor.self_check()
    assert "known-wrong solution of fusion_preflight_add passed" in _one_line(err)


def test_a_run_whose_scoring_is_broken_writes_nothing(tmp_path: Path, data_file: Path) -> None:
    """The pipeline's preflight runs the self-check of every suite before any generation or write."""
    from ray_pipeline.evaluation.pipeline import run_evaluation

    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({
        "kind": "eval", "name": "broken", "output_dir": str(tmp_path / "run"),
        "models": [{"label": "m", "backend": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                                              "api_key": "sk-test"}}],
        "benchmarks": [{"name": "humaneval", "path": str(data_file)}],
        "sandbox": {"memory_mb": 16},
    }))
    with pytest.raises(EvaluationError) as err:
        run_evaluation(load_job(job_file))
    assert _one_line(err).startswith("cannot score humaneval: the scoring self-check failed: the known-correct")
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------- a checkout in /tmp
def test_an_evaluation_from_a_checkout_and_virtualenv_under_tmp(tmp_path: Path) -> None:
    """The project and its virtualenv in /tmp, where the sandbox mounts its work directory: nothing is hidden."""
    from tests.fault_server import FaultInjectingOpenAIServer

    root = Path("/tmp") / f"fusion-checkout-{uuid.uuid4().hex[:8]}"
    try:
        checkout, venv = root / "project", root / "venv"
        shutil.copytree(REPO / "ray_pipeline", checkout / "ray_pipeline",
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
        # the copy first, then this environment's packages (a .pth in the new virtualenv's site-packages)
        (site / "fusion_checkout.pth").write_text(f"{checkout}\n{sysconfig.get_paths()['purelib']}\n")
        languages = [lang for lang in ("js", "cpp") if multiple_executor(lang, Sandbox()).unavailable_reason() is None]
        multiple = write_multiple(tmp_path / "multiple", languages)
        data = write_evalplus(tmp_path / "synth.jsonl")
        with FaultInjectingOpenAIServer(responder=answer(right={"Synth/0"})) as srv:
            job_file = tmp_path / "job.yaml"
            job_file.write_text(yaml.safe_dump({
                "kind": "eval", "name": "tmp_checkout", "output_dir": str(tmp_path / "run"),
                "models": [{"label": "fake", "prompt": "completion", "backend": {
                    "kind": "openai", "model": "fault-model", "base_url": srv.base_url, "api_key": "sk-test"}}],
                "benchmarks": [{"name": "humaneval", "path": str(data)}]
                + ([{"name": "multiple", "path": str(multiple), "languages": languages}] if languages else []),
                "sandbox": {"parallel": 2},
            }))
            env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
            done = subprocess.run([str(venv / "bin" / "python"), "-m", "ray_pipeline.cli", "run", str(job_file)],
                                  cwd=checkout, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                                  text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["versions"]  # the run is this checkout's
        rows = {r["task_id"]: r for r in read_jsonl(tmp_path / "run" / "results" / "fake.jsonl")}
        verdicts = {tid: [s["passed"] for s in r["samples"]] for tid, r in rows.items()}
        assert verdicts["Synth/0"] == [True] and verdicts["Synth/1"] == [False], rows
        assert "checker crashed" not in json.dumps(rows)
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())["models"]["fake"]
        assert summary["humaneval"]["pass@1"] == 0.5 and summary["humaneval+"]["pass@1"] == 0.5
        for lang in languages:
            assert summary[lang]["pass@1"] == 1.0, summary
    finally:
        shutil.rmtree(root, ignore_errors=True)
