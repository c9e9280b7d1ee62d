"""Throughput of OpenAICompatTeacher against a fixed-latency server, and of the authors' way.

Starts ``tests/fault_server.py`` in its own process with latency L, then for
each concurrency C sends N calls through ``OpenAICompatTeacher.generate`` and
reports calls/s against the bound C/L. The baseline is a
``multiprocessing.Pool(10)`` whose workers make blocking
``openai.OpenAI(...).chat.completions.create`` calls (bound 10/L).

    python benchmarks/teacher_throughput.py --latency 0.2
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import openai

from ray_pipeline.teachers.base import ChatRequest, Sampling
from ray_pipeline.teachers.openai_compat import OpenAICompatTeacher

FAULT_SERVER = Path(__file__).resolve().parents[1] / "tests" / "fault_server.py"
MODEL = "bench-model"
POOL_WORKERS = 10
GOAL_CONCURRENCY = 32
GOAL_FRACTION = 0.8
SAMPLING = Sampling(temperature=0.7, max_tokens=256)


@dataclass
class Run:
    label: str
    bound_concurrency: int
    calls: int
    elapsed_s: float
    cpu_s: float | None  # CPU time of the client process (None for the pool: it runs in workers)

    @property
    def per_s(self) -> float:
        return self.calls / self.elapsed_s


def start_server(latency_s: float, invalid_rate: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    """The fault server in its own process (so it does not share our GIL), and its base URL; ``invalid_rate``:
    the share of IF fusion prompts it answers INVALID PROMPT."""
    proc = subprocess.Popen(
        [sys.executable, str(FAULT_SERVER), "--port", "0", "--latency", str(latency_s),
         "--invalid-rate", str(invalid_rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"fault server did not start (printed {base_url!r})")
    return proc, base_url


def default_calls(concurrency: int) -> int:
    """max(200, 6*C) rounded up to whole rounds of C, so a last partial round does not count against C/L."""
    rounds = -(-max(200, 6 * concurrency) // concurrency)
    return rounds * concurrency


def prompt(i: int) -> str:
    return f"Rewrite instruction #{i} so that it needs one more reasoning step."


def bench_teacher(base_url: str, concurrency: int, calls: int) -> Run:
    teacher = OpenAICompatTeacher.for_endpoint(base_url, MODEL, concurrency=concurrency, max_retries=0)
    with teacher:
        warmup = [ChatRequest.make([{"role": "user", "content": prompt(-i)}], SAMPLING) for i in range(concurrency)]
        teacher.generate(warmup)  # opens the connections
        batch = [ChatRequest.make([{"role": "user", "content": prompt(i)}], SAMPLING) for i in range(calls)]
        t0, cpu0 = time.perf_counter(), time.process_time()
        results = teacher.generate(batch)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} calls failed, e.g. {failed[0]}")
    return Run(f"ours C={concurrency}", concurrency, calls, elapsed, cpu)


_client: openai.OpenAI | None = None


def _pool_init(base_url: str) -> None:
    global _client
    _client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)


def _pool_call(i: int) -> str | None:
    assert _client is not None
    response = _client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt(i)}],
        temperature=SAMPLING.temperature,
        max_tokens=SAMPLING.max_tokens,
    )
    return response.choices[0].message.content


def bench_pool(base_url: str, calls: int) -> Run:
    """The authors' way: a process pool of blocking SDK calls."""
    with multiprocessing.get_context("spawn").Pool(POOL_WORKERS, _pool_init, (base_url,)) as pool:
        pool.map(_pool_call, range(-POOL_WORKERS, 0), chunksize=1)  # start workers, open connections
        t0 = time.perf_counter()
        pool.map(_pool_call, range(calls), chunksize=1)
        elapsed = time.perf_counter() - t0
    return Run(f"Pool({POOL_WORKERS}) blocking", POOL_WORKERS, calls, elapsed, None)


def print_table(runs: list[Run], baseline: Run, latency_s: float) -> None:
    header = (
        f"{'client':<22}{'calls':>7}{'secs':>8}{'calls/s':>10}{'bound C/L':>11}"
        f"{'of bound':>10}{'vs pool':>9}{'cpu ms/call':>13}"
    )
    print(header)
    print("-" * len(header))
    for run in [*runs, baseline]:
        bound = run.bound_concurrency / latency_s
        cpu = "n/a" if run.cpu_s is None else f"{1000 * run.cpu_s / run.calls:.2f}"
        print(
            f"{run.label:<22}{run.calls:>7}{run.elapsed_s:>8.2f}{run.per_s:>10.1f}{bound:>11.1f}"
            f"{run.per_s / bound:>10.0%}{run.per_s / baseline.per_s:>8.2f}x{cpu:>13}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server latency L in seconds")
    parser.add_argument(
        "--calls", type=int, default=None, help="calls per run (default: max(200, 6*C) in whole rounds of C)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    args = parser.parse_args()

    proc, base_url = start_server(args.latency)
    try:
        print(f"server {base_url}, latency {args.latency * 1000:.0f} ms, in a separate process\n")
        runs = [bench_teacher(base_url, c, args.calls or default_calls(c)) for c in args.concurrency]
        baseline = bench_pool(base_url, args.calls or 200)
    finally:
        proc.terminate()
        proc.wait()
    print_table(runs, baseline, args.latency)

    goal = next((r for r in runs if r.bound_concurrency == GOAL_CONCURRENCY), None)
    if goal is None:
        print(f"\ngoal not measured: run with C={GOAL_CONCURRENCY} included")
        return
    fraction = goal.per_s * args.latency / GOAL_CONCURRENCY
    verdict = "MET" if fraction >= GOAL_FRACTION else "NOT MET"
    print(
        f"\ngoal (>= {GOAL_FRACTION:.0%} of C/L at C={GOAL_CONCURRENCY}, L={args.latency * 1000:.0f} ms): "
        f"{verdict}: {goal.per_s:.1f} calls/s = {fraction:.0%} of {GOAL_CONCURRENCY / args.latency:.0f}"
    )


if __name__ == "__main__":
    main()
