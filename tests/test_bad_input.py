"""Bad input: a one-line error naming the cause, a non-zero exit, nothing half-written."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest

from tests.conftest import fusion_cli, openai_teacher, write_job
from tests.fault_server import FaultInjectingOpenAIServer


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


UNREACHABLE = f"http://127.0.0.1:{_closed_port()}/v1"


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fusion: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case",
    ["missing_file", "empty_pool", "one_seed", "invalid_yaml", "unknown_teacher", "unreachable", "malformed_pool",
     "bad_field"],
)
def test_bad_input(tmp_path, case):
    teacher = openai_teacher(UNREACHABLE)
    if case == "missing_file":
        job, needles = write_job(tmp_path, seeds=[{"path": str(tmp_path / "nope.jsonl")}], teacher=teacher), ["nope.jsonl", "not found"]
    elif case == "empty_pool":
        seeds = _write(tmp_path / "empty.jsonl", "")
        job, needles = write_job(tmp_path, seeds=[{"path": str(seeds)}], teacher=teacher), ["empty.jsonl"]
    elif case == "one_seed":
        seeds = _write(tmp_path / "one.jsonl", json.dumps({"instruction": "Reverse a string in Python."}) + "\n")
        job, needles = write_job(tmp_path, seeds=[{"path": str(seeds)}], teacher=teacher), ["at least 2", "has 1"]
    elif case == "malformed_pool":
        seeds = _write(tmp_path / "junk.jsonl", "not json\n{]\n" * 5 + json.dumps({"instruction": "Sort a list."}) + "\n")
        job, needles = write_job(tmp_path, seeds=[{"path": str(seeds)}], teacher=teacher), ["junk.jsonl", "malformed"]
    elif case == "invalid_yaml":
        job, needles = _write(tmp_path / "job.yaml", "kind: instruction_fusion\nseeds: [\n"), ["job.yaml", "invalid YAML"]
    elif case == "unknown_teacher":
        job, needles = write_job(tmp_path, teacher={"kind": "gpt-magic"}), ["teacher", "gpt-magic"]
    elif case == "bad_field":
        job, needles = write_job(tmp_path, teacher=teacher, fusion={"num_instructions": 0}), ["fusion.num_instructions"]
    else:
        job, needles = write_job(tmp_path, teacher=teacher, seeds=[{"path": str(_seed_file(tmp_path))}]), [UNREACHABLE, "unreachable"]
    proc = fusion_cli("run", str(job), timeout=120)
    _one_line_error(proc, *needles)
    assert not (tmp_path / "run").exists(), "a failed run left a run directory behind"


def _seed_file(tmp_path: Path) -> Path:
    rows = [{"instruction": f"Write a Python function number {i} that adds {i} to its argument."} for i in range(4)]
    return _write(tmp_path / "seeds.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.ray
def test_failed_rerun_leaves_a_finished_run_untouched(tmp_path, shared_ray):
    # every run joins the session's Ray head: this test is about the run directory, not Ray's start
    seeds = _seed_file(tmp_path)
    with FaultInjectingOpenAIServer() as srv:
        job = write_job(tmp_path, teacher=openai_teacher(srv.base_url), seeds=[{"path": str(seeds)}],
                        fusion={"num_instructions": 2, "max_attempts": 6})
        first = fusion_cli("run", str(job), timeout=300, ray_address=shared_ray)
        assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    before = _digest(run)
    assert "test.parquet" in before and "manifest.json" in before
    # The same job against an endpoint that is gone: every answer is cached, so no teacher is needed.
    job = write_job(tmp_path, teacher=openai_teacher(UNREACHABLE), seeds=[{"path": str(seeds)}],
                    fusion={"num_instructions": 2, "max_attempts": 6})
    again = fusion_cli("run", str(job), timeout=120, ray_address=shared_ray)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["teacher"]["started"] is False and manifest["this_run"]["calls"] == 0
    after = _digest(run)
    assert all(after[f] == before[f] for f in ("sft_messages.jsonl", "sft_alpaca.jsonl"))  # the same rows
    before = after
    # Its cache lost, the same job needs the teacher: it fails on the unreachable endpoint before writing anything.
    shutil.rmtree(run / "cache")
    _one_line_error(fusion_cli("run", str(job), timeout=120, ray_address=shared_ray), "unreachable")
    assert _digest(run) == {k: v for k, v in before.items() if not k.startswith("cache/")}
    before = _digest(run)
    # A different job into the same directory.
    job = write_job(tmp_path, teacher=openai_teacher(UNREACHABLE), seeds=[{"path": str(seeds)}],
                    fusion={"num_instructions": 3, "max_attempts": 6})
    _one_line_error(fusion_cli("run", str(job), timeout=120, ray_address=shared_ray), "different job")
    assert _digest(run) == before
