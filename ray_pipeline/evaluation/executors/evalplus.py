"""HumanEval+/MBPP+ scoring: the solution runs in a bubblewrap sandbox, the verdict is made outside it.

For each solution (a whole program, evalplus's ``solution`` field) a fresh
sandbox runs ``harness/evalplus_run.py`` with this environment's Python
(``-I -S``: isolated, no ``site``; the site-packages directory is passed
explicitly, so a solution imports what it could under evalplus). The runner
does what ``evalplus.eval.untrusted_check`` does for the base inputs and then
the plus inputs (a fresh process per phase, evalplus's ``reliability_guard``,
``swallow_io``, per-input ``time_limit`` and phase timeout) but compares
nothing: it writes each output as plain data (``harness/plain_values.py``).
The expected outputs never enter the sandbox. This process reads the outputs
back and applies evalplus's comparison (``evaluation.evalplus_oracle``: its
special oracles and float tolerance), so a solution cannot vouch for itself
(an ``__eq__`` that always says True, a patched checker, a printed verdict,
an early exit).

Time limits are evalplus's: per input ``max(min_time_limit, gt_time_limit_factor
x reference time)``, per phase ``min(60, sum of limits) + 1`` with its join
grace; the sandbox's wall-clock limit is above both, so evalplus's rules decide
timeouts. Should the sandbox still be killed, or the runner not start, the
verdict is ``fail`` with a detail line saying so. The memory limit of the
solution's process is evalplus's (``memory_mb``, default 4 GiB).

Expected outputs (evalplus's oracle) come from ``expected`` or, on a task's
first use, from :func:`evalplus_data.expected_outputs` (its disk cache, else
computed); :meth:`EvalPlusExecutor.prepare` computes them up front, before
sandboxes load the machine and stretch the reference times. A task's largest
output sizes the sandbox's file-size and disk limits, so a correct solution
always has room to write its outputs.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import re
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping

from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation.evalplus_data import EvalPlusData, Oracle, expected_outputs
from ray_pipeline.evaluation.evalplus_oracle import FAIL, PASS, TIMEOUT, PhaseJudge, PhaseResult
from ray_pipeline.evaluation.executors.base import DEFAULT_NPROC, Executor, KnownPrograms, Verdict
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.evaluation.sandbox import Limits, Outcome, Sandbox, open_work_file

HARNESS = Path(__file__).resolve().parents[1] / "harness" / "evalplus_run.py"
#: evalplus's cap on one check's timeout (``EVALPLUS_TIMEOUT_PER_TASK``, unset in the sandbox)
EVALPLUS_TIMEOUT_CAP_S = 60.0
#: beyond evalplus's own timeouts: interpreter start, unpickling the inputs, writing the outputs
STARTUP_MARGIN_S = 10.0
#: evalplus's default address-space limit of the solution's process (4 GiB)
DEFAULT_MEMORY_MB = 4096
#: memory of the sandbox beyond the solution's own limit: the runner process holding the task's inputs
HARNESS_MEMORY_MB = 1024
#: the sandbox's default file-size and disk limits, raised for tasks whose outputs are larger
BASE_LIMITS = Limits()
_MB = 1 << 20
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b")
PHASES = ("base", "plus")
#: a solution that may import NumPy: the runner imports it before evalplus's reliability_guard, as evalplus's
#: own process has it loaded (imported after the guard, NumPy fails: the guard removes os functions it calls)
_USES_NUMPY = re.compile(r"\b(numpy|scipy)\b")
#: what the self-check's known-wrong solution returns for every input
WRONG_ANSWER = "fusion: a known-wrong answer"


@dataclass(frozen=True)
class _Task:
    payload: bytes  # the pickled phases part of the runner's stdin (inputs, time limits; no expected outputs)
    wall_s: float
    not_none: bool  # an MBPP+ task whose oracle asks only whether the output is not None
    room_mb: int  # room for the outputs of a correct solution (the largest phase's, twice over)


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
        nproc: int | None = None,
        find_zero: str = "fixed",
        output_mb: int | None = None,
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
        self.fast_check = fast_check  # evalplus.evaluate's default (stop a phase at its first failing input)
        self.memory_mb = memory_mb
        self.nproc = nproc or DEFAULT_NPROC
        self.find_zero = find_zero  # "fixed" (evalplus upstream) or "0.3.1" (its bug, reproduced)
        self.output_mb = output_mb or BASE_LIMITS.fsize_mb
        self.cache_dir = cache_dir
        self.evalplus_utils = _evalplus_utils()
        self.site_dirs = _site_dirs()
        self.sandbox = _with_binds(sandbox, [sys.prefix, sys.base_prefix, str(HARNESS.parent),
                                             str(Path(self.evalplus_utils).parent), *self.site_dirs])
        self._expected: dict[str, Oracle] = dict(expected or {})
        self._oracles: dict[str, Oracle] = {}
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- oracle
    def prepare(self, task_ids: Iterable[str] | None = None) -> None:
        """Load or compute the expected outputs of ``task_ids`` (default: every task of the data)."""
        for tid in (list(self.data.problems) if task_ids is None else task_ids):
            self._task(tid)

    @property
    def phases(self) -> tuple[str, ...]:
        return PHASES[:1] if self.base_only else PHASES

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
            phases = []
            for p in self.phases:
                limits = self._time_limits(oracle[f"{p}_time"])
                phases.append({"name": p, "inputs": record[f"{p}_input"], "time_limits": limits,
                               "timeout": self._phase_timeout(limits)})
            wall = STARTUP_MARGIN_S + sum(self._check_timeout(oracle[f"{p}_time"]) for p in self.phases)
            largest = max(_encoded_size(oracle[p]) for p in self.phases)
            from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

            task = _Task(payload=pickle.dumps(phases, protocol=pickle.HIGHEST_PROTOCOL), wall_s=wall,
                         not_none=self.dataset == "mbpp" and record["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS,
                         room_mb=math.ceil(2 * largest / _MB) + 1)
            self._oracles[task_id] = oracle
            self._tasks[task_id] = task
            return task

    def _time_limits(self, ref_time: list[float]) -> list[float]:
        return [max(self.min_time_limit, self.gt_time_limit_factor * t) for t in ref_time]

    def _phase_timeout(self, limits: list[float]) -> float:
        """evalplus's timeout of one phase (``untrusted_check``): the process is joined for this + 1 s."""
        return min(EVALPLUS_TIMEOUT_CAP_S, sum(limits)) + 1 + (0 if self.fast_check else 1)

    def _check_timeout(self, ref_time: list[float]) -> float:
        """The longest one phase can take: its timeout, join grace and the kill."""
        return self._phase_timeout(self._time_limits(ref_time)) + 1 + 0.2

    # ------------------------------------------------------------- self-check
    def known_programs(self) -> KnownPrograms:
        """A task of the loaded data with its canonical solution, and the same program with a wrong entry point.

        The task is the one with the fewest inputs among those whose oracle is a
        plain comparison (a special oracle may accept the wrong answer).
        """
        from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS, MBPP_OUTPUT_SET_EQ_TASKS

        special = {"find_zero", "are_equivalent", "sum_div", "surface_Area", "digit_distance_nums",
                   *MBPP_OUTPUT_NOT_NONE_TASKS, *MBPP_OUTPUT_SET_EQ_TASKS}
        plain = [tid for tid, rec in self.data.problems.items() if rec["entry_point"] not in special]
        if not plain:
            raise EvaluationError(f"{self.dataset}: the loaded tasks all have special oracles: none can check "
                                  f"the scoring (add a task with a plain comparison)")
        tid = min(plain, key=lambda t: len(self.data.problems[t]["base_input"])
                  + (0 if self.base_only else len(self.data.problems[t]["plus_input"])))
        record = self.data.problems[tid]
        problem = next(p for p in self.data.as_problems() if p.task_id == tid)
        correct = record["prompt"] + record["canonical_solution"]
        wrong = (correct + f"\n\ndef {record['entry_point']}(*args, **kwargs):\n"
                 f"    return '{WRONG_ANSWER}'\n")
        return KnownPrograms(problem, correct, wrong)

    # ---------------------------------------------------------------- scoring
    def limits(self, task: _Task) -> Limits:
        """The sandbox's limits for one task: evalplus's memory, room for the outputs, time for every phase."""
        room = max(self.output_mb, task.room_mb)
        return Limits(wall_s=task.wall_s, cpu_s=math.ceil(task.wall_s), memory_mb=self.memory_mb, nproc=self.nproc,
                      total_memory_mb=None if self.memory_mb is None else self.memory_mb + HARNESS_MEMORY_MB,
                      fsize_mb=room, disk_mb=max(BASE_LIMITS.disk_mb, 2 * room + 64))

    def score(self, problem: Problem, solution: str) -> Verdict:
        task = self._task(problem.task_id)
        record = self.data.problems[problem.task_id]
        request = {"solution": solution, "entry_point": record["entry_point"], "fast_check": self.fast_check,
                   "memory_bytes": _memory_bytes(self.memory_mb), "not_none": task.not_none,
                   "preload": ["numpy"] if _USES_NUMPY.search(solution) else []}
        stdin = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL) + task.payload
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        work = self.sandbox.new_workdir()
        outputs = _Outputs(work, self._judges(problem.task_id))
        try:
            outcome = self.sandbox.run([sys.executable, "-I", "-S", str(HARNESS), self.evalplus_utils,
                                        *self.site_dirs], limits=self.limits(task), stdin=stdin, env=env, work=work,
                                       on_poll=outputs.poll)
            return self._verdict(outcome, task, outputs)
        finally:
            outputs.close()
            self.sandbox.remove_workdir(work)

    def _judges(self, task_id: str) -> dict[str, PhaseJudge]:
        record, oracle = self.data.problems[task_id], self._oracles[task_id]
        return {p: PhaseJudge(self.dataset, record["entry_point"], record[f"{p}_input"], oracle[p], record["atol"],
                              self.fast_check, self.find_zero) for p in self.phases}

    def _verdict(self, outcome: Outcome, task: _Task, outputs: "_Outputs") -> Verdict:
        def failed(detail: str) -> Verdict:
            return Verdict(passed=False, status=FAIL, base_passed=False, base_status=FAIL,
                           exit_code=outcome.exit_code, detail=detail, wall_s=outcome.wall_s)

        if outcome.timed_out:
            return failed(f"sandbox killed at its wall-clock limit ({task.wall_s:.0f} s)")
        if '"phase"' not in outcome.stdout:  # the runner wrote no phase line: it never got to run the solution
            return failed(f"checker crashed (exit {outcome.exit_code}): {_error_line(outcome.stderr)}")
        results = outputs.finish()
        base = results["base"]
        last = results[self.phases[-1]]
        passed = base.status == PASS and last.status == PASS
        detail = "; ".join(_describe(p, r) for p, r in results.items() if r.status != PASS)
        return Verdict(passed=passed, status=last.status, base_passed=base.status == PASS, base_status=base.status,
                       exit_code=outcome.exit_code, detail=detail, wall_s=outcome.wall_s)


