"""Instruction Fusion end to end against a fault-injecting OpenAI-compatible server on loopback.

The server (tests/fault_server.py, named for what it does) answers 429 with
Retry-After, 500, timeouts, truncated JSON, empty content and INVALID PROMPT,
chosen per request body. The job must finish with every row in a recorded
outcome and nothing lost.
"""

from __future__ import annotations

import json
import threading

import pyarrow.parquet as pq
import numpy as np
import pytest

from ray_pipeline.jobs import load_job
from ray_pipeline.methods.fusion.pipeline import run_instruction_fusion
from ray_pipeline.prompts import load_template
from ray_pipeline.core.seeds import load_seeds
from tests.conftest import openai_teacher, read_jsonl, write_job
from tests.fault_server import FaultInjectingOpenAIServer, last_user_text

# Fault per request body, decided by a hash of its last user message so that
# the same request always meets the same fate. "first:" faults hit only the
# first attempt (the retry succeeds); the others hit every attempt.
FUSION_FATES = ["ok", "first:429", "first:500", "first:timeout", "first:truncated",
                "always:500", "always:invalid", "always:empty"]
RESPONSE_FATES = ["ok", "ok", "ok", "first:503", "always:500", "always:empty"]


class FatePlan:
    """Deals fates round-robin to request bodies in the order the server first sees them,
    so every fault kind is met within each len(fates) new requests, and remembers them."""

    def __init__(self) -> None:
        self.fates: dict[str, str] = {}  # last user message -> fate
        self._dealt = {"fusion": 0, "response": 0}
        self._lock = threading.Lock()

    def fate(self, text: str) -> str:
        with self._lock:
            if text not in self.fates:
                kind = "fusion" if "#Given Prompt 1#" in text else "response"  # if_fusion@v2, the paper's prompt
                fates = FUSION_FATES if kind == "fusion" else RESPONSE_FATES
                self.fates[text] = fates[self._dealt[kind] % len(fates)]
                self._dealt[kind] += 1
            return self.fates[text]

    def __call__(self, body: dict, attempt: int) -> str | None:
        when, _, kind = self.fate(last_user_text(body)).partition(":")
        if when == "always" or (when == "first" and attempt == 0):
            return kind
        return None


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, local_ray, code_alpaca):
    tmp = tmp_path_factory.mktemp("faults")
    plan = FatePlan()
    with FaultInjectingOpenAIServer(faults=plan, retry_after_s=0.5, hang_s=5.0) as srv:
        job_file = write_job(
            tmp,
            teacher=openai_teacher(srv.base_url, timeout_s=1.0, max_retries=2, concurrency=8),
            fusion={"num_instructions": 8, "max_attempts": 48},
        )
        job = load_job(job_file)
        manifest = run_instruction_fusion(job)
        yield job, manifest, srv.calls, tmp / "run", plan


def test_every_row_has_a_recorded_outcome(faulty_run):
    job, manifest, calls, run, plan = faulty_run
    table = pq.read_table(run / "test.parquet").to_pylist()
    assert manifest["complete"] and manifest["counts"]["fused"] == 8
    assert len(table) == manifest["counts"]["attempts"] == manifest["counts"]["rows"]
    assert {r["outcome"] for r in table} <= {"ok", "invalid", "parse_error", "api_error", "surplus"}
    assert sum(r["selected"] for r in table) == 8
    fusion_counts = manifest["counts"]["fusion"]
    assert sum(fusion_counts.values()) == len(table)
    for outcome in ("ok", "invalid", "parse_error", "api_error"):
        assert fusion_counts[outcome] == sum(r["fusion_outcome"] == outcome for r in table)


def test_manifest_puts_the_estimate_beside_what_was_spent(faulty_run):
    job, manifest, calls, run, plan = faulty_run
    estimate = manifest["estimate"]
    # made before the run: M = 8 at the prior 0.8, 10 fusion calls and 8 responses; at most the budget, 48
    assert estimate["calls"] == {"expected": 18, "at_most": 56} and estimate["phases"]["fusion"]["calls"] == 10
    actual = estimate["actual"]
    assert actual["calls_by_phase"] == {"fusion": manifest["counts"]["attempts"], "response": 8}
    assert (actual["prompt_tokens"], actual["completion_tokens"]) == (manifest["tokens"]["prompt"],
                                                                      manifest["tokens"]["completion"])
    assert actual["usd"] == round(manifest["cost_usd"], 4) and actual["wall_s"] == round(manifest["wall_time_s"], 1)


def test_manifest_reports_the_papers_diversity_u(faulty_run):
    """U (eq. 8-10, Euclidean d_i) of the seed pool, the fused instructions and both, as the IF paper's analysis."""
    from ray_pipeline.analysis.diversity import diversity_u
    from ray_pipeline.analysis.embeddings import embed_texts
    from ray_pipeline.core.seeds import seed_prompt
    from ray_pipeline.core.seeds import load_seeds

    job, manifest, calls, run, plan = faulty_run
    table = pq.read_table(run / "test.parquet").to_pylist()
    seeds = embed_texts([seed_prompt(s) for s in load_seeds(job.seeds).records], job.embedding)
    kept = [r["instruction"] for r in table if r["outcome"] == "ok"]  # the fused rows of the data set (answered)
    fused = embed_texts(kept, job.embedding)
    d = manifest["diversity"]
    assert len(kept) >= 3 and d["metric"] == "euclidean"
    assert d["n"] == {"seeds": 16, "fused": len(kept), "seeds_and_fused": 16 + len(kept)}
    assert d["seeds"] == pytest.approx(diversity_u(seeds), rel=1e-4)
    assert d["fused"] == pytest.approx(diversity_u(fused), rel=1e-4)
    assert d["seeds_and_fused"] == pytest.approx(diversity_u(np.vstack([seeds, fused])), rel=1e-4)
    assert d["seeds"] != pytest.approx(diversity_u(seeds, metric="cosine"), rel=1e-3)


