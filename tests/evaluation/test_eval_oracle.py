"""The verdict made outside the sandbox: plain-data lines, and evalplus's comparison applied to them.

``harness/plain_values.py`` carries outputs out of the sandbox with their exact
types and refuses anything that is not plain data; ``evalplus_oracle`` judges
the runner's lines. Its verdicts are checked against evalplus's own
``untrusted_check`` on the same outputs: a replay program that returns them,
one per input, run by evalplus (trusted code, so it may run outside a sandbox).
Neither needs bubblewrap nor ``../shared``.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import Counter, namedtuple
from typing import Any

import pytest

from ray_pipeline.evaluation.evalplus_oracle import PhaseJudge, PhaseResult
from ray_pipeline.evaluation.harness.plain_values import MAX_DEPTH, NotPlain, dumps, loads

Point = namedtuple("Point", "x y")


class IntSub(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


PLAIN = [None, True, False, 0, -7, 2**5000 + 1, -(2**20000) - 1, -(2**70), 1.5, -0.0, math.inf, 1e300, 3 + 4j, "", "é\ud800x",
         b"\x00\xff", [], [1, [2, "3"]], (), (1, (2.5, None)), {}, {1: "a", (1, 2): [3], "k": {True: b"v"}},
         {1, 2, "x"}, frozenset({(1, 2)}), [{frozenset(): ()}], [1, 2**20000, "x", None], (1, 2.5, True), [-(2**4097)]]


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same type at every level (1 is not 1.0 is not True, a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(k, k2) and _same(a[k], b[k2]) for k, k2 in zip(a, b))
    return a == b


@pytest.mark.parametrize("value", PLAIN, ids=[f"{type(v).__name__}{i}" for i, v in enumerate(PLAIN)])
def test_plain_values_keep_value_and_type(value: Any) -> None:
    assert _same(loads(dumps(value)), value)
    assert "\n" not in dumps(value)


def test_nan_survives() -> None:
    assert math.isnan(loads(dumps(float("nan"))))


def test_subclasses_and_numpy_scalars_become_the_value_they_hold() -> None:
    import numpy as np

    assert _same(loads(dumps(IntSub(5))), 5)
    assert _same(loads(dumps(Counter("aab"))), {"a": 2, "b": 1})
    assert _same(loads(dumps(Point(1, 2))), (1, 2))
    assert _same(loads(dumps([np.int64(3), np.float32(0.5), np.bool_(True), np.str_("s")])), [3, 0.5, True, "s"])


@pytest.mark.parametrize("value", [object(), IntSub, iter([1]), (x for x in "ab"), print,
                                   pytest.importorskip("numpy").array([1, 2])], ids=lambda v: type(v).__name__)
def test_what_is_not_plain_is_refused(value: Any) -> None:
    with pytest.raises(NotPlain):
        dumps(value)


def test_cycles_and_depth_are_refused() -> None:
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(NotPlain):
        dumps(cycle)
    deep: list = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(NotPlain):
        dumps(deep)
    with pytest.raises(NotPlain):
        loads("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5))


@pytest.mark.parametrize("text", ['{"x": [1]}', '{"t": 1}', '{"d": [[1]]}', '{"t": [], "s": []}', '{"s": [[1]]}',
                                  '{"c": ["1", 2]}', '{"b": 3}', "garbage", '{"i": "zz"}'])
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises((NotPlain, ValueError)):
        loads(text)


# ------------------------------------------------------------------ the verdict against evalplus's own
def judge_phase(lines: io.BytesIO, *args: Any, **kwargs: Any) -> PhaseResult:
    """A whole phase file fed in small pieces, as the sandbox's polls feed it, then judged."""
    judge = PhaseJudge(*args, **kwargs)
    for chunk in iter(lambda: lines.read(7), b""):
        judge.feed(chunk)
    return judge.result()


