"""MultiPL-E scoring, shared by the six language executors.

What MultiPL-E's own evaluator does (``../shared/data/bench/multipl-e/EVAL.md``),
done in the bubblewrap sandbox:

1. the program is ``prompt + completion + "\\n" + tests``, written to a file
   with the language's extension; identical program texts are scored once;
2. a build step (compiled languages), then a run step, in one work directory,
   each with its own wall-clock timeout (15 s unless the language says otherwise);
3. the outcome gets MultiPL-E's status word (``OK``, ``SyntaxError``,
   ``Exception``, ``AssertionError``, ``ReferenceError``, ``Timeout``) by the
   language's own rule, and the sample passes iff the status is ``OK`` and the
   exit code is 0. Exit codes are recorded as MultiPL-E's result files have
   them (Python's ``returncode``): -1 for a timeout, minus the signal number
   for a program killed by a signal (-6 for a failed C ``assert``'s abort,
   -11 for a segmentation fault).

Limits follow what MultiPL-E's evaluator lets a program do where that is safe
(``docs/fidelity.md``): ``nproc`` processes and threads (512 by default; MultiPL-E sets
none), ``memory_mb`` of memory (4 GiB by default: the address
space of a native program, the heap of the JVM (``-Xmx``) and of V8
(``--max-old-space-size``), and the cgroup cap of all its processes where the
host allows one), ``output_mb`` per file and stream (64 MB by default; MultiPL-E
reads its pipes so slowly that a program printing more than about 200 KB times
out there).

A language subclass (``java.py``, ``javascript.py``, ...) declares its file
extension, how to find its toolchain, its build and run commands, its timeouts
and sandbox limits, and, where it differs from the compiled-language rule, how a
run is classified. ``executors.languages.multiple_executor`` picks the subclass for a language.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from abc import abstractmethod
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation.executors.base import DEFAULT_NPROC, Executor, KnownPrograms, Verdict
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.evaluation.sandbox import SYSTEM_DIRS, Limits, Outcome, Sandbox

#: the exit code MultiPL-E records for a command that timed out
TIMEOUT_EXIT_CODE = -1
#: memory one program may use by default (address space, or heap for the JVM and V8)
DEFAULT_MEMORY_MB = 4096
#: memory of a runtime beyond its heap (JIT, metaspace, code, thread stacks), in the cgroup cap
RUNTIME_OVERHEAD_MB = 1024
#: the self-check's programs, one small problem per language
KNOWN_PROGRAMS = Path(__file__).resolve().parents[1] / "known_programs.yaml"
#: the stem of the program file (and of a compiled binary) in the work directory
PROGRAM_STEM = "program"
_DETAIL_CHARS = 240
#: a line that says what went wrong: a compiler error, a panic, a failed assert, an exception
DEFAULT_ERROR_LINE = re.compile(r"error|panicked|assert|exception|fatal|abort", re.IGNORECASE)


class ToolMissing(Exception):
    """A toolchain piece is absent; its message is the executor's unavailable_reason."""


@dataclass(frozen=True)
class Toolchain:
    """The programs a language calls inside the sandbox, and the host paths they need."""

    tools: Mapping[str, str]  # name -> absolute path in the sandbox (programs; Java adds its jar)
    read_only: tuple[str, ...] = ()  # host paths outside the system dirs to bind read-only
    env: Mapping[str, str] | None = None  # environment of both steps


def find_tool(name: str, *fallbacks: str | Path) -> Path:
    """The absolute path of program ``name``: on PATH, else the first fallback that exists.

    Symbolic links are kept: some drivers (``swiftc``, rustup's proxies) act on
    the name they are called by.
    """
    found = shutil.which(name)
    for candidate in ([found] if found else []) + [str(p) for p in fallbacks]:
        path = Path(candidate).expanduser()
        if path.is_file():
            return path.absolute()
    raise ToolMissing(f"{name} not found")


def outside_system_dirs(path: str | Path) -> bool:
    p = str(Path(path).absolute())
    return not any(p == d or p.startswith(d + "/") for d in SYSTEM_DIRS)