class _Outputs:
    """The runner's output files, judged while the solution runs and once it has ended.

    At every poll of the sandbox, the new complete lines of each phase's
    ``<phase>.out`` go to its judge. Once a phase's verdict is a failure (fast
    check: its first failing input), ``<phase>.stop`` tells the runner to end
    that phase there, as evalplus would have; whatever the solution does from
    then on cannot change the verdict. The files are opened only as regular
    files reached through no link.
    """

    def __init__(self, work: Path, judges: dict[str, PhaseJudge]):
        self.work = work
        self.judges = judges
        self.files: dict[str, BinaryIO | None] = {}
        self.stopped: set[str] = set()

    def poll(self) -> None:
        for phase, judge in self.judges.items():
            fh = self._file(phase)
            if fh is None:
                return  # later phases have not started either
            judge.feed(fh.read())
            if judge.failed and phase not in self.stopped:
                self.stopped.add(phase)
                _touch(self.work / f"{phase}.stop")

    def finish(self) -> dict[str, PhaseResult]:
        """Every phase's verdict, from all its lines (the sandbox has ended)."""
        self.poll()
        return {p: j.result() if self.files.get(p) is not None else
                PhaseResult(TIMEOUT, 0, None, j.total, "no outputs") for p, j in self.judges.items()}

    def close(self) -> None:
        for fh in self.files.values():
            if fh is not None:
                fh.close()

    def _file(self, phase: str) -> BinaryIO | None:
        if self.files.get(phase) is None:
            self.files[phase] = open_work_file(self.work, f"{phase}.out")
        return self.files[phase]


