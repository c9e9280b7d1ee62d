"""Whole Instruction Fusion runs against a fixed-latency server: calls/s against C/L, calls against M, driver memory.

Starts ``tests/fault_server.py`` in its own process with latency L (200 ms), then runs ``fusion run``'s pipeline
(``run_instruction_fusion``) on Code Alpaca seeds (``../shared``), each case in a fresh process with Ray
already up (as on a cluster: ``ray start`` comes before jobs; the local start is timed and printed apart):

* M = 4,000 at C = 32 (one actor) and C = 128 (two actors of 64): the run's calls (2M: fusions and
  responses) per second of the whole run (seeds, pairs, teacher, files, manifest), against C/L; beside it the
  teacher client alone (``OpenAICompatTeacher.generate`` at the same C, ``benchmarks/teacher_throughput.py``)
  in the same invocation;
* a teacher that answers INVALID PROMPT to half the fusion prompts: fusion calls against M / pass rate + C;
* M = 5,000 and M = 50,000 (the paper's M) at C = 128: wall time, calls, surplus and the driver's peak memory.

    python benchmarks/pipeline_throughput.py            # everything (about 8 minutes on 2 cores)
    python benchmarks/pipeline_throughput.py --quick    # M = 400 / 500 / 1,000: a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SEEDS = ROOT.parent / "shared" / "data" / "seeds" / "codealpaca" / "code_alpaca_2k.json"
LATENCY_S = 0.2
TARGETS = {32: 0.85, 128: 0.6}  # share of C/L the whole run must reach (the targets)

from teacher_throughput import bench_teacher, start_server  # noqa: E402 (benchmarks/ is on the path above)


# ------------------------------------------------------------------ one case, in its own process
def one(case: dict) -> dict:
    import ray
    import yaml

    from ray_pipeline.jobs import load_job
    from ray_pipeline.methods.fusion.pipeline import run_instruction_fusion

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="pipe-bench-"))
    job = {
        "kind": "instruction_fusion", "name": "bench", "seed": 1,
        "seeds": [{"path": str(SEEDS)}],
        "teacher": {"kind": "openai", "model": "bench-model", "base_url": case["base_url"], "api_key": "EMPTY",
                    "concurrency": case["concurrency"], "max_retries": 0, "timeout_s": 30},
        "fusion": {"num_instructions": case["m"], "max_attempts": 4 * case["m"]},
        "ray": {"num_actors": case["actors"], "num_cpus_per_actor": 0.5},
        "diversity": False,
        "output_dir": str(work / "run"),
    }
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t1 = time.perf_counter()
    manifest = run_instruction_fusion(load_job(work / "job.yaml"))
    wall = time.perf_counter() - t1
    counts = manifest["counts"]
    return {
        "ray_start_s": ray_start_s, "wall_s": wall, "calls": manifest["this_run"]["calls"],
        "fusion_calls": counts["attempts"], "responses": counts["response"]["ok"] + counts["response"]["parse_error"]
        + counts["response"]["api_error"], "fused": counts["fused"], "surplus": counts["surplus"],
        "invalid": counts["fusion"]["invalid"], "max_in_flight": counts["max_in_flight"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mb": before / 1024,
    }


def run_case(base_url: str, m: int, concurrency: int, actors: int) -> dict:
    case = {"base_url": base_url, "m": m, "concurrency": concurrency, "actors": actors}
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)], capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed: {done.stderr[-3000:]}")
    return {**case, **json.loads(done.stdout.strip().splitlines()[-1])}


def client_only(base_url: str, concurrency: int, calls: int) -> float:
    return bench_teacher(base_url, concurrency, calls).per_s


# ------------------------------------------------------------------ the report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small M everywhere (a smoke run)")
    parser.add_argument("--only", choices=("throughput", "invalid", "scale"), help="one part of the report")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    if not SEEDS.exists():
        sys.exit(f"pipeline_throughput: needs the Code Alpaca seeds at {SEEDS} (../shared)")
    m_speed, m_small, m_paper = (400, 500, 1_000) if args.quick else (4_000, 5_000, 50_000)

    print(f"fault server latency {LATENCY_S * 1000:.0f} ms in its own process; seeds {SEEDS.name}\n")
    part = args.only
    if part in (None, "throughput"):
        throughput(m_speed)
    if part in (None, "invalid"):
        invalid(m_speed)
    if part in (None, "scale"):
        scale(m_small, m_paper)


def throughput(m_speed: int) -> None:
    proc, base_url = start_server(LATENCY_S)
    try:
        print("1. throughput of the whole run (calls = fusions + responses)")
        print(f"{'M':>7}{'C':>5}{'actors':>7}{'calls':>8}{'run s':>8}{'calls/s':>9}{'C/L':>7}{'of C/L':>8}"
              f"{'client alone':>14}{'target':>8}{'':>9}")
        for concurrency, actors in ((32, 1), (128, 2)):
            r = run_case(base_url, m_speed, concurrency // actors, actors)
            bound = concurrency / LATENCY_S
            rate = r["calls"] / r["wall_s"]
            alone = client_only(base_url, concurrency, 6 * concurrency)
            target = TARGETS[concurrency]
            print(f"{m_speed:>7}{concurrency:>5}{actors:>7}{r['calls']:>8}{r['wall_s']:>8.1f}{rate:>9.1f}{bound:>7.0f}"
                  f"{rate / bound:>8.0%}{alone / bound:>13.0%} {target:>7.0%}  "
                  f"{'MET' if rate / bound >= target else 'NOT MET'}")
            print(f"{'':>7}calls <= 2M + C: {r['calls']} <= {2 * m_speed + concurrency}: "
                  f"{'yes' if r['calls'] <= 2 * m_speed + concurrency else 'NO'}; surplus {r['surplus']}; "
                  f"most in flight {r['max_in_flight']}; (local Ray start {r['ray_start_s']:.1f} s, not in the run)")
    finally:
        proc.terminate()
        proc.wait()


def invalid(m_speed: int) -> None:
    print("\n2. a teacher answering INVALID PROMPT to half the fusion prompts (C = 32, one actor)")
    proc, base_url = start_server(LATENCY_S, invalid_rate=0.5)
    try:
        r = run_case(base_url, m_speed, 32, 1)
    finally:
        proc.terminate()
        proc.wait()
    p = r["fused"] / r["fusion_calls"]  # the pass rate this teacher showed (the server's share is 0.5 by design)
    bound = m_speed / p + 32
    print(f"   M {m_speed}: {r['fusion_calls']} fusion calls ({r['invalid']} invalid, pass rate {p:.3f}), "
          f"{r['responses']} responses, surplus {r['surplus']}; M / pass rate + C = {bound:.0f}: "
          f"{'within' if r['fusion_calls'] <= bound else 'OVER'} (M / pass rate alone: {m_speed / p:.0f})")


def scale(m_small: int, m_paper: int) -> None:
    print("\n3. growth to the paper's M (C = 128 over two actors)")
    proc, base_url = start_server(LATENCY_S)
    try:
        rows = [run_case(base_url, m, 64, 2) for m in (m_small, m_paper)]
    finally:
        proc.terminate()
        proc.wait()
    print(f"{'M':>7}{'calls':>8}{'wall s':>8}{'calls/s':>9}{'of C/L':>8}{'surplus':>9}{'driver peak MiB':>17}"
          f"{'(before run)':>14}")
    for r in rows:
        rate = r["calls"] / r["wall_s"]
        print(f"{r['m']:>7}{r['calls']:>8}{r['wall_s']:>8.1f}{rate:>9.1f}{rate / (128 / LATENCY_S):>8.0%}"
              f"{r['surplus']:>9}{r['peak_rss_mb']:>17.0f}{r['rss_before_run_mb']:>14.0f}")
    a, b = rows
    print(f"   x{b['m'] / a['m']:.0f} M: wall x{b['wall_s'] / a['wall_s']:.1f}, driver memory grown by the run "
          f"{a['peak_rss_mb'] - a['rss_before_run_mb']:.0f} -> {b['peak_rss_mb'] - b['rss_before_run_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