def install_prefix(tool: Path) -> tuple[str, ...]:
    """What to bind so that ``tool`` (``<prefix>/bin/<tool>``) runs in the sandbox.

    The prefix of the path and of its link target, where outside the system
    directories (which every sandbox sees anyway).
    """
    prefixes = {str(p.parents[1]) for p in (tool.absolute(), tool.resolve()) if outside_system_dirs(p)}
    return tuple(sorted(prefixes))


def first_error_line(text: str, pattern: re.Pattern[str] = DEFAULT_ERROR_LINE) -> str:
    """The first line matching ``pattern``, else the first non-blank line, cut short."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    chosen = next((line for line in lines if pattern.search(line)), lines[0] if lines else "")
    return chosen if len(chosen) <= _DETAIL_CHARS else chosen[: _DETAIL_CHARS - 3] + "..."


class MultiplEExecutor(Executor):
    """Builds and runs one MultiPL-E program per call of :meth:`score`."""

    #: file extension of the program, with the dot
    EXTENSION: ClassVar[str]
    #: default build timeout in seconds; None for languages without a build step
    BUILD_TIMEOUT_S: ClassVar[float | None] = 15.0
    RUN_TIMEOUT_S: ClassVar[float] = 15.0
    #: the status of a build that timed out (java, cpp: SyntaxError; rs, swift: Timeout)
    BUILD_TIMEOUT_STATUS: ClassVar[str] = "SyntaxError"
    #: sandbox limits of the build step; wall and CPU time are set from the timeouts
    BUILD_LIMITS: ClassVar[Limits] = Limits(memory_mb=4096, nproc=DEFAULT_NPROC)
    #: how a run's memory is capped: "address-space" (prlimit) or "heap" (the runtime's flag, in run_argv)
    MEMORY_CAP: ClassVar[str] = "address-space"
    #: how the "first meaningful error line" of a failure is recognised
    ERROR_LINE: ClassVar[re.Pattern[str]] = DEFAULT_ERROR_LINE

    def __init__(self, sandbox: Sandbox, build_timeout_s: float | None = None,
                 run_timeout_s: float | None = None, memory_mb: int | None = None, nproc: int | None = None,
                 output_mb: int | None = None):
        self._base_sandbox = sandbox
        self.memory_mb = memory_mb or DEFAULT_MEMORY_MB
        self.nproc = nproc or DEFAULT_NPROC
        self.output_mb = output_mb or Limits.fsize_mb
        has_build = self.BUILD_TIMEOUT_S is not None
        self.build_timeout_s = (build_timeout_s or self.BUILD_TIMEOUT_S) if has_build else None
        self.run_timeout_s = run_timeout_s or self.RUN_TIMEOUT_S
        self._cache: dict[str, Verdict] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------ per language
    @abstractmethod
    def find_toolchain(self) -> Toolchain:
        """Locate the toolchain; raise :class:`ToolMissing` naming what is absent."""

    def build_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        """The build command; languages with a build step (``BUILD_TIMEOUT_S`` set) override it."""
        raise NotImplementedError(f"{type(self).__name__} has no build step")

    @abstractmethod
    def run_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        """The run command; ``source`` and ``binary`` are names in the work directory (the cwd)."""

    def classify_run(self, outcome: Outcome) -> str:
        """MultiPL-E's rule for compiled languages: timeout, exit 0, anything else."""
        if outcome.timed_out:
            return "Timeout"
        return "OK" if outcome.exit_code == 0 else "Exception"

    # ------------------------------------------------------------------ shared
    @cached_property
    def _toolchain(self) -> Toolchain | str:
        try:
            return self.find_toolchain()
        except ToolMissing as exc:
            return str(exc)

    @cached_property
    def sandbox(self) -> Sandbox:
        """The caller's sandbox plus this language's read-only host paths."""
        toolchain = self._toolchain
        extra: Sequence[str] = toolchain.read_only if isinstance(toolchain, Toolchain) else ()
        base = self._base_sandbox
        if not extra:
            return base
        return Sandbox(read_only=[*base.read_only, *extra], env=base.env, scratch_root=base.scratch_root,
                       isolation=base.isolation)

    def unavailable_reason(self) -> str | None:
        toolchain = self._toolchain
        return toolchain if isinstance(toolchain, str) else None

    def known_programs(self) -> KnownPrograms:
        """This language's entry of ``evaluation/known_programs.yaml``."""
        data = _known_programs()
        entry = data["languages"][self.language]
        problem = Problem(benchmark="multiple", language=self.language, task_id=data["task_id"],
                          prompt=entry["prompt"], tests=entry["tests"])
        return KnownPrograms(problem, entry["correct"], entry["wrong"])

    def _limits(self, base: Limits, timeout_s: float) -> Limits:
        # The CPU limit stays above the wall clock, so a busy loop ends as a timeout.
        return replace(base, wall_s=timeout_s, cpu_s=int(2 * timeout_s) + 1)

    def run_limits(self) -> Limits:
        """The run step's limits (but time): ``memory_mb`` as address space or heap, ``nproc`` tasks."""
        heap = self.MEMORY_CAP == "heap"
        return Limits(memory_mb=None if heap else self.memory_mb, nproc=self.nproc, fsize_mb=self.output_mb,
                      total_memory_mb=self.memory_mb + (RUNTIME_OVERHEAD_MB if heap else 0))

    def score(self, problem: Problem, solution: str) -> Verdict:
        toolchain = self._toolchain
        if isinstance(toolchain, str):
            raise EvaluationError(f"cannot score MultiPL-E {self.language}: {toolchain}")
        program = problem.prompt + solution + "\n" + problem.tests
        key = hashlib.sha256(program.encode("utf-8")).hexdigest()
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is not None:
            return replace(cached)
        verdict = self._score_program(program, toolchain)
        with self._cache_lock:
            self._cache[key] = verdict
        return replace(verdict)

    def _score_program(self, program: str, toolchain: Toolchain) -> Verdict:
        source, binary = PROGRAM_STEM + self.EXTENSION, PROGRAM_STEM
        env = dict(toolchain.env or {})
        files: dict[str, str] = {source: program}
        work = self.sandbox.new_workdir()
        try:
            wall = 0.0
            if self.build_timeout_s is not None:
                built = self.sandbox.run(self.build_argv(toolchain.tools, source, binary), files=files, env=env,
                                         limits=self._limits(self.BUILD_LIMITS, self.build_timeout_s), work=work)
                wall += built.wall_s
                if not built.ok:
                    status = self.BUILD_TIMEOUT_STATUS if built.timed_out else "SyntaxError"
                    return self._verdict(status, built, "build", self.build_timeout_s, wall)
                files = {}
            ran = self.sandbox.run(self.run_argv(toolchain.tools, source, binary), files=files, env=env,
                                   limits=self._limits(self.run_limits(), self.run_timeout_s), work=work)
            return self._verdict(self.classify_run(ran), ran, "run", self.run_timeout_s, wall + ran.wall_s)
        finally:
            self.sandbox.remove_workdir(work)

    def _verdict(self, status: str, outcome: Outcome, step: str, timeout_s: float, wall: float) -> Verdict:
        exit_code = multiple_exit_code(outcome)
        if outcome.timed_out:
            detail = f"{step}: timeout after {timeout_s:g} s"
        elif status == "OK" and exit_code == 0:
            detail = ""
        else:
            line = (first_error_line(outcome.stderr, self.ERROR_LINE)
                    or first_error_line(outcome.stdout, self.ERROR_LINE))
            detail = f"{step}: {line or f'exit code {exit_code}'}"
        return Verdict(passed=status == "OK" and exit_code == 0, status=status, exit_code=exit_code,
                       detail=detail, wall_s=round(wall, 3))


@lru_cache(maxsize=1)
def _known_programs() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(KNOWN_PROGRAMS.read_text(encoding="utf-8"))


def multiple_exit_code(outcome: Outcome) -> int | None:
    """The exit code as MultiPL-E records it: -1 for a timeout, -N for a program killed by signal N.

    The sandbox reports a program killed by a signal as 128 + the signal (as a
    shell does), so a program that itself exits with 129 to 192 is taken for one
    killed by a signal; no test program does that (PHP's 255 stays 255).
    """
    if outcome.timed_out:
        return TIMEOUT_EXIT_CODE
    if outcome.signal is not None:
        return -outcome.signal
    return outcome.exit_code
