"""``fusion merge``: the published shards of an evaluation sweep as one table.

Each shard of a sweep (``fusion run JOB --shard I/N --publish URI``) leaves a
published run directory (``storage.publish_run``): ``manifest.json``,
``results/<model>.jsonl`` with one row per task, and ``_SUCCESS`` last.
``fusion merge ROOT``:

1. finds every published run below ROOT, at any depth (a directory holding
   ``_SUCCESS``; ``ROOT/merged`` and the output directory are skipped, and a
   directory without ``_SUCCESS`` is never read), waiting with ``--expect N
   --wait-s S`` until N of them are complete;
2. joins the per-task rows of every run by model label: shards of a model
   over disjoint tasks are concatenated; a task found twice is kept once if
   both copies say the same (timings aside) and is an error otherwise; one
   label's runs must agree on sampling (n, temperature, top_p, max_tokens)
   and k;
3. recomputes pass@k from the per-task rows with ``results.summarise`` (so a
   column is the mean over all the sweep's tasks, and a skipped column keeps
   its reason), and writes ``summary.json``, ``summary.md`` and
   ``tasks.jsonl`` to ``--out`` (default ``ROOT/merged``; a path, s3:// or
   gs://); the Markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Any

from ray_pipeline.core.errors import FusionError
from ray_pipeline.evaluation import results
from ray_pipeline.core.storage import Location, find_published, published_record, read_json, read_jsonl, resolve, write_text

#: the default output directory below ROOT
MERGED_DIR = "merged"
#: how often ROOT is listed again while waiting for --expect runs
POLL_S = 2.0
#: per-sample fields that differ between two scorings of the same answer without changing the verdict
_VOLATILE_SAMPLE_FIELDS = ("wall_s",)


def cmd_merge(args: argparse.Namespace) -> int:
    """``fusion merge ROOT [--expect N] [--wait-s S] [--out URI]``."""
    summary = merge_published(args.root, expect=args.expect, wait_s=args.wait_s, out=args.out)
    print(summary["markdown"], end="")
    merged = summary["merged"]
    print(f"merged {merged['runs']} published run(s): {merged['models']} model(s), {merged['tasks']} task rows "
          f"-> {merged['out']}", file=sys.stderr)
    return 0


def merge_published(root: str, expect: int | None = None, wait_s: float = 0.0,
                    out: str | None = None) -> dict[str, Any]:
    """Merge the published evaluation runs below ``root``; write and return the summary (with its Markdown)."""
    if expect is not None and expect < 1:
        raise FusionError(f"--expect {expect}: must be at least 1")
    if wait_s < 0:
        raise FusionError(f"--wait-s {wait_s:g}: must be 0 or more")
    base = resolve(root)
    out_loc = resolve(out) if out else base.child(MERGED_DIR)
    runs = _wait_for_runs(base, out_loc, expect, wait_s)
    loaded = [_load_run(base, run) for run in runs]
    labels, ks, tasks = _join(loaded)
    summary = results.summarise(tasks, labels, ks)
    summary["merged_from"] = [run["name"] for run in loaded]
    jobs = sorted({run["job"] for run in loaded if run["job"]})
    markdown = results.to_markdown(summary, title=f"Merged: {', '.join(jobs) or base.uri}")
    write_text(out_loc.child("tasks.jsonl"), "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks))
    write_text(out_loc.child("summary.md"), markdown)
    write_text(out_loc.child("summary.json"), json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return {**summary, "markdown": markdown,
            "merged": {"runs": len(loaded), "models": len(labels), "tasks": len(tasks), "out": out_loc.uri}}


# ------------------------------------------------------------------ finding the runs
def _wait_for_runs(base: Location, out_loc: Location, expect: int | None, wait_s: float) -> list[Location]:
    skip = (base.child(MERGED_DIR), out_loc)
    deadline = time.monotonic() + wait_s
    while True:
        complete, incomplete = find_published(base, skip)
        if expect is None or len(complete) >= expect:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            missing = _missing(complete, expect)
            parts = [f"{len(complete)} of {expect} expected published runs are complete under {base.uri} "
                     f"after waiting {wait_s:g} s"]
            parts.append(f"missing: {missing}")
            if incomplete:
                parts.append("incomplete (no _SUCCESS): " + ", ".join(base.relative(i) or "." for i in incomplete))
            raise FusionError("; ".join(parts))
        time.sleep(min(POLL_S, left))
    if not complete:
        hint = f" ({len(incomplete)} incomplete, without _SUCCESS)" if incomplete else ""
        raise FusionError(f"no published run (a directory with _SUCCESS) under {base.uri}{hint}")
    return complete


def _missing(complete: list[Location], expect: int) -> str:
    """Which shards are absent, where the published runs tell (job name and shard count), else how many."""
    present: dict[tuple[str, int], set[int]] = defaultdict(set)
    for run in complete:
        record = published_record(run) or {}
        shard = str(record.get("shard") or "")
        if "/" in shard:
            index, count = shard.split("/", 1)
            if index.isdigit() and count.isdigit():
                present[(str(record.get("job")), int(count))].add(int(index))
    names = [f"{job} shard {i}/{count}" for (job, count), have in sorted(present.items())
             for i in range(count) if i not in have]
    if names:
        return ", ".join(names)
    return f"{expect - len(complete)} run(s), which ones the published runs do not tell (not shards of one job)"


# ------------------------------------------------------------------ reading one run
def _load_run(base: Location, run: Location) -> dict[str, Any]:
    name = base.relative(run) or "."
    manifest = read_json(run.child("manifest.json"))
    if not isinstance(manifest, dict):
        raise FusionError(f"{run.uri}/manifest.json: not a run manifest")
    if manifest.get("kind") != "eval":
        raise FusionError(f"{run.uri}: a published {manifest.get('kind')} run; fusion merge takes evaluation runs")
    summary = manifest.get("summary") or {}
    labels = list(summary.get("models") or {})
    rows: dict[str, list[dict[str, Any]]] = {}
    for label in labels:
        loc = run.child("results", f"{label}.jsonl")
        rows[label] = read_jsonl(loc)
        for row in rows[label]:
            if row.get("model") != label or "suite" not in row or "task_id" not in row:
                raise FusionError(f"{loc.uri}: a row that is not a task of model {label}")
    return {"name": name, "uri": run.uri, "job": manifest.get("job"), "labels": labels, "rows": rows,
            "k": [int(k) for k in summary.get("k") or []], "sampling": manifest.get("sampling")}


# ------------------------------------------------------------------ joining
def _sampling_text(run: dict[str, Any]) -> str:
    sampling = run["sampling"] or {}
    shown = ", ".join(f"{key} {sampling[key]}" for key in ("n", "temperature", "top_p", "max_tokens")
                      if key in sampling)
    return f"{run['name']}: {shown + ', ' if shown else ''}k {run['k']}"


def _comparable(row: dict[str, Any]) -> str:
    samples = [{k: v for k, v in s.items() if k not in _VOLATILE_SAMPLE_FIELDS} for s in row.get("samples") or []]
    return json.dumps({**row, "samples": samples}, sort_keys=True, ensure_ascii=False)


def _join(runs: list[dict[str, Any]]) -> tuple[list[str], list[int], list[dict[str, Any]]]:
    labels: list[str] = []
    first_run: dict[str, dict[str, Any]] = {}
    kept: dict[tuple[str, str, str], tuple[dict[str, Any], str]] = {}
    for run in runs:
        for label in run["labels"]:
            if label not in first_run:
                first_run[label] = run
                labels.append(label)
            other = first_run[label]
            sampling = {k: v for k, v in (run["sampling"] or {}).items() if k != "k"}
            other_sampling = {k: v for k, v in (other["sampling"] or {}).items() if k != "k"}
            if run["k"] != other["k"] or (run["sampling"] and other["sampling"] and sampling != other_sampling):
                raise FusionError(f"model {label}: published runs differ in sampling or k ({_sampling_text(other)}; "
                                  f"{_sampling_text(run)}); merge runs of one setting, or give each its own label")
            for row in run["rows"][label]:
                key = (label, row["suite"], row["task_id"])
                seen = kept.get(key)
                if seen is None:
                    kept[key] = (row, run["name"])
                elif _comparable(seen[0]) != _comparable(row):
                    raise FusionError(f"model {label}, benchmark {row['suite']}, task {row['task_id']}: published "
                                      f"twice with different results ({seen[1]} and {run['name']})")
    ks = sorted({k for run in runs for k in run["k"]}) or [1]
    tasks = [row for row, _ in kept.values()]
    tasks.sort(key=lambda r: (labels.index(r["model"]), r["suite"], results._task_order(r["task_id"])))
    return labels, ks, tasks
