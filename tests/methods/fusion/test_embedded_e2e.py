"""`fusion run` end to end with the embedded teacher: Gemma 3 270M from the
bundled GGUF behind a real `vllm serve` on loopback, 16 Code Alpaca seeds from
../shared. Slow (a vLLM start each); marked `vllm`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_pipeline.core.config import SeedSource
from ray_pipeline.prompts import load_template
from ray_pipeline.core.seeds import load_seeds
from tests.conftest import CODE_ALPACA, REPO, fusion_cli, read_jsonl, write_job

pytestmark = pytest.mark.vllm


def vllm_pids() -> set[int]:
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "vllm" in cmd.lower() and "pytest" not in cmd:
                pids.add(int(p.name))
    return pids


def wait_gone(pids: set[int], timeout: float = 30) -> set[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = pids & vllm_pids()
        if not left:
            return set()
        time.sleep(0.5)
    return pids & vllm_pids()


def run_job(job: Path, ray_address: str | None = None) -> tuple[Path, dict, list[dict]]:
    """`fusion run` a job (on a local Ray of its own, or joining ``ray_address``); check that it succeeded and
    that no vLLM process it started outlived it."""
    before = vllm_pids()
    proc = fusion_cli("run", str(job), timeout=900, ray_address=ray_address)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not wait_gone(vllm_pids() - before), "vLLM processes outlived the job"
    run = job.parent / "run"
    return run, json.loads((run / "manifest.json").read_text()), pq.read_table(run / "test.parquet").to_pylist()


def interrupt_when_answering(job: Path) -> tuple[int, str, set[int]]:
    """Start `fusion run`, send Ctrl-C once the server has answered a call; (exit code, stderr, vLLM pids seen)."""
    before = vllm_pids()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "ray_pipeline.cli", "run", str(job)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cache = job.parent / "run" / "cache"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if any(f.stat().st_size for f in cache.glob("calls-*.jsonl")):  # the server is answering
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    started = vllm_pids() - before
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, started


def test_fusion_with_embedded_teacher_interrupted_resumed_and_rerun(tmp_path, code_alpaca, shared_ray):
    """Ctrl-C while the server answers, run again to the end, then once more from the cache alone."""
    job = write_job(
        tmp_path,
        teacher="embedded",
        seeds=[{"path": str(code_alpaca), "limit": 16}],
        # the v1 templates, as in jobs/quickstart.yaml: Gemma 3 270M parses better with them (docs/fidelity.md)
        fusion={"num_instructions": 6, "max_attempts": 30, "template": "if_fusion@v1",
                "sampling": {"temperature": 0.7, "max_tokens": 96}},
        response={"template": "if_response@v1", "sampling": {"temperature": 0.2, "max_tokens": 128}},
    )
    # Ctrl-C: exit 130, the server and its workers gone, no output written, finished calls kept
    code, err, started = interrupt_when_answering(job)
    assert code == 130, err[-3000:]
    assert "resume" in err
    assert started, "no vLLM process seen while the job was running"
    assert not wait_gone(started), "vLLM processes survived Ctrl-C"
    assert not (tmp_path / "run" / "test.parquet").exists()
    cached_before = sum(len(read_jsonl(f)) for f in (tmp_path / "run" / "cache").glob("calls-*.jsonl"))
    assert cached_before > 0, "finished calls were lost"
    # run again: resumes from the calls the interrupted run finished. The interrupted run started a local Ray of
    # its own; this one and the next only need to finish, and join the session's Ray head (the embedded server is
    # the CLI's child, not a Ray actor, so its start and stop are the same either way)
    run, manifest, rows = run_job(job, shared_ray)
    assert manifest["this_run"]["cache_hits"] >= cached_before
    seeds = {s["id"]: s for s in load_seeds([SeedSource(path=str(CODE_ALPACA), limit=16)]).records}
    assert len(seeds) == 16
    assert manifest["teacher"] == {"kind": "embedded", "model": "gemma3-270m", "started": True}
    assert manifest["counts"]["fused"] == 6 and manifest["complete"]
    assert len(rows) == manifest["counts"]["attempts"] <= 30
    assert {r["outcome"] for r in rows} <= {"ok", "invalid", "parse_error", "api_error", "surplus"}
    assert manifest["counts"]["fusion"]["api_error"] == 0
    fusion_sha = load_template("if_fusion@v1").sha256
    for r in rows:
        assert set(r["parent_ids"]) <= set(seeds) and len(set(r["parent_ids"])) == 2
        assert r["parent_languages"] == [seeds[i]["language"] for i in r["parent_ids"]]
        assert r["teacher_model"] == "gemma3-270m" and r["fusion_template_sha256"] == fusion_sha
        assert r["fusion_prompt_tokens"] > 50 and r["fusion_completion_tokens"] > 0
        assert r["fusion_raw"]
        assert json.loads(r["fusion_sampling"])["max_tokens"] == 96
    assert any(r["fusion_cached"] for r in rows)  # the calls the interrupted run finished
    selected = [r for r in rows if r["selected"]]
    assert len(selected) == 6
    for r in selected:
        assert r["instruction"] and r["response_outcome"] in ("ok", "parse_error")
        assert r["response_completion_tokens"] > 0
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert len(read_jsonl(run / "sft_messages.jsonl")) == len(ok) == manifest["counts"]["sft_rows"] > 0
    assert (run / "logs" / "embedded-vllm.log").stat().st_size > 0
    # The same job again: everything from the cache, no new call, no server started, same rows.
    _, manifest2, rows2 = run_job(job, shared_ray)
    assert manifest2["teacher"]["started"] is False
    assert manifest2["this_run"]["calls"] == 0
    assert manifest2["this_run"]["cache_hits"] == manifest["this_run"]["calls"] + manifest["this_run"]["cache_hits"]
    stable = ("instruction", "response", "outcome", "parent_ids", "fusion_raw")
    assert [{k: r[k] for k in stable} for r in rows2] == [{k: r[k] for k in stable} for r in rows]


def test_fusion_with_in_process_vllm_teacher(tmp_path, code_alpaca):
    """`teacher: {kind: vllm}`: one vllm.LLM inside the Ray Data actor that runs the teacher stage."""
    from ray_pipeline.core.model_files import chat_template_path, ensure_embedded_model

    job = write_job(
        tmp_path,
        teacher={"kind": "vllm", "model": str(ensure_embedded_model()), "served_model_name": "gemma3-270m-local",
                 "chat_template": str(chat_template_path()), "max_model_len": 2048, "num_cpus": 1,
                 "dtype": "bfloat16",
                 # eager mode: no graph compilation when the job starts its engine
                 "engine_kwargs": {"enforce_eager": True, "kv_cache_memory_bytes": 512 * 1024**2}},
        seeds=[{"path": str(code_alpaca), "limit": 16}],
        fusion={"num_instructions": 4, "max_attempts": 16, "sampling": {"temperature": 0.7, "max_tokens": 64}},
        response={"sampling": {"temperature": 0.0, "max_tokens": 64}},
    )
    _, manifest, rows = run_job(job)
    assert manifest["teacher"] == {"kind": "vllm", "model": "gemma3-270m-local", "started": True}
    assert manifest["counts"]["fused"] == 4 and manifest["complete"]
    assert manifest["counts"]["fusion"]["api_error"] == 0
    for r in rows:
        assert r["teacher_model"] == "gemma3-270m-local" and r["fusion_node"]
        assert r["fusion_prompt_tokens"] > 50 and 0 < r["fusion_completion_tokens"] <= 64
    assert sum(r["selected"] for r in rows) == 4
    assert all(r["response_completion_tokens"] > 0 for r in rows if r["selected"])
