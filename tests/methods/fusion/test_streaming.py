"""The fusion loop as a stream (methods/fusion/loop.py), against the fault server on loopback.

* no fusion call past the M-th valid one, whatever the pass rate: calls = attempts = rows, and the last
  attempt is the M-th valid one;
* at most the calls the job allows are in flight (concurrency x actors), fusions and responses together;
* responses start while fusion is still going;
* the rows depend on the job seed only: other concurrency, actors and latency give the same rows.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from ray_pipeline.jobs import load_job
from ray_pipeline.methods.fusion.pipeline import run_instruction_fusion
from tests.conftest import CODE_ALPACA, openai_teacher, write_job
from tests.fault_server import FaultInjectingOpenAIServer, invalid_share, last_user_text

pytestmark = pytest.mark.ray

STABLE = ["attempt", "outcome", "instruction", "response", "selected", "parent_ids", "fusion_outcome",
          "fusion_raw", "response_outcome", "fusion_cache_key", "response_cache_key"]


def is_fusion(body: dict) -> bool:
    return "#Given Prompt 1#" in last_user_text(body)  # if_fusion@v2, the paper's prompt


half_invalid = invalid_share(0.5)  # INVALID PROMPT for about half of the fusion prompts, the same ones every time


def _run(tmp_path, name: str, *, faults=None, latency_s: float = 0.0, concurrency: int, actors: int = 1,
         m: int = 40, budget: int = 400):
    d = tmp_path / name
    d.mkdir()
    with FaultInjectingOpenAIServer(latency_s=latency_s, faults=faults) as srv:
        job = load_job(write_job(
            d, teacher=openai_teacher(srv.base_url, concurrency=concurrency),
            seeds=[{"path": str(CODE_ALPACA), "limit": 40}],  # 780 pairs
            fusion={"num_instructions": m, "max_attempts": budget},
            ray={"num_actors": actors, "num_cpus_per_actor": 0.25},
            diversity=False,
        ))
        manifest = run_instruction_fusion(job)
        calls = srv.calls
        max_in_flight = srv.max_in_flight
    rows = pq.read_table(d / "run" / "test.parquet").to_pylist()
    return {"manifest": manifest, "calls": calls, "max_in_flight": max_in_flight, "rows": rows, "dir": d / "run"}


@pytest.fixture(scope="module")
def half(tmp_path_factory, local_ray, code_alpaca):
    tmp = tmp_path_factory.mktemp("stream")
    return _run(tmp, "half", faults=half_invalid, latency_s=0.05, concurrency=8, actors=2)


def test_a_half_invalid_teacher_pays_for_no_fusion_past_the_mth_valid_one(half):
    m = half["manifest"]
    fusion_calls = [c for c in half["calls"] if is_fusion(c["body"])]
    rows = half["rows"]
    assert m["complete"] and m["counts"]["fused"] == 40 and m["counts"]["surplus"] == 0
    # every fusion call made is a row, and the last row is the 40th valid fusion: nothing drawn after it
    assert len(fusion_calls) == len(rows) == m["counts"]["attempts"]
    assert [r["attempt"] for r in rows] == list(range(len(rows)))
    assert sum(r["fusion_outcome"] == "ok" for r in rows) == 40 and rows[-1]["fusion_outcome"] == "ok"
    invalid = sum(r["fusion_outcome"] == "invalid" for r in rows)
    assert invalid > 10 and len(rows) == 40 + invalid  # about half invalid: the loop drew until 40 were valid
    # within M / pass rate + C (the bound), at the rate seen
    assert len(fusion_calls) <= 40 / (40 / len(rows)) + 16
    responses = [c for c in half["calls"] if not is_fusion(c["body"])]
    assert len(responses) == 40 and m["estimate"]["actual"]["calls_by_phase"] == {"fusion": len(rows), "response": 40}


def test_calls_in_flight_stay_within_concurrency_times_actors(half):
    assert half["max_in_flight"] <= 8 * 2
    assert half["manifest"]["counts"]["max_in_flight"] <= 16
    assert half["max_in_flight"] > 8  # both actors were busy at once


def test_responses_start_while_fusion_goes_on(half):
    calls = sorted(half["calls"], key=lambda c: c["time"])
    first_response = next(c["time"] for c in calls if not is_fusion(c["body"]))
    last_fusion = max(c["time"] for c in calls if is_fusion(c["body"]))
    assert first_response < last_fusion
    # responses are asked as instructions are chosen: over the run, not all at its end
    fusion_times = [c["time"] for c in calls if is_fusion(c["body"])]
    assert sum(c["time"] < fusion_times[len(fusion_times) // 2] for c in calls if not is_fusion(c["body"])) >= 5


def test_the_rows_do_not_depend_on_timing_concurrency_or_actors(half, tmp_path):
    other = _run(tmp_path, "serial", faults=half_invalid, latency_s=0.0, concurrency=1, actors=1)
    assert other["max_in_flight"] == 1
    got = [{k: r[k] for k in STABLE} for r in other["rows"]]
    want = [{k: r[k] for k in STABLE} for r in half["rows"]]
    assert got == want
    assert (other["dir"] / "sft_alpaca.jsonl").read_text() == (half["dir"] / "sft_alpaca.jsonl").read_text()


def test_a_teacher_that_always_fuses_makes_m_fusion_calls_and_m_responses(tmp_path, local_ray, code_alpaca):
    run = _run(tmp_path, "perfect", latency_s=0.02, concurrency=16, m=30)
    fusion_calls = [c for c in run["calls"] if is_fusion(c["body"])]
    assert len(fusion_calls) == 30 and len(run["calls"]) == 60
    assert run["manifest"]["counts"]["attempts"] == 30 and all(r["outcome"] == "ok" for r in run["rows"])
    # a second run of the finished job is answered by the cache: no call, and the same rows
    job = load_job(run["dir"].parent / "job.yaml")
    manifest = run_instruction_fusion(job)
    assert manifest["this_run"]["calls"] == 0 and manifest["teacher"]["started"] is False
    assert json.loads((run["dir"] / "manifest.json").read_text())["this_run"]["cache_hits"] == 60
