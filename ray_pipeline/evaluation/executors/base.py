"""The one interface every executor implements.

An executor turns (problem, solution) into a :class:`Verdict` by running the
solution with the benchmark's tests inside the bubblewrap sandbox
(``evaluation.sandbox``). What "solution" means is what the benchmark's own
tooling takes: the whole Python program for evalplus (its ``solution`` field),
the completion after the prompt for MultiPL-E (its ``completion`` field),
which the executor assembles into ``prompt + completion + "\\n" + tests``.

Backends, one short file each: ``evalplus`` (HumanEval+/MBPP+, Python),
``java``, ``javascript``, ``cpp``, ``php``, ``rust``, ``swift`` (MultiPL-E).
An executor whose toolchain is missing says so in ``unavailable_reason``; its
problems are reported as skipped, never scored.

Before a run scores anything, :meth:`Executor.self_check` scores a solution
that must pass and one that must fail (``known_programs``) through the same
executor, sandbox and limits, so a scoring path that is broken on this machine
(a checker that cannot start, a runner that drops assertions, a comparison
that accepts anything) stops the run with one line instead of scoring every
sample wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation.problems import Problem

#: processes and threads one program may run, by default (evalplus and MultiPL-E set no limit: this lets a
#: program start hundreds of threads and still stops a fork bomb)
DEFAULT_NPROC = 512


@dataclass
class Verdict:
    """The outcome of one solution.

    ``status`` is the benchmark's own word: evalplus's ``pass``/``fail``/``timeout``
    for the plus tests, MultiPL-E's ``OK``/``SyntaxError``/``Exception``/
    ``AssertionError``/``ReferenceError``/``Timeout``. ``passed`` is the
    benchmark's rule (evalplus: base and plus tests pass; MultiPL-E: status OK
    and exit code 0). ``base_status``/``base_passed`` are evalplus's base
    (original HumanEval/MBPP) tests, None for MultiPL-E.
    """

    passed: bool
    status: str
    base_passed: bool | None = None
    base_status: str | None = None
    exit_code: int | None = None
    detail: str = ""  # one short line: the first error line, "timeout after 15 s", ...
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KnownPrograms:
    """A problem, a solution the benchmark's rules must pass and one they must fail."""

    problem: Problem
    correct: str
    wrong: str


class Executor(ABC):
    """Scores solutions of one language in the sandbox."""

    #: "python" or a MultiPL-E language key
    language: str

    def unavailable_reason(self) -> str | None:
        """None when this executor can run here; else one line, e.g. "swiftc not found"."""
        return None

    @abstractmethod
    def known_programs(self) -> KnownPrograms:
        """The self-check's problem and its known-correct and known-wrong solutions."""

    def self_check(self) -> None:
        """Score the known programs; EvaluationError (one line) unless the correct passes and the wrong fails."""
        known = self.known_programs()
        task = known.problem.task_id
        right = self.score(known.problem, known.correct)
        if not right.passed:
            raise EvaluationError(f"the known-correct solution of {task} did not pass ({right.status}): "
                                  f"{_one_line(right.detail) or 'no detail'}")
        wrong = self.score(known.problem, known.wrong)
        if wrong.passed:
            raise EvaluationError(f"the known-wrong solution of {task} passed: this checker accepts wrong answers")

    @abstractmethod
    def score(self, problem: Problem, solution: str) -> Verdict:
        """Run ``solution`` against ``problem``'s tests; never raises for a bad solution."""

    def close(self) -> None:
        """Release what the executor holds (work directories, pools)."""


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
