"""TaCIE end to end: ``fusion run`` on the bundled code and math seed samples (those of
jobs/tacie_quickstart.yaml) with Gemma 3 270M served by vLLM as the teacher (the run's shared
embedded server, ``served_gemma`` in tests/conftest.py) and the CPU (Hugging Face) scorer, two
rounds, then the report.

The seeds are the quickstart's because the 270M teacher decomposes them often enough
to evolve something in two rounds (6 of 13 measured); on Code Alpaca and GSM8K rows its
decompositions mostly loop to max_tokens, and a round 0 with no decomposed item ends the
run (tests/methods/tacie/test_tacie_paper_flow.py drives the paper's templates with a teacher that
answers in their format).

The first run stops after round 1; the second asks for two rounds and must resume
from the round-1 checkpoint (no call for rounds 0-1 is made or even looked up in
the cache); a third run of the finished job makes no call at all and writes the
same rows.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO, SHARED, fusion_cli, read_jsonl, require_shared

pytestmark = pytest.mark.vllm

BENCH = SHARED / "data/bench"
SEEDS = REPO / "ray_pipeline/data/seeds"
DEPTH, FUSION = 4, 4  # draws per round


def _humaneval_prompt() -> str:
    with gzip.open(BENCH / "evalplus/HumanEvalPlus-v0.1.10.jsonl.gz", "rt") as fh:
        return json.loads(fh.readline())["prompt"]


def _job(tmp: Path, rounds: int, teacher: dict) -> Path:
    leak = tmp / "leaky.jsonl"
    leak.write_text(
        json.dumps({"instruction": "Complete this function so that all its doctests pass.", "input": _humaneval_prompt()}) + "\n"
        + json.dumps({"instruction": "Write a shell one-liner that counts the lines of every .log file in a directory.", "input": ""}) + "\n"
    )
    job = {
        "kind": "tacie",
        "name": "tacie-e2e",
        "seed": 5,
        "seeds": [
            {"path": str(SEEDS / "quickstart.jsonl"), "name": "code"},
            {"path": str(SEEDS / "quickstart_math.jsonl"), "name": "math"},
            {"path": str(leak), "name": "leaky"},
        ],
        "teacher": teacher,
        # the v1 templates, as in jobs/tacie_quickstart.yaml: Gemma 3 270M parses better with them (docs/fidelity.md);
        # tests/methods/tacie/test_tacie_paper_flow.py runs the paper's templates
        "collection": {"k_min": 5, "k_max": 5, "diversify": 1, "template": "tacie_diversify@v1",
                       "sampling": {"temperature": 0.9, "max_tokens": 256}},
        # a 270M base model loops under greedy decoding: sample the decomposition
        "decomposition": {"template": "tacie_decompose@v1", "sampling": {"temperature": 0.7, "max_tokens": 320}},
        # N_U = 4 (the paper's 10 is the default, tested in test_uncertainty/test_scorers): this test is
        # about the rounds; bf16 halves the CPU time where the CPU has bf16 instructions
        "scorer": {"backend": "hf", "num_perturbations": 4, "batch_size": 16, "dtype": "bfloat16", "max_length": 384,
                   "num_cpus": 2},  # the teacher is idle while the scorer runs
        "evolution": {"rounds": rounds, "depth_per_round": DEPTH, "fusion_per_round": FUSION,
                      "depth_template": "tacie_depth_constraint@v1", "depth_background_template": "tacie_depth_background@v1",
                      "fusion_template": "tacie_fusion@v1", "sampling": {"temperature": 0.7, "max_tokens": 384}},
        "response": {"sampling": {"temperature": 0.2, "max_tokens": 96}},
        "filters": {
            "decontaminate": [
                {"name": "humaneval", "path": str(BENCH / "evalplus/HumanEvalPlus-v0.1.10.jsonl.gz")},
                {"name": "mbpp", "path": str(BENCH / "evalplus/MbppPlus-v0.2.0.jsonl.gz")},
                {"name": "gsm8k", "path": str(SHARED / "data/seeds/gsm8k/test.jsonl")},
            ],
        },
        "output_dir": str(tmp / "run"),
    }
    path = tmp / "tacie.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, served_gemma, shared_ray):
    require_shared()
    tmp = tmp_path_factory.mktemp("tacie")
    out = {}
    for label, rounds in (("first", 1), ("resumed", 2), ("again", 2)):
        # the session's Ray head: this test is about the rounds and their checkpoints, not Ray's start
        proc = fusion_cli("run", str(_job(tmp, rounds, served_gemma)), timeout=1500, ray_address=shared_ray)
        assert proc.returncode == 0, f"{label}: {proc.stderr[-3000:]}"
        run = tmp / "run"
        out[label] = {
            "proc": proc,
            "manifest": json.loads((run / "manifest.json").read_text()),
            "items": pq.read_table(run / "tacie-e2e.parquet").to_pylist(),
        }
    out["dir"] = tmp / "run"
    return out


def test_pool_grows_over_rounds_with_metrics_per_round(runs):
    m = runs["resumed"]["manifest"]
    metrics = json.loads((runs["dir"] / "metrics.json").read_text())
    assert m["rounds_completed"] == 2 and m["complete"]
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    sizes = [r["pool_size"] for r in rounds]
    assert sizes[0] > 0 and sizes[0] <= sizes[1] <= sizes[2] and sizes[2] > sizes[0], sizes
    for r in rounds:
        assert r["diversity_u"] is not None and r["diversity_u"] >= 0
        assert set(r["domains"]) <= {"code", "math", "general"}
        for op, counts in r["attempts"].items():
            assert sum(counts.values()) > 0
            assert r["success_rate"][op] == pytest.approx(counts["ok"] / sum(counts.values()))
    evolution_ops = {"depth_constraint", "depth_background", "fusion_in_domain", "fusion_cross_domain"}
    for r in rounds[1:]:
        # every draw of the round was attempted (fewer fusions only when no unused pair was left)
        attempted = sum(sum(c.values()) for op, c in r["attempts"].items() if op in evolution_ops)
        assert r["draws"]["depth"] == DEPTH and r["draws"]["fusion"] + r["draws"]["fusion_short"] == FUSION
        assert attempted == DEPTH + r["draws"]["fusion"]
        assert r["pool_size"] - rounds[r["round"] - 1]["pool_size"] == sum(r["added"].values())
    assert {"seeds", "evolved", "all"} <= set(metrics["diversity"])
    # C(0) holds both seed sources' chosen seeds (one per cluster) and their diversifications
    assert m["collection"]["code"]["chosen"] >= 2 and m["collection"]["math"]["chosen"] >= 2


def test_lineage_and_fusion_counts(runs):
    items = runs["resumed"]["items"]
    by_id = {it["id"]: it for it in items}
    assert len(by_id) == len(items)
    evolved = [it for it in items if it["round"] >= 1]
    assert evolved, "no instruction evolved in two rounds"
    for it in evolved:
        parents = [by_id[p] for p in it["parent_ids"]]
        assert all(p["round"] < it["round"] for p in parents)
        assert it["root_domain"] == parents[0]["root_domain"] and it["source"] == parents[0]["source"]
        if it["operation"].startswith("depth"):
            assert len(parents) == 1
            assert (it["operation"] == "depth_background") == (parents[0]["domain"] == "math")
        else:
            assert len(parents) == 2
            same = parents[0]["root_domain"] == parents[1]["root_domain"]
            assert same == (it["operation"] == "fusion_in_domain")
        assert it["objectives"], "an evolved item carries its parsed objectives"
    # Algorithm 1 as the pipeline ran it, whether or not the teacher's answer parsed:
    # in-domain pairs share a root domain, cross-domain pairs do not, no pair twice in a round
    attempts = pq.read_table(runs["dir"] / "attempts.parquet").to_pylist()
    fusions = [a for a in attempts if a["operation"].startswith("fusion")]
    assert {a["operation"] for a in fusions} <= {"fusion_in_domain", "fusion_cross_domain"}
    for t in {a["round"] for a in fusions}:
        # which kinds a round can draw depends on which items the 270M teacher managed to decompose:
        # with one root domain in the round's pool, the cross-domain half is filled in-domain
        domains = {it["root_domain"] for it in items if it["round"] < t and it["evolvable"]}
        if len(domains) == 1:
            assert {a["operation"] for a in fusions if a["round"] == t} == {"fusion_in_domain"}
    for a in fusions:
        first, second = (by_id[p] for p in a["parent_ids"])
        assert (first["root_domain"] == second["root_domain"]) == (a["operation"] == "fusion_in_domain")
    for t in {a["round"] for a in fusions}:
        pairs = [frozenset(a["parent_ids"]) for a in fusions if a["round"] == t]
        assert len(pairs) == len(set(pairs)) and all(len(p) == 2 for p in pairs)
    for a in attempts:
        if a["round"] >= 1 and a["operation"] != "response":
            # only evolvable items are drawn: decomposed, answered, scored, under the token limit
            assert all(by_id[p]["round"] < a["round"] and by_id[p]["evolvable"] for p in a["parent_ids"])
    # eq. 7's n_c: every fusion an item seeded, whether or not the child parsed
    for it in items:
        assert it["n_fusions"] == sum(it["id"] in a["parent_ids"] for a in fusions)
    for it in items:
        if it["response"] and it["status"] != "unscored":
            assert 0 < it["q"] <= 1 and it["uncertainty"] >= 0 and math.isfinite(it["uncertainty"])
            assert it["instruction_tokens"] > 0 and len(it["embedding"]) == 384
        assert it["evolvable"] == (it["status"] == "ok")


def test_filters_and_sft_files(runs):
    items = runs["resumed"]["items"]
    m = runs["resumed"]["manifest"]
    leaked = [it for it in items if it["source"] == "leaky" and "doctests" in it["instruction"] and it["round"] == 0]
    assert leaked and all(it["removed_reason"] == "contaminated:humaneval" for it in leaked if it["response"])
    assert m["filters"]["contaminated"]["humaneval"] >= 1
    kept = [it for it in items if it["kept"]]
    assert m["counts"]["kept"] == len(kept) == m["filters"]["kept"]
    sft = read_jsonl(runs["dir"] / "sft_messages.jsonl")
    assert [r["id"] for r in sft] == [it["id"] for it in kept]
    assert all(r["messages"][1]["content"] for r in sft)
    assert len(read_jsonl(runs["dir"] / "sft_alpaca.jsonl")) == len(kept)
    for it in items:
        if not it["kept"]:
            assert it["removed_reason"]


def test_resume_starts_at_the_checkpointed_round(runs):
    first, resumed, again = runs["first"], runs["resumed"], runs["again"]
    assert "resuming after round 1" in resumed["proc"].stderr
    # rounds 0 and 1 came from the checkpoint: not a single call, not even a cache lookup
    assert resumed["manifest"]["this_run"]["cache_hits"] == 0
    assert resumed["manifest"]["this_run"]["calls"] > 0
    first_ids = {it["id"] for it in first["items"] if it["round"] <= 1}
    assert first_ids == {it["id"] for it in resumed["items"] if it["round"] <= 1}
    # the finished job again: nothing to call, the same rows
    assert again["manifest"]["this_run"]["calls"] == 0
    assert [it["id"] for it in again["items"]] == [it["id"] for it in resumed["items"]]


def test_report_is_written(runs):
    proc = fusion_cli("report", str(runs["dir"]), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = runs["dir"] / "report"
    html = (report / "index.html").read_text()
    for png in ("projection.png", "uncertainty.png", "domains.png", "rounds.png", "success.png"):
        assert (report / png).stat().st_size > 1000
        assert png in html
    assert "tacie-e2e" in html
