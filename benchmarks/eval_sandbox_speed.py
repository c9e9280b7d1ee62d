"""Sandboxed evalplus scoring against evalplus itself: wall time and identical verdicts.

Writes the canonical HumanEval+ solutions (``prompt + canonical_solution``) as
an evalplus samples JSONL, then times, in this one run:

(a) ``evalplus.evaluate.evaluate(dataset="humaneval", samples=..., parallel=P,
    i_just_wanna_run=True)`` with ``HUMANEVAL_OVERRIDE_PATH`` pointing at the
    ``../shared`` release file (set before evalplus is imported); its
    ground-truth cache is filled first, untimed;
(b) our ``EvalPlusExecutor`` (one bubblewrap sandbox per solution) over the same
    samples with P threads: loading the data and the (warmed) expected outputs,
    then scoring.

It prints both wall times, their ratio (goal: at most 1.2) and whether every
task's base and plus statuses agree. A task whose statuses differ is scored
again, one at a time, by both: a difference that is gone then is a timing flake
(a canonical solution near evalplus's per-input time limit, under load); exit
status 1 if any difference stays.
``--repeats R`` alternates the two runs R times and reports the medians (the
machine's other load drifts).
``--limit N`` uses the first N tasks (a trimmed copy of the data file, since
evalplus insists that the samples cover every task).

    python benchmarks/eval_sandbox_speed.py --parallel 2
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HUMANEVAL_PLUS = Path(__file__).resolve().parents[2] / "shared/data/bench/evalplus/HumanEvalPlus-v0.1.10.jsonl.gz"


def trimmed_copy(source: Path, limit: int | None, work: Path) -> Path:
    """``source`` itself, or a .jsonl.gz with its first ``limit`` records."""
    if limit is None:
        return source
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip()][:limit]
    path = work / f"{source.name.split('.')[0]}-first{limit}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path


def run_evalplus(samples: Path, parallel: int) -> tuple[float, dict[str, tuple[str, str]]]:
    """evalplus.evaluate's wall time, and each task's (base_status, plus_status) from its results file."""
    from evalplus.data import get_human_eval_plus, get_human_eval_plus_hash
    from evalplus.evaluate import evaluate, get_groundtruth

    with contextlib.redirect_stdout(io.StringIO()):
        get_groundtruth(get_human_eval_plus(), get_human_eval_plus_hash(), [])  # warm its cache, untimed
    results = samples.with_name(samples.stem + "_eval_results.json")
    results.unlink(missing_ok=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate(dataset="humaneval", samples=str(samples), parallel=parallel, i_just_wanna_run=True)
    wall = time.perf_counter() - started
    evals = json.loads(results.read_text())["eval"]
    return wall, {tid: (r[0]["base_status"], r[0]["plus_status"]) for tid, r in evals.items()}


def run_ours(data_path: Path, samples: list[dict[str, str]],
             parallel: int) -> tuple[float, float, dict[str, tuple[str, str]], float]:
    """Our wall time, the part spent loading data and expected outputs, the statuses, the mean sandbox wall time."""
    from ray_pipeline.evaluation.evalplus_data import expected_outputs, load_evalplus
    from ray_pipeline.evaluation.executors.evalplus import EvalPlusExecutor

    expected_outputs(load_evalplus("humaneval", data_path))  # warm our cache (~/.cache/fusion), untimed
    started = time.perf_counter()
    data = load_evalplus("humaneval", data_path)
    executor = EvalPlusExecutor("humaneval", data)
    executor.prepare()
    loading = time.perf_counter() - started
    problems = {p.task_id: p for p in data.as_problems()}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        verdicts = list(pool.map(lambda s: executor.score(problems[s["task_id"]], s["solution"]), samples))
    wall = time.perf_counter() - started
    statuses = {s["task_id"]: (v.base_status, v.status) for s, v in zip(samples, verdicts)}
    return wall, loading, statuses, sum(v.wall_s for v in verdicts) / len(verdicts)


def recheck(data_path: Path, samples: list[dict[str, str]], task_ids: list[str]) -> dict[str, tuple]:
    """Each task scored again, one at a time, by evalplus in this process and by us: (theirs, ours).

    A canonical solution near a per-input time limit can pass or fail with the
    machine's load, in evalplus itself; a difference gone on a quiet re-run is
    such a flake, one that stays is a real disagreement.
    """
    from evalplus.data import get_human_eval_plus, get_human_eval_plus_hash
    from evalplus.evaluate import check_correctness, get_groundtruth

    from ray_pipeline.evaluation.evalplus_data import load_evalplus
    from ray_pipeline.evaluation.executors.evalplus import EvalPlusExecutor

    problems = get_human_eval_plus()
    with contextlib.redirect_stdout(io.StringIO()):
        truth = get_groundtruth(problems, get_human_eval_plus_hash(), [])
    data = load_evalplus("humaneval", data_path, task_ids=task_ids)
    executor = EvalPlusExecutor("humaneval", data)
    by_id = {p.task_id: p for p in data.as_problems()}
    solutions = {s["task_id"]: s["solution"] for s in samples}
    out = {}
    for tid in task_ids:
        ret = check_correctness("humaneval", 0, problems[tid], solutions[tid], truth[tid], fast_check=True)
        verdict = executor.score(by_id[tid], solutions[tid])
        out[tid] = ((ret["base"][0], ret["plus"][0]), (verdict.base_status, verdict.status))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, default=2, help="P: evalplus workers and our sandbox threads")
    parser.add_argument("--limit", type=int, default=None, help="only the first N HumanEval+ tasks")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two runs this many times; medians")
    parser.add_argument("--data", type=Path, default=HUMANEVAL_PLUS)
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"data file not found: {args.data}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="eval-sandbox-speed-"))
    data_path = trimmed_copy(args.data, args.limit, work)
    os.environ["HUMANEVAL_OVERRIDE_PATH"] = str(data_path)  # before evalplus is imported

    from evalplus.data.utils import stream_jsonl

    samples = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]}
               for r in stream_jsonl(str(data_path))]
    samples_path = work / "samples.jsonl"
    samples_path.write_text("".join(json.dumps(s) + "\n" for s in samples))

    print(f"tasks: {len(samples)}  parallel: {args.parallel}  cpus: {os.cpu_count()}  repeats: {args.repeats}")
    walls: dict[str, list[float]] = {"evalplus": [], "ours": []}
    differ: set[str] = set()
    for repeat in range(args.repeats):
        theirs_s, theirs = run_evalplus(samples_path, args.parallel)
        ours_s, loading_s, ours, per_sandbox = run_ours(data_path, samples, args.parallel)
        walls["evalplus"].append(theirs_s)
        walls["ours"].append(ours_s)
        now_differ = sorted(t for t in theirs if theirs[t] != ours.get(t))
        differ.update(now_differ)
        print(f"[{repeat + 1}] evalplus.evaluate {theirs_s:6.2f} s | sandboxed EvalPlusExecutor {ours_s:6.2f} s "
              f"(loading {loading_s:.2f} s, mean {per_sandbox:.3f} s per sandbox) | ratio {ours_s / theirs_s:.2f}")
        not_passing = {t: s for t, s in theirs.items() if s != ("pass", "pass")}
        print(f"    evalplus's non-passing canonical solutions: {not_passing}")
        for t in now_differ:
            print(f"    differs: {t}: evalplus {theirs[t]} ours {ours.get(t)}")
    theirs_med, ours_med = statistics.median(walls["evalplus"]), statistics.median(walls["ours"])
    print(f"evalplus.evaluate (median):          {theirs_med:7.2f} s")
    print(f"sandboxed EvalPlusExecutor (median): {ours_med:7.2f} s")
    print(f"ratio ours/evalplus:                 {ours_med / theirs_med:7.2f}  (goal <= 1.2)")
    print(f"verdicts identical (base and plus status of {len(samples)} tasks, every repeat): {not differ}")
    persistent = []
    for tid, (theirs_now, ours_now) in recheck(data_path, samples, sorted(differ)).items():
        flake = theirs_now == ours_now
        persistent += [] if flake else [tid]
        print(f"    re-run one at a time: {tid}: evalplus {theirs_now} ours {ours_now}"
              f" -> {'timing flake' if flake else 'DIFFERENT'}")
    if differ:
        print(f"verdicts identical but for timing flakes: {not persistent}")
    sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)
    # evalplus.evaluate leaves a non-daemon watchdog thread sleeping up to 20 s; do not wait for it.
    os._exit(1 if persistent else 0)


if __name__ == "__main__":
    sys.exit(main())