def _touch(path: Path) -> None:
    """Create an empty file where the sandboxed program may have put anything: never through a link."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    except OSError:
        pass  # something is there already: the runner stops the phase, or the solution loses time


def _describe(phase: str, r: PhaseResult) -> str:
    """e.g. ``plus: fail on input 12 of 740 (wrong output)``, ``base: timeout after 3 of 9 inputs``."""
    why = f" ({r.reason})" if r.reason else ""
    if r.failed_at is not None:
        return f"{phase}: {r.status} on input {r.failed_at + 1} of {r.total}{why}"
    if r.status == TIMEOUT:
        return f"{phase}: timeout after {r.done} of {r.total} inputs"
    return f"{phase}: {r.status} ({r.done} of {r.total} inputs checked){why}"


def _error_line(stderr: str) -> str:
    """The exception line of a traceback (its last ``SomeError: ...`` line), else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (errors or lines or ["no output"])[-1]


def _encoded_size(outputs: list[Any]) -> int:
    """About the bytes of the runner's lines for these outputs (a correct solution's), from their pickle.

    Pickle stores a string in its length, an int or float in 9 bytes or fewer;
    their JSON text is at most about 3 times that (a float's 24 digits), so the
    bound is generous and costs a tenth of encoding them.
    """
    return 3 * len(pickle.dumps(outputs, protocol=pickle.HIGHEST_PROTOCOL)) + 8 * len(outputs)


