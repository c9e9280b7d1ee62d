"""Per-task results, the summary table per model, and comparisons across runs.

Scored samples (one row per generated sample, with its verdict) become:
- per-task rows (``results/<model>.jsonl``): n samples, c passed, pass@k, and
  for evalplus the base-test counts too, for IFEval the loose and instruction-level
  counts, for MT-Bench the judge's ratings per turn, with every sample's verdict;
- a summary (``summary.json``, ``summary.md``) laid out like the papers'
  tables: the TaCIE paper's MT-Bench (mean rating, 1-10), IFEval strict and loose
  (prompt-level), GSM8K (exact match), then the IF paper's HumanEval, HumanEval+,
  MBPP, MBPP+ and one column per MultiPL-E language; one row per model, pass@k
  in percent (GSM8K and IFEval are pass@k of their own verdicts: with one greedy
  sample, accuracy). A language whose toolchain is missing is "skipped" with the
  reason, never a 0. ``details`` holds what a column does not show (IFEval's
  instruction-level accuracies, MT-Bench per turn and category, judge failures);
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
    count: str = ""  # the per-task count pass@k is computed from (default: passed, or base_passed when not plus)
    score: bool = False  # a mean rating (MT-Bench, 1-10), not pass@k

    @property
    def counted(self) -> str:
        return self.count or ("passed" if self.plus else "base_passed")


COLUMNS: tuple[Column, ...] = (
    Column("mt_bench", "MT-Bench", "mt_bench", True, score=True),
    Column("ifeval_strict", "IFEval strict", "ifeval", True),
    Column("ifeval_loose", "IFEval loose", "ifeval", True, count="loose_passed"),
    Column("gsm8k", "GSM8K", "gsm8k", True),
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
        if suite == "ifeval" and not skipped:
            row["loose_passed"] = sum(bool(s.get("loose_passed")) for s in samples)
            row["loose_pass_at_k"] = {str(k): pass_at_k(n, row["loose_passed"], k) for k in ks if k <= n}
        if suite == "mt_bench" and not skipped:
            row["category"] = next((s.get("category") for s in samples if s.get("category")), "")
            row["ratings"] = [list(s.get("ratings") or []) for s in samples]
        row["samples"] = [
            {key: s.get(key) for key in SAMPLE_FIELDS if key in s or key in _ALWAYS}
            for s in samples
        ]
        rows.append(row)
    rows.sort(key=lambda r: (r["model"], r["suite"], _task_order(r["task_id"])))
    return rows


#: what a task row keeps of each sample (the ones a benchmark does not have are left out, except _ALWAYS)
SAMPLE_FIELDS = ("sample", "passed", "status", "base_passed", "base_status", "loose_passed", "detail", "instructions",
                 "error", "extracted", "reference", "extracted_by", "ratings", "judgments", "generation_error",
                 "finish_reason", "wall_s", "solution")
_ALWAYS = ("sample", "passed", "status", "base_passed", "base_status", "detail", "generation_error", "finish_reason",
           "wall_s", "solution")


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
            if col.score:
                cells[col.key] = score_cell(scored)
                continue
            counts = [(r["n"], r.get(col.counted, r["passed"])) for r in scored]
            cells[col.key] = {"tasks": len(scored), **{f"pass@{k}": mean_pass_at_k(counts, k)
                                                        for k in ks if min(n for n, _ in counts) >= k}}
        table[model] = cells
    summary: dict[str, Any] = {"k": list(ks), "columns": [{"key": c.key, "title": c.title, **({"score": True} if c.score else {})}
                                                          for c in columns], "models": table}
    details = {model: d for model in models if (d := _details(by_model_suite, model))}
    if details:
        summary["details"] = details
    return summary


def _ratings(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MT-Bench task rows as ``mt_bench.summarise``'s rows: one per (sample, turn)."""
    return [{"task_id": task["task_id"], "category": task.get("category", ""), "turn": turn, "rating": rating}
            for task in tasks for sample in task.get("ratings") or [] for turn, rating in enumerate(sample, 1)]