#: (dataset, entry point, inputs, outputs the solution gives, expected outputs, atol)
CASES = {
    "exact": ("humaneval", "f", [[1], [2]], [1, 3], [1, 2], 0),
    "int_for_float": ("humaneval", "f", [[1], [2]], [1, 2], [1.0, 2.0], 0),
    "float_within_1e-6": ("humaneval", "f", [[1], [2]], [0.1 + 1e-9, 2.0000001], [0.1, 2.0], 0),
    # atol becomes 1e-6 at the first float and stays: the mixed list after it is compared with a tolerance
    "atol_carried_on": ("humaneval", "f", [[1], [2]], [1.0, [1.0, 2.0000001]], [1.0, [1.0, 2]], 0),
    "atol_not_yet_raised": ("humaneval", "f", [[1], [2]], [[1.0, 2.0000001], 1.0], [[1.0, 2], 1.0], 0),
    "float_for_int": ("humaneval", "f", [[1], [2]], [1.0, 5.0000001], [1.0, 5], 0),
    "tuple_for_list": ("humaneval", "f", [[1]], [(1, 2)], [[1, 2]], 0),
    "list_of_floats": ("humaneval", "f", [[1], [2]], [[1.0, 2.0000001], [1.0]], [[1.0, 2.0], [1.0, 2.0]], 0),
    "bool_for_int": ("humaneval", "f", [[1]], [True], [1], 0),
    "nan": ("humaneval", "f", [[1]], [float("nan")], [float("nan")], 0),
    "complex_atol": ("mbpp", "f", [[1]], [1 + 1e-7j], [1 + 0j], 1e-6),
    "str_vs_none": ("humaneval", "f", [[1], [2]], ["a", None], ["a", "b"], 0),
    "set_eq_task": ("mbpp", "similar_elements", [[(1, 2), (2, 3)]], [(2, 1)], [(1, 2)], 0),
    "not_none_task": ("mbpp", "check_str", [["a"], ["b"], ["c"]], [True, False, True], [True, True, False], 0),
    "sum_div_zero": ("mbpp", "sum_div", [[1], [2]], [0, 5], [1, 3], 0),
    "surface_area_alternative": ("mbpp", "surface_Area", [[3, 4]], [33], [33], 0),
    "are_equivalent_anything": ("mbpp", "are_equivalent", [[1, 2]], ["x"], [True], 0),
    "find_zero": ("humaneval", "find_zero", [[[1, 2]], [[-6, 11, -6, 1]]], [-0.5, 5.0], [-0.5, 1.0], 1e-4),
}


def _evalplus_details(dataset: str, entry: str, inputs: list, outputs: list, expected: list,
                      atol: float) -> tuple[str, list[bool]]:
    """evalplus's ``untrusted_check`` on a replay program that returns ``outputs`` in turn."""
    from evalplus.eval import untrusted_check

    code = (f"import pickle\n_OUT = pickle.loads({pickle.dumps(outputs)!r})\n_I = [0]\n"
            f"def {entry}(*args):\n    _I[0] += 1\n    return _OUT[_I[0] - 1]\n")
    status, details = untrusted_check(dataset, code, inputs, entry, expected=expected, atol=atol,
                                      ref_time=[0.05] * len(inputs), fast_check=False)
    return status, [bool(d) for d in details]


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdicts_equal_evalplus_untrusted_check(name: str) -> None:
    dataset, entry, inputs, outputs, expected, atol = CASES[name]
    lines = io.BytesIO(b"".join(b'{"o":' + dumps(o).encode() + b"}\n" for o in outputs) + b'{"end":"done"}\n')
    ours = judge_phase(lines, dataset, entry, inputs, expected, atol, fast_check=False,
                       find_zero="0.3.1" if entry == "find_zero" else "fixed")
    status, details = _evalplus_details(dataset, entry, inputs, outputs, expected, atol)
    assert ours.status == status, (ours, status, details)
    if entry != "find_zero":  # 0.3.1 records no find_zero input at all
        assert ours.done == len(details) and ours.failed_at == (details.index(False) if False in details else None)


def test_find_zero_fixed_accepts_a_root_evalplus_0_3_1_does_not() -> None:
    dataset, entry, inputs, outputs, expected, atol = CASES["find_zero"]
    roots = [-0.5, 3.0]  # 3 is a root of -6 + 11x - 6x^2 + x^3, though not the canonical one (1)
    lines = io.BytesIO(b"".join(b'{"o":' + dumps(o).encode() + b"}\n" for o in roots) + b'{"end":"done"}\n')
    assert judge_phase(lines, dataset, entry, inputs, expected, atol, fast_check=True).status == "pass"
    assert _evalplus_details(dataset, entry, inputs, roots, expected, atol)[0] == "fail"


@pytest.mark.parametrize("stream, status", [
    (b'{"o":1}\n{"o":2}\n{"end":"done"}\n', "pass"),
    (b'{"o":1}\n{"o":2}\n', "timeout"),  # the process did not finish
    (b'{"o":1}\n{"o":2', "timeout"),  # killed while writing
    (b'{"o":1}\n{"end":"done"}\n', "fail"),  # done, but an input short
    (b'{"o":1}\n{"o":2}\n{"o":3}\n{"end":"done"}\n', "fail"),  # an output too many
    (b'{"o":1}\n{"x":"ValueError"}\n{"end":"failed","why":"ValueError"}\n', "fail"),
    (b'{"o":1}\n{"o":{"eval":"2"}}\n{"end":"done"}\n', "fail"),  # not an encoded value
    (b'{"end":"done"}\n{"o":1}\n{"o":2}\n', "fail"),  # done before any output
    (b'{"o":1}\n{"o":2}\n{"end":"done","why":"x"}\n', "fail"),  # a malformed end
    (b'{"o":1, "p":1}\n{"o":2}\n{"end":"done"}\n', "fail"),
])
def test_runner_lines_that_are_not_all_there_or_not_well_formed_never_pass(stream: bytes, status: str) -> None:
    result = judge_phase(io.BytesIO(stream), "humaneval", "f", [[1], [2]], [1, 2], 0, fast_check=True)
    assert result.status == status, result
