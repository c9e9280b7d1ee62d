"""Per-task results, the summary table per model, and comparisons across runs.

Scored samples (one row per generated sample, with its verdict) become:
- per-task rows (``results/<model>.jsonl``): n samples, c passed, pass@k, and
  for evalplus the base-test counts too, with every sample's verdict;
- a summary (``summary.json``, ``summary.md``) laid out like the papers'
  tables: HumanEval, HumanEval+, MBPP, MBPP+ and one column per MultiPL-E
  language, one row per model, pass@k in percent. A language whose toolchain
  is missing is "skipped" with the reason, never a 0;
- ``compare``: several summaries (models, checkpoints, sweep shards' merged
  runs) in one table, with each model's difference from the first.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ray_pipeline.evaluation.passk import mean_pass_at_k, pass_at_k
from ray_pipeline.evaluation.problems import LANGUAGE_TITLES, MULTIPLE_LANGUAGES


@dataclass(frozen=True)
class Column:
    key: str  # "humaneval+", "java", ...
    title: str
    suite: str  # "humaneval", "multiple-java"
    plus: bool  # evalplus: base and plus tests (True) or base tests only (False); MultiPL-E: True


COLUMNS: tuple[Column, ...] = (
    Column("humaneval", "HumanEval", "humaneval", False),
    Column("humaneval+", "HumanEval+", "humaneval", True),
    Column("mbpp", "MBPP", "mbpp", False),
    Column("mbpp+", "MBPP+", "mbpp", True),
) + tuple(Column(lang, LANGUAGE_TITLES[lang], f"multiple-{lang}", True) for lang in MULTIPLE_LANGUAGES)


def task_rows(scored: Iterable[dict[str, Any]], ks: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (model, suite, task) from scored samples."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in scored:
        groups[(s["model"], s["suite"], s["task_id"])].append(s)
    rows = []
    for (model, suite, task_id), samples in groups.items():
        samples.sort(key=lambda s: s["sample"])
        skipped = next((s["skipped"] for s in samples if s.get("skipped")), "")
        n = len(samples)
        c = sum(bool(s["passed"]) for s in samples)
        row: dict[str, Any] = {"model": model, "suite": suite, "task_id": task_id, "n": n, "passed": c}
        if skipped:
            row["skipped"] = skipped
        else:
            row["pass_at_k"] = {str(k): pass_at_k(n, c, k) for k in ks if k <= n}
            if suite in ("humaneval", "mbpp"):
                cb = sum(bool(s["base_passed"]) for s in samples)
                row["base_passed"] = cb
                row["base_pass_at_k"] = {str(k): pass_at_k(n, cb, k) for k in ks if k <= n}
        row["samples"] = [
            {key: s.get(key) for key in ("sample", "passed", "status", "base_passed", "base_status", "detail",
                                         "generation_error", "finish_reason", "wall_s", "solution")}
            for s in samples
        ]
        rows.append(row)
    rows.sort(key=lambda r: (r["model"], r["suite"], _task_order(r["task_id"])))
    return rows


def _task_order(task_id: str) -> tuple[Any, ...]:
    """HumanEval/2 before HumanEval/10; HumanEval_2_x before HumanEval_10_y."""
    digits = "".join(ch if ch.isdigit() else " " for ch in task_id).split()
    return (int(digits[0]) if digits else 0, task_id)


def summarise(tasks: list[dict[str, Any]], models: Sequence[str], ks: Sequence[int]) -> dict[str, Any]:
    """The summary: per model and column, pass@k (0..1), the task count, or the reason it was skipped."""
    by_model_suite: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for t in tasks:
        by_model_suite[(t["model"], t["suite"])].append(t)
    suites = {t["suite"] for t in tasks}
    columns = [c for c in COLUMNS if c.suite in suites]
    table: dict[str, dict[str, Any]] = {}
    for model in models:
        cells: dict[str, Any] = {}
        for col in columns:
            rows = by_model_suite.get((model, col.suite), [])
            scored = [r for r in rows if "skipped" not in r]
            if not scored:
                reason = next((r["skipped"] for r in rows if "skipped" in r), "not run")
                cells[col.key] = {"skipped": reason, "tasks": 0}
                continue
            counts = [(r["n"], r["passed"] if col.plus else r.get("base_passed", r["passed"])) for r in scored]
            cells[col.key] = {"tasks": len(scored), **{f"pass@{k}": mean_pass_at_k(counts, k)
                                                        for k in ks if min(n for n, _ in counts) >= k}}
        table[model] = cells
    return {"k": list(ks), "columns": [{"key": c.key, "title": c.title} for c in columns], "models": table}


def _cell(cell: dict[str, Any] | None, k: int, notes: dict[str, int]) -> str:
    if cell is None:
        return "–"
    if "skipped" in cell:
        mark = notes.setdefault(cell["skipped"], len(notes) + 1)
        return f"skipped[{mark}]"
    value = cell.get(f"pass@{k}")
    return "–" if value is None else f"{100 * value:.1f}"


def to_markdown(summary: dict[str, Any], title: str = "") -> str:
    """Markdown tables, one per k, models as rows; the rows after the first also as differences from it."""
    columns = summary["columns"]
    models = list(summary["models"])
    notes: dict[str, int] = {}
    lines: list[str] = [f"# {title}", ""] if title else []
    for k in summary["k"]:
        lines += [f"pass@{k} (%)", "", "| Model | " + " | ".join(c["title"] for c in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for model in models:
            cells = summary["models"][model]
            lines.append(f"| {model} | " + " | ".join(_cell(cells.get(c["key"]), k, notes) for c in columns) + " |")
        if len(models) > 1:
            first = summary["models"][models[0]]
            for model in models[1:]:
                diffs = []
                for c in columns:
                    a, b = first.get(c["key"]) or {}, summary["models"][model].get(c["key"]) or {}
                    va, vb = a.get(f"pass@{k}"), b.get(f"pass@{k}")
                    diffs.append("–" if va is None or vb is None else f"{100 * (vb - va):+.1f}")
                lines.append(f"| Δ {model} vs {models[0]} | " + " | ".join(diffs) + " |")
        lines.append("")
    for reason, mark in notes.items():
        lines.append(f"[{mark}] {reason}")
    tasks = {c["key"]: max((m.get(c["key"], {}).get("tasks", 0) for m in summary["models"].values()), default=0)
             for c in columns}
    lines += ["", "Tasks per column: " + ", ".join(f"{c['title']} {tasks[c['key']]}" for c in columns), ""]
    return "\n".join(lines)


def compare(summaries: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One summary from several (source name, summary): rows keep their labels, prefixed by the source on a clash."""
    keys: list[str] = []
    titles: dict[str, str] = {}
    ks: list[int] = []
    models: dict[str, dict[str, Any]] = {}
    for source, summary in summaries:
        for c in summary["columns"]:
            if c["key"] not in titles:
                titles[c["key"]] = c["title"]
                keys.append(c["key"])
        ks += [k for k in summary["k"] if k not in ks]
        for label, cells in summary["models"].items():
            name = label if label not in models else f"{source}/{label}"
            models[name] = cells
    order = [c.key for c in COLUMNS if c.key in titles] + [k for k in keys if k not in {c.key for c in COLUMNS}]
    ks = [k for k in sorted(ks) if all(f"pass@{k}" in cell or "skipped" in cell
                                       for cells in models.values() for cell in cells.values())]
    return {"k": ks, "columns": [{"key": k, "title": titles[k]} for k in order], "models": models}