def score_cell(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """MT-Bench's cell (``mt_bench.summarise``: the mean of every parsed rating of both turns, as FastChat's
    show_result; per turn); ratings the judge gave in no parsable form are ``failed``, left out of the means."""
    from ray_pipeline.evaluation import mt_bench

    got = mt_bench.summarise(_ratings(tasks))
    return {"tasks": len(tasks), "score": got["score"], "failed": got["failed"],
            **{turn: got[turn] for turn in ("turn1", "turn2") if got[turn] is not None}}


def _details(by_model_suite: dict[tuple[str, str], list[dict[str, Any]]], model: str) -> dict[str, Any]:
    """What the columns do not show: IFEval's four accuracies (``ifeval.summarise`` over every sample's
    verdict), GSM8K's answers without a number and failed generations (``gsm8k.summarise``), MT-Bench per turn
    and category (``mt_bench.summarise``)."""
    out: dict[str, Any] = {}
    ifeval_tasks = [r for r in by_model_suite.get((model, "ifeval"), []) if "skipped" not in r]
    if ifeval_tasks:
        from ray_pipeline.evaluation import ifeval

        got = ifeval.summarise(s for r in ifeval_tasks for s in r["samples"])
        # errors: answers whose generation failed or that a checker could not check (counted as not followed)
        out["ifeval"] = {**{k: got[k] for k in ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")},
                         "prompts": len(ifeval_tasks), "instructions": got["instructions"], "errors": got["errors"]}
    gsm8k_tasks = [r for r in by_model_suite.get((model, "gsm8k"), []) if "skipped" not in r]
    if gsm8k_tasks:
        from ray_pipeline.evaluation import gsm8k

        out["gsm8k"] = gsm8k.summarise(s for r in gsm8k_tasks for s in r["samples"])  # with answers holding no number
    mt = [r for r in by_model_suite.get((model, "mt_bench"), []) if "skipped" not in r]
    if mt:
        from ray_pipeline.evaluation import mt_bench

        got = mt_bench.summarise(_ratings(mt))
        out["mt_bench"] = {**score_cell(mt), "categories": got["categories"]}
    return out


def _cell(cell: dict[str, Any] | None, k: int, notes: dict[str, int]) -> str:
    if cell is None:
        return "–"
    if "skipped" in cell:
        mark = notes.setdefault(cell["skipped"], len(notes) + 1)
        return f"skipped[{mark}]"
    if "score" in cell:
        return "–" if cell["score"] is None else f"{cell['score']:.2f}"
    value = cell.get(f"pass@{k}")
    return "–" if value is None else f"{100 * value:.1f}"


def _value(cell: dict[str, Any], k: int) -> float | None:
    """The number a cell shows, on the table's scale (percent, or a 1-10 rating)."""
    if "score" in cell:
        return cell["score"]
    value = cell.get(f"pass@{k}")
    return None if value is None else 100 * value


def to_markdown(summary: dict[str, Any], title: str = "") -> str:
    """Markdown tables, one per k, models as rows; the rows after the first also as differences from it."""
    columns = summary["columns"]
    models = list(summary["models"])
    notes: dict[str, int] = {}
    lines: list[str] = [f"# {title}", ""] if title else []
    for k in summary["k"]:
        scale = f"pass@{k} (%)" + ("; MT-Bench: mean judge rating, 1-10" if any(c.get("score") for c in columns) else "")
        lines += [scale, "", "| Model | " + " | ".join(c["title"] for c in columns) + " |",
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
                    va, vb = _value(a, k), _value(b, k)
                    diffs.append("–" if va is None or vb is None else f"{vb - va:+.{2 if c.get('score') else 1}f}")
                lines.append(f"| Δ {model} vs {models[0]} | " + " | ".join(diffs) + " |")
        lines.append("")
    for reason, mark in notes.items():
        lines.append(f"[{mark}] {reason}")
    tasks = {c["key"]: max((m.get(c["key"], {}).get("tasks", 0) for m in summary["models"].values()), default=0)
             for c in columns}
    lines += ["", "Tasks per column: " + ", ".join(f"{c['title']} {tasks[c['key']]}" for c in columns), ""]
    lines += _details_markdown(summary.get("details") or {})
    return "\n".join(lines)


def _details_markdown(details: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    ifeval = {m: d["ifeval"] for m, d in details.items() if "ifeval" in d}
    if ifeval:
        lines += ["IFEval (%)", "", "| Model | prompt strict | prompt loose | instruction strict | instruction loose | "
                  "errors |", "|---|---:|---:|---:|---:|---:|"]
        for model, d in ifeval.items():
            cells = [d["prompt_strict"], d["prompt_loose"], d["inst_strict"], d["inst_loose"]]
            lines.append(f"| {model} | " + " | ".join("–" if v is None else f"{100 * v:.1f}" for v in cells)
                         + f" | {d.get('errors', 0)} |")
        lines.append("")
    mt = {m: d["mt_bench"] for m, d in details.items() if "mt_bench" in d}
    if mt:
        categories = list(dict.fromkeys(c for d in mt.values() for c in d["categories"]))  # MT-Bench's order
        lines += ["MT-Bench (mean judge rating, 1-10)", "",
                  "| Model | overall | turn 1 | turn 2 | " + " | ".join(categories) + " | unrated turns |",
                  "|---|" + "---:|" * (len(categories) + 4)]
        for model, d in mt.items():
            cells = [d.get("score"), d.get("turn1"), d.get("turn2")] + [d["categories"].get(c) for c in categories]
            lines.append(f"| {model} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in cells)
                         + f" | {d['failed']} |")
        lines.append("")
    return lines


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
    scores = {c["key"] for _, summary in summaries for c in summary["columns"] if c.get("score")}
    ks = [k for k in sorted(ks) if all(f"pass@{k}" in cell or "skipped" in cell or "score" in cell
                                       for cells in models.values() for cell in cells.values())]
    out: dict[str, Any] = {"k": ks, "columns": [{"key": k, "title": titles[k], **({"score": True} if k in scores else {})}
                                               for k in order], "models": models}
    details = {}
    for source, summary in summaries:
        for label, d in (summary.get("details") or {}).items():
            details[label if label not in details else f"{source}/{label}"] = d
    if details:
        out["details"] = details
    return out
