"""HumanEval+/MBPP+ scoring: evalplus's own checker, one bubblewrap sandbox per solution.

For each solution (a whole program, evalplus's ``solution`` field) a fresh
sandbox runs ``harness/evalplus_check.py`` with this environment's Python
(``-I -S``: isolated, no ``site``; the directories holding evalplus and numpy
are passed explicitly). The harness calls ``evalplus.eval.untrusted_check`` for
the base inputs and then the plus inputs, as ``evalplus.evaluate.check_correctness``
does, so the statuses are evalplus's (``pass``/``fail``/``timeout``), with its
per-input time limits (``max(min_time_limit, gt_time_limit_factor x reference
time)``), its special oracles, float tolerance and memory limit (set to the
sandbox's own through ``EVALPLUS_MAX_MEMORY_BYTES``).

The sandbox's wall-clock limit is above evalplus's own per-check timeouts
(``min(60, sum of time limits) + 1`` each, plus its join and kill grace), so
evalplus decides timeouts; should the sandbox still be killed, or the harness
crash, the verdict is ``fail`` with a detail line saying so.

Expected outputs (evalplus's oracle) come from ``expected`` or, on a task's
first use, from :func:`evalplus_data.expected_outputs` (its disk cache, else
computed); :meth:`EvalPlusExecutor.prepare` computes them up front, before
sandboxes load the machine and stretch the reference times.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pickle
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ray_pipeline.errors import EvaluationError
from ray_pipeline.evaluation.evalplus_data import EvalPlusData, Oracle, expected_outputs
from ray_pipeline.evaluation.executors.base import Executor, Verdict
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.evaluation.sandbox import Limits, Outcome, Sandbox

HARNESS = Path(__file__).resolve().parents[1] / "harness" / "evalplus_check.py"
#: evalplus's cap on one check's timeout (``EVALPLUS_TIMEOUT_PER_TASK``, unset in the sandbox)
EVALPLUS_TIMEOUT_CAP_S = 60.0
#: beyond evalplus's own timeouts: interpreter start, imports, unpickling the task
STARTUP_MARGIN_S = 10.0
#: evalplus's default address-space limit of the solution's process (4 GiB)
DEFAULT_MEMORY_MB = 4096
#: memory of the sandbox beyond the solution's own limit: the harness process holding the task's data
HARNESS_MEMORY_MB = 1024
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b")
PASS = "pass"
FAIL = "fail"


@dataclass(frozen=True)
class _Task:
    payload: bytes  # the pickled task part of the harness's stdin
    wall_s: float


class EvalPlusExecutor(Executor):
    """Scores Python solutions of one evalplus dataset."""

    language = "python"

    def __init__(
        self,
        dataset: str,
        data: EvalPlusData,
        sandbox: Sandbox | None = None,
        expected: Mapping[str, Oracle] | None = None,
        min_time_limit: float | None = None,
        gt_time_limit_factor: float | None = None,
        base_only: bool = False,
        fast_check: bool = True,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        cache_dir: str | os.PathLike | None = None,
    ):
        from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

        if dataset != data.dataset:
            raise EvaluationError(f"EvalPlusExecutor for {dataset} given {data.dataset} data")
        self.dataset = dataset
        self.data = data
        self.min_time_limit = DEFAULT_MIN_TIME_LIMIT if min_time_limit is None else float(min_time_limit)
        self.gt_time_limit_factor = (DEFAULT_GT_TIME_LIMIT_FACTOR if gt_time_limit_factor is None
                                     else float(gt_time_limit_factor))
        self.base_only = base_only
        self.fast_check = fast_check  # evalplus.evaluate's default (no per-test details)
        self.memory_mb = memory_mb
        self.cache_dir = cache_dir
        self.sys_path = _module_dirs(("evalplus", "numpy", "psutil"))
        self.sandbox = _with_binds(sandbox, [sys.prefix, sys.base_prefix, str(HARNESS.parent), *self.sys_path])
        self._expected: dict[str, Oracle] = dict(expected or {})
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- oracle
    def prepare(self, task_ids: Iterable[str] | None = None) -> None:
        """Load or compute the expected outputs of ``task_ids`` (default: every task of the data)."""
        for tid in (list(self.data.problems) if task_ids is None else task_ids):
            self._task(tid)

    def _task(self, task_id: str) -> _Task:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None:
                return task
            record = self.data.problems.get(task_id)
            if record is None:
                raise EvaluationError(f"{self.dataset}: task {task_id} is not in the loaded data")
            oracle = self._expected.pop(task_id, None)
            if oracle is None:
                oracle = expected_outputs(self.data, [task_id], self.cache_dir)[task_id]
            phases = ("base",) if self.base_only else ("base", "plus")
            task_part = {f"{p}_input": record[f"{p}_input"] for p in phases}
            task_part.update({k: oracle[k] for p in phases for k in (p, f"{p}_time")})
            wall = STARTUP_MARGIN_S + sum(self._check_timeout(oracle[f"{p}_time"]) for p in phases)
            task = _Task(pickle.dumps(task_part, protocol=pickle.HIGHEST_PROTOCOL), wall)
            self._tasks[task_id] = task
            return task

    def _check_timeout(self, ref_time: list[float]) -> float:
        """The longest one ``untrusted_check`` can take: its timeout, join grace and kill pauses."""
        limits = [max(self.min_time_limit, self.gt_time_limit_factor * t) for t in ref_time]
        timeout = min(EVALPLUS_TIMEOUT_CAP_S, sum(limits)) + 1 + (0 if self.fast_check else 1)
        return timeout + 1 + 0.2

    # ---------------------------------------------------------------- scoring
    def score(self, problem: Problem, solution: str) -> Verdict:
        task = self._task(problem.task_id)
        record = self.data.problems[problem.task_id]
        request = {
            "dataset": self.dataset, "solution": solution, "entry_point": record["entry_point"],
            "atol": record["atol"], "min_time_limit": self.min_time_limit,
            "gt_time_limit_factor": self.gt_time_limit_factor, "fast_check": self.fast_check,
            "base_only": self.base_only,
        }
        stdin = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL) + task.payload
        limits = Limits(wall_s=task.wall_s, cpu_s=math.ceil(task.wall_s), memory_mb=self.memory_mb,
                        total_memory_mb=None if self.memory_mb is None else self.memory_mb + HARNESS_MEMORY_MB)
        memory = str(self.memory_mb * 1024 * 1024) if self.memory_mb is not None else "-1"
        env = {"EVALPLUS_MAX_MEMORY_BYTES": memory,
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        outcome = self.sandbox.run([sys.executable, "-I", "-S", str(HARNESS), *self.sys_path],
                                   limits=limits, stdin=stdin, env=env)
        return self._verdict(outcome, task)

    def _verdict(self, outcome: Outcome, task: _Task) -> Verdict:
        def failed(detail: str) -> Verdict:
            return Verdict(passed=False, status=FAIL, base_passed=False, base_status=FAIL,
                           exit_code=outcome.exit_code, detail=detail, wall_s=outcome.wall_s)

        if outcome.timed_out:
            return failed(f"sandbox killed at its wall-clock limit ({task.wall_s:.0f} s)")
        report = _last_json(outcome.stdout)
        if report is None:
            return failed(f"checker crashed (exit {outcome.exit_code}): {_error_line(outcome.stderr)}")
        if "error" in report:
            return failed(f"checker error: {report['error']}")
        base, plus = report["base"], report["plus"]
        base_ok = base["status"] == PASS
        last = base if self.base_only else plus
        passed = base_ok and last["status"] == PASS
        detail = "; ".join(_describe(name, r) for name, r in (("base", base), ("plus", plus))
                           if r is not None and r["status"] != PASS)
        return Verdict(passed=passed, status=last["status"], base_passed=base_ok, base_status=base["status"],
                       exit_code=outcome.exit_code, detail=detail, wall_s=outcome.wall_s)


def _describe(phase: str, r: dict[str, Any]) -> str:
    """e.g. ``plus: fail on input 12 of 740``, ``base: timeout after 3 of 9 inputs``."""
    if r["failed_at"] is not None:
        return f"{phase}: {r['status']} on input {r['failed_at'] + 1} of {r['total']}"
    if r["status"] == "timeout":
        return f"{phase}: timeout after {r['done']} of {r['total']} inputs"
    return f"{phase}: {r['status']} ({r['done']} of {r['total']} inputs checked)"


def _error_line(stderr: str) -> str:
    """The exception line of a traceback (its last ``SomeError: ...`` line), else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (errors or lines or ["no output"])[-1]


