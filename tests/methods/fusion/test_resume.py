"""Kill a run with SIGKILL, run it again: no teacher call is spent twice, and the
rows equal those of an uninterrupted run.

The teacher is the fault-injecting server with a fixed injected latency (so the
kill lands mid-run) and deterministic answers (so two runs can be compared).
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

from ray_pipeline.teachers.base import ChatRequest, Sampling
from tests.conftest import REPO, fusion_cli, openai_teacher, write_job
from tests.fault_server import FaultInjectingOpenAIServer

STABLE = ["attempt", "outcome", "instruction", "response", "selected", "parent_ids",
          "fusion_outcome", "fusion_raw", "response_outcome", "fusion_cache_key", "response_cache_key"]


class BodyRecorder:
    """A fault plan that injects nothing and remembers the cache key of every request body."""

    def __init__(self) -> None:
        self.keys: list[tuple[float, str]] = []

    def __call__(self, body: dict, attempt: int) -> None:
        sampling = Sampling(temperature=body["temperature"], top_p=body["top_p"], max_tokens=body["max_tokens"],
                            seed=body.get("seed"), stop=tuple(body.get("stop") or ()))
        key = ChatRequest.make(body["messages"], sampling).cache_key(body["model"])
        self.keys.append((time.time(), key))
        return None


def _job(tmp: Path, base_url: str, out: str) -> Path:
    d = tmp / out
    d.mkdir()
    return write_job(
        d,
        teacher=openai_teacher(base_url, concurrency=2),
        fusion={"num_instructions": 10, "max_attempts": 40},
        ray={"batch_size": 2, "num_actors": 1},
    )


def _cached_keys(run: Path) -> set[str]:
    keys = set()
    for f in (run / "cache").glob("calls-*.jsonl"):
        for line in f.read_bytes().splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except ValueError:
                pass
    return keys


def _session_alive(sid: int, ignore: tuple[str, ...] = ()) -> list[int]:
    """PIDs in session ``sid`` whose command line contains none of ``ignore``."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getsid(int(p.name)) == sid:
                    cmd = (p / "cmdline").read_bytes().decode(errors="replace")
                    if not any(word in cmd for word in ignore):
                        pids.append(int(p.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                pass
    return pids


@pytest.mark.ray
def test_sigkill_then_resume(tmp_path, code_alpaca, shared_ray):
    recorder = BodyRecorder()
    with FaultInjectingOpenAIServer(latency_s=0.3, faults=recorder) as srv:
        job = _job(tmp_path, srv.base_url, "killed")
        run = job.parent / "run"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "-m", "ray_pipeline.cli", "run", str(job)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 240
        while len(_cached_keys(run)) < 6 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Ray's reaper takes the raylet and the teacher actors down with the driver; its
        # dashboard and runtime-env agents linger for a while but call no teacher.
        deadline = time.time() + 60
        while _session_alive(proc.pid, ignore=("DashboardAgent", "RuntimeEnvAgent")) and time.time() < deadline:
            time.sleep(0.2)
        assert not _session_alive(proc.pid, ignore=("DashboardAgent", "RuntimeEnvAgent"))
        for pid in _session_alive(proc.pid):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        killed_at = time.time()
        before = _cached_keys(run)
        assert 6 <= len(before) and not (run / "test.parquet").exists()

        # the killed run started a local Ray of its own (its reaper is part of what is tested); the resumed and
        # the reference runs only need to finish: they join the session's Ray head
        resumed = fusion_cli("run", str(job), ray_address=shared_ray)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        after_kill = [k for t, k in recorder.keys if t > killed_at]
        assert not set(after_kill) & before, "a call cached before the kill was made again"
        assert len(after_kill) == len(set(after_kill))
        # At most the calls in flight at the kill (concurrency 2) were ever made twice.
        all_keys = [k for _, k in recorder.keys]
        assert len(all_keys) - len(set(all_keys)) <= 2
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["this_run"]["cache_hits"] >= len(before)

    with FaultInjectingOpenAIServer(latency_s=0.0) as srv2:
        ref_job = _job(tmp_path, srv2.base_url, "uninterrupted")
        ref = fusion_cli("run", str(ref_job), ray_address=shared_ray)
        assert ref.returncode == 0, ref.stderr[-3000:]
    got = pq.read_table(run / "test.parquet", columns=STABLE).to_pylist()
    want = pq.read_table(ref_job.parent / "run" / "test.parquet", columns=STABLE).to_pylist()
    assert got == want
    assert (run / "sft_alpaca.jsonl").read_text() == (ref_job.parent / "run" / "sft_alpaca.jsonl").read_text()