def test_faults_map_to_the_right_outcomes(faulty_run):
    job, manifest, calls, run, plan = faulty_run
    table = pq.read_table(run / "test.parquet").to_pylist()
    tpl = load_template(job.fusion.template)
    seen = set()
    for row in table:
        f = plan.fates[tpl.render(**_parents(job, row))[-1]["content"]]
        seen.add(f)
        if f == "always:500":
            assert row["fusion_outcome"] == "api_error" and "500" in row["fusion_error"]
            assert row["fusion_attempts"] == 3  # max_retries=2
        elif f == "always:invalid":
            assert row["fusion_outcome"] == "invalid"
        elif f == "always:empty":
            assert row["fusion_outcome"] == "parse_error" and row["fusion_reason"] == "empty answer"
        else:
            assert row["fusion_outcome"] == "ok", (f, row["fusion_error"])
            assert row["fusion_attempts"] == (2 if f.startswith("first:") else 1)
    assert {f for f in FUSION_FATES if f != "ok"} <= seen  # every fault kind was met
    # Retry-After was honoured: the retry of a 429 came at least 0.5 s after it.
    by_hash: dict[str, list[dict]] = {}
    for c in calls:
        by_hash.setdefault(c["hash"], []).append(c)
    waits = [b[1]["time"] - b[0]["time"] for b in by_hash.values() if b[0]["fault"] == "429" and len(b) > 1]
    assert waits and min(waits) >= 0.45


def _parents(job, row):
    seeds = {s["id"]: s for s in load_seeds(job.seeds).records}
    from ray_pipeline.core.seeds import seed_prompt

    a, b = (seeds[i] for i in row["parent_ids"])
    return {"instruction_1": seed_prompt(a), "instruction_2": seed_prompt(b)}


def test_responses_lineage_and_sft_files(faulty_run):
    job, manifest, calls, run, plan = faulty_run
    table = pq.read_table(run / "test.parquet").to_pylist()
    seed_ids = {s["id"] for s in load_seeds(job.seeds).records}
    selected = [r for r in table if r["selected"]]
    assert {r["response_outcome"] for r in selected} <= {"ok", "api_error", "parse_error"}
    for r in selected:
        assert r["outcome"] == r["response_outcome"]
        assert len(r["parent_ids"]) == 2 and r["parent_ids"][0] != r["parent_ids"][1]
        assert set(r["parent_ids"]) <= seed_ids
        assert r["teacher_model"] == "fault-model"
        assert r["fusion_template"] == "if_fusion@v2"  # the paper's prompt is the default
        assert r["fusion_template_sha256"] == load_template("if_fusion@v2").sha256
        assert r["response_template_sha256"] == load_template("if_response@v2").sha256
        assert json.loads(r["fusion_sampling"])["seed"] is not None
        assert r["fusion_prompt_tokens"] > 0 and r["fusion_latency_s"] > 0
    ok = [r for r in table if r["outcome"] == "ok"]
    sft = read_jsonl(run / "sft_messages.jsonl")
    alpaca = read_jsonl(run / "sft_alpaca.jsonl")
    assert len(sft) == len(alpaca) == len(ok) == manifest["counts"]["sft_rows"] > 0
    assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant"]
    assert {a["instruction"] for a in alpaca} == {r["instruction"] for r in ok}
    assert manifest["counts"]["response"]["api_error"] == sum(r["response_outcome"] == "api_error" for r in selected)


def test_manifest_and_no_secret_written(faulty_run):
    job, manifest, calls, run, plan = faulty_run
    on_disk = json.loads((run / "manifest.json").read_text())
    assert on_disk["counts"] == manifest["counts"]
    assert on_disk["versions"]["ray"] and on_disk["wall_time_s"] > 0
    assert on_disk["tokens"]["prompt"] > 0
    assert set(on_disk["pass_rate"]) == {"all", "same_language", "cross_language"}
    assert 0 < on_disk["invalid_rate"] < 1
    for path in run.rglob("*"):
        if path.is_file():
            assert b"sk-test-not-a-real-key" not in path.read_bytes(), path


def test_a_dead_teacher_stops_the_run_instead_of_spending_the_pairs(tmp_path, local_ray, code_alpaca):
    from tests.fault_server import always

    from ray_pipeline.core.errors import TeacherError
    from ray_pipeline.methods.fusion.pipeline import DEAD_TEACHER_STREAK

    with FaultInjectingOpenAIServer(faults=always("500")) as srv:
        job = load_job(write_job(tmp_path, teacher=openai_teacher(srv.base_url, max_retries=1, backoff_max_s=0.01),
                                 fusion={"num_instructions": 30, "max_attempts": 120}))
        with pytest.raises(TeacherError, match=r"failed \d+ calls in a row \(last: api_error: HTTP 500"):
            run_instruction_fusion(job)
        # It stopped after the first round: far fewer calls than the 120 pairs it could have spent.
        assert DEAD_TEACHER_STREAK * 2 <= srv.total_calls <= 2 * 2 * 40
    assert not (tmp_path / "run" / "test.parquet").exists()