def _last_json(stdout: str) -> dict[str, Any] | None:
    """The harness's report: the last stdout line that is a JSON object with "base" or "error"."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and ("error" in report or isinstance(report.get("base"), dict)):
            return report
    return None


def _module_dirs(modules: Iterable[str]) -> list[str]:
    """The ``sys.path`` entries the harness needs: the directories holding these packages."""
    dirs = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise EvaluationError(f"evalplus scoring needs the Python package {name}, which is not installed")
        directory = str(Path(spec.origin).resolve().parents[1])  # <dir>/<name>/__init__.py
        if directory not in dirs:
            dirs.append(directory)
    return dirs


def _with_binds(sandbox: Sandbox | None, paths: Iterable[str]) -> Sandbox:
    """A sandbox like ``sandbox`` (its binds, environment, scratch root, isolation) that also sees ``paths`` read-only.

    Paths under another bound path are dropped: a nested bind would need its
    mount point made inside a read-only mount.
    """
    base = sandbox or Sandbox()
    wanted = sorted({str(Path(p).resolve()) for p in [*base.read_only, *paths] if Path(p).exists()})
    roots: list[str] = []
    for p in wanted:
        if not any(p == r or p.startswith(r + "/") for r in roots):
            roots.append(p)
    return Sandbox(read_only=roots, env=base.env, scratch_root=base.scratch_root, isolation=base.isolation)
