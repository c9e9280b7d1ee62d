"""The summary of the TaCIE paper's benchmarks: the paper's columns, IFEval's four accuracies, MT-Bench's mean
rating with unrated turns left out, and comparisons and merges that keep them (``evaluation.results``)."""

from __future__ import annotations

import pytest

from ray_pipeline.evaluation import results


def _scored():
    rows = []
    # GSM8K: 3 problems, 2 right
    for i, ok in enumerate((True, False, True)):
        rows.append({"model": "m", "suite": "gsm8k", "task_id": f"gsm8k/{i}", "sample": 0, "passed": ok,
                     "status": "pass" if ok else "fail", "extracted": "1", "reference": "1" if ok else "2"})
    # IFEval: prompt 1 strict and loose; prompt 2 loose only (1 of 2 instructions strict, 2 loose)
    rows.append({"model": "m", "suite": "ifeval", "task_id": "1", "sample": 0, "passed": True, "loose_passed": True,
                 "status": "pass", "instructions": [{"id": "a", "strict": True, "loose": True}]})
    rows.append({"model": "m", "suite": "ifeval", "task_id": "2", "sample": 0, "passed": False, "loose_passed": True,
                 "status": "fail", "instructions": [{"id": "a", "strict": True, "loose": True},
                                                    {"id": "b", "strict": False, "loose": True}]})
    # MT-Bench: ratings 9, 7 (writing); 4, unrated (math)
    rows.append({"model": "m", "suite": "mt_bench", "task_id": "81", "sample": 0, "passed": False, "status": "judged",
                 "category": "writing", "ratings": [9.0, 7.0]})
    rows.append({"model": "m", "suite": "mt_bench", "task_id": "111", "sample": 0, "passed": False,
                 "status": "judge_failed", "category": "math", "ratings": [4.0, None]})
    return rows


def test_the_tacie_columns_and_details_are_computed_by_hand():
    summary = results.summarise(results.task_rows(_scored(), [1]), ["m"], [1])
    assert [c["key"] for c in summary["columns"]] == ["mt_bench", "ifeval_strict", "ifeval_loose", "gsm8k"]
    cells = summary["models"]["m"]
    assert cells["gsm8k"] == {"tasks": 3, "pass@1": pytest.approx(2 / 3)}
    assert cells["ifeval_strict"]["pass@1"] == 0.5 and cells["ifeval_loose"]["pass@1"] == 1.0
    assert cells["mt_bench"] == {"tasks": 2, "score": pytest.approx(20 / 3), "failed": 1,
                                 "turn1": 6.5, "turn2": 7.0}
    ifeval = summary["details"]["m"]["ifeval"]
    assert (ifeval["inst_strict"], ifeval["inst_loose"], ifeval["instructions"]) == (pytest.approx(2 / 3), 1.0, 3)
    assert summary["details"]["m"]["mt_bench"]["categories"] == {"math": 4.0, "writing": 8.0}
    assert summary["details"]["m"]["gsm8k"] == {"accuracy": pytest.approx(2 / 3), "tasks": 3, "no_answer": 0,
                                                "errors": 0}
    md = results.to_markdown(summary, title="t")
    assert "| Model | MT-Bench | IFEval strict | IFEval loose | GSM8K |" in md
    assert "| m | 6.67 | 50.0 | 100.0 | 66.7 |" in md
    assert "| m | 50.0 | 100.0 | 66.7 | 100.0 | 0 |" in md  # IFEval: prompt strict, loose; instruction strict, loose
    assert "| m | 6.67 | 6.50 | 7.00 | 8.00 | 4.00 | 1 |" in md


def test_compare_keeps_rating_columns_and_their_differences():
    a = results.summarise(results.task_rows(_scored(), [1]), ["m"], [1])
    better = [dict(r, ratings=[10.0, 10.0]) if r["suite"] == "mt_bench" else r for r in _scored()]
    b = results.summarise(results.task_rows(better, [1]), ["m"], [1])
    both = results.compare([("a", a), ("b", b)])
    assert both["k"] == [1]  # a rating cell has no pass@k, and does not drop k from the table
    assert [c.get("score", False) for c in both["columns"]] == [True, False, False, False]
    assert set(both["details"]) == {"m", "b/m"}
    md = results.to_markdown(both)
    assert "| Δ b/m vs m | +3.33 | +0.0 | +0.0 | +0.0 |" in md
