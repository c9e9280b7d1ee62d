"""evalplus's verdict on a solution's outputs, made outside the sandbox by a process that runs no model code.

``evalplus.eval.unsafe_execute`` (0.3.1) runs the solution and compares each
output with the expected one in the same process, so a solution can forge its
verdict (an output whose ``__eq__`` always says True, a patched checker). Here
the sandbox only runs the solution (``harness/evalplus_run.py``) and writes its
outputs as plain data (``harness/plain_values.py``); this module reads those
lines (``PhaseJudge``) and applies ``unsafe_execute``'s comparison, statement for statement:

- ``out == exp``, then the special oracles: MBPP+'s ``are_equivalent``
  (anything), ``sum_div`` (or 0), ``surface_Area`` and ``digit_distance_nums``
  (a second accepted answer), set equality for ``MBPP_OUTPUT_SET_EQ_TASKS``,
  "not None" for ``MBPP_OUTPUT_NOT_NONE_TASKS`` (the runner reduces such an
  output to ``out is not None`` unless it is a bool, which is all the oracle
  looks at); HumanEval+'s ``find_zero`` (``|poly(x)| <= atol``);
- ``atol`` raised to 1e-6 once a float (or list of floats) is expected, and
  kept for the following inputs, as evalplus's loop variable is;
- where not equal and ``atol != 0``: same type, same length, ``np.allclose``
  with ``rtol=1e-07``;
- with ``fast_check`` the phase stops at its first failing input.

A phase's status is evalplus's: ``pass`` when the solution's process finished
every input and all were accepted, ``fail`` when one was not, it raised, or it
could not be loaded, and ``timeout`` when the process did not finish (killed at
evalplus's limit, or ended before its last input). A line that is not what the
runner writes (malformed, out of order, an input too many) fails the phase:
nothing is guessed.

Differences from evalplus 0.3.1, on purpose (``docs/fidelity.md``):
``find_zero`` records a passing input, as evalplus's upstream fix does (0.3.1
``continue``s first, so HumanEval/32 fails whatever the solution;
``find_zero="0.3.1"`` gives that verdict back); the
special oracles read the inputs as the data has them, not as the solution
may have mutated them; an output that is not plain data fails, where evalplus
would let it compare itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from ray_pipeline.evaluation.harness.plain_values import NotPlain, from_plain

PASS, FAIL, TIMEOUT = "pass", "fail", "timeout"


def accepts(dataset: str, entry_point: str, inp: Sequence[Any], out: Any, exp: Any,
            atol: float) -> tuple[bool, float]:
    """Whether evalplus accepts ``out`` where ``exp`` is expected, and ``atol`` as its loop carries it on."""
    import numpy as np
    from evalplus.eval import is_floats
    from evalplus.eval._special_oracle import (MBPP_OUTPUT_NOT_NONE_TASKS, MBPP_OUTPUT_SET_EQ_TASKS,
                                               _digit_distance_nums, _poly, _surface_Area)

    try:
        exact_match = out == exp
        if dataset == "mbpp":
            if entry_point == "are_equivalent":  # Mbpp/164
                exact_match = exact_match or True
            elif entry_point == "sum_div":  # Mbpp/295
                exact_match = exact_match or out == 0
            elif entry_point == "surface_Area":  # Mbpp/581
                exact_match = exact_match or abs(out - _surface_Area(*inp)) <= atol
            elif entry_point == "digit_distance_nums":  # Mbpp/558
                exact_match = exact_match or out == _digit_distance_nums(*inp)
            elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
                exact_match = set(out) == set(exp)
            elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
                exact_match = out == exp if isinstance(out, bool) else exp == (out is not None)
        if dataset == "humaneval" and entry_point == "find_zero":  # HumanEval/32
            return bool(abs(_poly(*inp, out)) <= atol), atol
        if atol == 0 and is_floats(exp):
            atol = 1e-6
        if not exact_match and atol != 0:
            if type(out) != type(exp):  # noqa: E721 - evalplus compares the types exactly
                return False, atol
            if isinstance(exp, (list, tuple)) and len(out) != len(exp):
                return False, atol
            return bool(np.allclose(out, exp, rtol=1e-07, atol=atol)), atol
        return bool(exact_match), atol
    except Exception:  # noqa: BLE001 - evalplus counts any exception of the comparison as a failed input
        return False, atol


@dataclass
class PhaseResult:
    """One phase's verdict: evalplus's status and its ``details`` summarised."""

    status: str
    done: int  # inputs judged (evalplus's len(details))
    failed_at: int | None  # index of the first failing input among them
    total: int
    reason: str = ""  # why the phase ended where it did, when not by passing every input


class PhaseJudge:
    """Judges one phase's output lines as they come (``feed``), and gives its verdict (``result``).

    Lines can be fed while the solution still runs: with ``fast_check`` the
    verdict is decided at the first failing input (``failed``), so the phase can
    be stopped there, as evalplus stops it. ``find_zero="0.3.1"`` reproduces
    evalplus 0.3.1's HumanEval/32 exactly: an input its oracle accepts is not
    recorded, so the phase never passes.
    """

    def __init__(self, dataset: str, entry_point: str, inputs: Sequence[Any], expected: Sequence[Any],
                 atol: float, fast_check: bool, find_zero: str = "fixed"):
        self.dataset, self.entry_point = dataset, entry_point
        self.inputs, self.expected, self.atol, self.fast_check = inputs, expected, atol, fast_check
        self.unrecorded = find_zero == "0.3.1" and dataset == "humaneval" and entry_point == "find_zero"
        self.total = len(inputs)
        self.details: list[bool] = []
        self.seen = 0  # output lines read (evalplus's input index)
        self.end: str | None = None
        self.why = ""
        self.decided: PhaseResult | None = None  # a verdict reached before the end (a failure)
        self._partial = b""

    @property
    def failed(self) -> bool:
        """The verdict is already a failure: nothing the solution writes from here on changes it."""
        return self.decided is not None

    def feed(self, data: bytes) -> None:
        """More of the phase's output file; a line is judged once it is complete."""
        if self.decided is not None or self.end is not None:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # a line cut short (so far, or for good if the process was killed)
        for raw in lines:
            self._line(raw)
            if self.decided is not None or self.end is not None:
                return

    def _line(self, raw: bytes) -> None:
        record = _record(raw)
        if record is None:
            self.decided = self._fail("the sandbox wrote a malformed line")
            return
        if "end" in record:
            self.end, self.why = record["end"], str(record.get("why", ""))
            return
        i = self.seen
        self.seen += 1
        if i >= self.total:
            self.decided = self._fail("the sandbox wrote more outputs than there are inputs")
            return
        if "o" in record:
            try:
                out = from_plain(record["o"])
            except (NotPlain, RecursionError):
                self.decided = self._fail("the sandbox wrote a malformed output")
                return
            ok, self.atol = accepts(self.dataset, self.entry_point, self.inputs[i], out, self.expected[i], self.atol)
            if ok and self.unrecorded:  # 0.3.1 `continue`s before `details[i] = True`
                return
            reason = "" if ok else "wrong output"
        else:
            ok, reason = False, _raised(record["x"])
        self.details.append(ok)
        if not ok and self.fast_check:  # evalplus raises at the first failing input
            self.decided = PhaseResult(FAIL, len(self.details), i, self.total, reason)

    def result(self) -> PhaseResult:
        """The phase's verdict from what was fed (call once the solution's process has ended)."""
        if self.decided is not None:
            return self.decided
        details, total = self.details, self.total
        failed_at = details.index(False) if False in details else None
        if self.end == "done":
            passed = len(details) == total and failed_at is None
            return PhaseResult(PASS if passed else FAIL, len(details), failed_at, total,
                               "" if passed else "not every input passed")
        if self.end == "failed":
            return PhaseResult(FAIL, len(details), failed_at, total,
                               _raised(self.why) if self.why else "the solution failed")
        return PhaseResult(TIMEOUT, len(details), failed_at, total, "the solution's process did not finish")

    def _fail(self, reason: str) -> PhaseResult:
        details = self.details
        return PhaseResult(FAIL, len(details), details.index(False) if False in details else None, self.total,
                           reason)


def _raised(name: str) -> str:
    """The runner's note on a failed input, in words."""
    if name == "NotPlain":
        return "the output is not plain data"
    if name == "TimeoutException":
        return "time limit"
    return f"raised {name}"


def _record(raw: bytes) -> dict[str, Any] | None:
    """One line as the runner writes it, or None: ``{"o": value}``, ``{"x": name}`` or ``{"end": ..., "why": ...}``."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or len(record) not in (1, 2):
        return None
    if len(record) == 1 and ("o" in record or isinstance(record.get("x"), str)
                             or record.get("end") in ("done", "failed")):
        return record
    if len(record) == 2 and record.get("end") == "failed" and isinstance(record.get("why"), str):
        return record
    return None
