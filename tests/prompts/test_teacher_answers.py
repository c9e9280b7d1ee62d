"""The exact parse of every answer in tests/data/teacher_answers.yaml.

The corpus holds teacher answers in the papers' formats (Instruction Fusion's
prompt, TaCIE's Appendix B) and the variants real models write around them;
each case states the outcome, the exact text or components, and for a failure
a substring of its reason. A case that fails here means a parser changed what
it makes of a realistic answer: read the case's ``note`` before changing the
expectation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_pipeline.methods.tacie.decomposition import (
    Components,
    format_components,
    parse_decomposition,
    parse_diversified,
    parse_evolution,
)
from ray_pipeline.prompts.parsing import parse_fusion
from ray_pipeline.prompts import load_template
from tests.paths import TESTS

CORPUS = TESTS / "data" / "teacher_answers.yaml"
DATA = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
SEEDS: dict[str, dict[str, Any]] = DATA["seeds"]
CASES: list[dict[str, Any]] = DATA["cases"]

PARSERS = ("fusion", "decomposition", "evolution", "diversified")
OUTCOMES = ("ok", "invalid", "parse_error")
CASE_KEYS = {"id", "parser", "template", "parents", "seed", "inherit", "n", "note", "answer", "expect"}
# what each parser's expectation states besides outcome and reason
EXPECT_KEYS = {
    "fusion": {"text"},
    "decomposition": {"components"},
    "evolution": {"instruction", "components"},
    "diversified": {"instructions", "dropped"},
}


def components(spec: dict[str, Any]) -> Components:
    assert set(spec) <= {"background", "objectives", "constraints"}, f"unknown component keys {sorted(spec)}"
    return Components.from_lists(spec.get("background") or (), spec.get("objectives") or (), spec.get("constraints") or ())


def seed_components(name: str) -> Components:
    assert "components" in SEEDS[name], f"seed {name!r} has no components"
    return components(SEEDS[name]["components"])


def as_dict(c: Components | None) -> dict[str, list[str]] | None:
    return None if c is None else c.as_columns()


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Parse the case's answer; the result laid out like the case's ``expect``."""
    template = load_template(case["template"])
    answer = case["answer"]
    parser = case["parser"]
    if parser == "fusion":
        parents = tuple(SEEDS[p]["prompt"] for p in case["parents"])
        p = parse_fusion(answer, parents, template)
        return {"outcome": p.outcome, "reason": p.reason, "text": p.text}
    if parser == "decomposition":
        p = parse_decomposition(answer, template, inputs=(SEEDS[case["seed"]]["prompt"],))
        return {"outcome": p.outcome, "reason": p.reason, "components": as_dict(p.components)}
    if parser == "evolution":
        parents = tuple(SEEDS[p]["prompt"] for p in case["parents"])
        inputs = tuple(format_components(seed_components(p), "appendix_b") for p in case["parents"])
        inherit = seed_components(case["parents"][0]) if case.get("inherit") else None
        p = parse_evolution(answer, parents, template, inputs=inputs, inherit=inherit)
        return {"outcome": p.outcome, "reason": p.reason, "instruction": p.instruction, "components": as_dict(p.components)}
    if parser == "diversified":
        seed = case["seed"]
        p = parse_diversified(
            answer, SEEDS[seed]["prompt"], template, n=case.get("n"),
            inputs=(format_components(seed_components(seed), "appendix_b"),),
        )
        return {"outcome": p.outcome, "reason": p.reason, "instructions": list(p.instructions), "dropped": list(p.dropped)}
    raise AssertionError(f"unknown parser {parser!r}")


def expected(case: dict[str, Any]) -> dict[str, Any]:
    """The case's expectation with every field filled: what a failure leaves empty, empty."""
    exp = case["expect"]
    ok = exp["outcome"] == "ok"
    parser = case["parser"]
    if parser == "fusion":
        return {"text": exp["text"] if ok else ""}
    if parser == "decomposition":
        return {"components": as_dict(components(exp["components"])) if ok else None}
    if parser == "evolution":
        return {
            "instruction": exp["instruction"] if ok else "",
            "components": as_dict(components(exp["components"])) if ok else None,
        }
    return {"instructions": list(exp.get("instructions") or [])}


def describe(case: dict[str, Any], got: dict[str, Any]) -> str:
    shown = {k: v for k, v in got.items() if k != "outcome"}
    note = f"\n  note: {case['note']}" if case.get("note") else ""
    return f"case {case['id']!r} ({case['parser']}, {case['template']}){note}\n  parser gave: {got['outcome']} {shown}"


def test_corpus_is_well_formed():
    ids = [c.get("id") for c in CASES]
    assert all(ids) and len(ids) == len(set(ids)), f"ids missing or repeated: {sorted(i for i in ids if ids.count(i) > 1)}"
    for case in CASES:
        cid = case["id"]
        assert set(case) <= CASE_KEYS, f"{cid}: unknown keys {sorted(set(case) - CASE_KEYS)}"
        assert case["parser"] in PARSERS, f"{cid}: unknown parser {case['parser']!r}"
        assert isinstance(case["answer"], str), f"{cid}: answer must be a string"
        load_template(case["template"])
        exp = case["expect"]
        assert exp["outcome"] in OUTCOMES, f"{cid}: unknown outcome {exp['outcome']!r}"
        allowed = EXPECT_KEYS[case["parser"]] | {"outcome", "reason"}
        assert set(exp) <= allowed, f"{cid}: expect has keys {sorted(set(exp) - allowed)} not for {case['parser']}"
        if exp["outcome"] == "ok":
            needed = EXPECT_KEYS[case["parser"]] - {"dropped"}
            assert needed <= set(exp), f"{cid}: an ok case states {sorted(needed)}"
            assert "reason" not in exp, f"{cid}: an ok case has no reason"
        else:
            assert exp.get("reason"), f"{cid}: a failure states a substring of its reason"
            assert set(exp) <= {"outcome", "reason", "dropped"}, f"{cid}: a failure states only its reason (and dropped)"
        names = case.get("parents") or [case.get("seed")]
        assert all(n in SEEDS for n in names), f"{cid}: unknown seed in {names}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_teacher_answer(case):
    got = run_case(case)
    exp = case["expect"]
    where = describe(case, got)
    assert got["outcome"] == exp["outcome"], f"outcome {got['outcome']!r}, expected {exp['outcome']!r}\n{where}"
    for key, want in expected(case).items():
        assert got[key] == want, f"{key} differs\n  expected: {want!r}\n{where}"
    if case["parser"] == "diversified":
        wanted = list(exp.get("dropped") or [])
        assert len(got["dropped"]) == len(wanted), f"dropped {len(got['dropped'])} entries, expected {len(wanted)}\n{where}"
        for reason, part in zip(got["dropped"], wanted):
            assert part in reason, f"dropped reason {reason!r} lacks {part!r}\n{where}"
    if exp["outcome"] == "ok":
        assert got["reason"] == "", f"an ok parse with a reason\n{where}"
    else:
        assert exp["reason"] in got["reason"], f"reason {got['reason']!r} lacks {exp['reason']!r}\n{where}"