def _memory_bytes(memory_mb: int | None) -> int | None:
    """evalplus's ``query_maximum_memory_bytes`` with ``EVALPLUS_MAX_MEMORY_BYTES`` = ``memory_mb``."""
    if memory_mb is None:
        return None
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(memory_mb * _MB, total)


def _evalplus_utils() -> str:
    """evalplus's ``eval/utils.py`` (its reliability_guard, swallow_io, time_limit), loaded by path in the sandbox."""
    spec = importlib.util.find_spec("evalplus")
    if spec is None or not spec.origin:
        raise EvaluationError("evalplus scoring needs the Python package evalplus, which is not installed")
    path = Path(spec.origin).resolve().parent / "eval" / "utils.py"
    if not path.is_file():
        raise EvaluationError(f"evalplus is installed without eval/utils.py ({path}): reinstall evalplus==0.3.1")
    return str(path)


def _site_dirs() -> list[str]:
    """This environment's site-packages (and NumPy's, where a .pth put it elsewhere): what a solution may import."""
    paths = sysconfig.get_paths()
    dirs = [Path(paths[k]) for k in ("purelib", "platlib")]
    spec = importlib.util.find_spec("numpy")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parents[1])  # <dir>/numpy/__init__.py
    return list(dict.fromkeys(str(d.resolve()) for d in dirs if d.is_dir()))


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
