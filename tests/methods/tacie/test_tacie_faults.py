"""TaCIE against a teacher that answers garbage or is down (the fault-injecting server).

A teacher whose every answer is empty leaves nothing to evolve: the run says so
(incomplete, with the failure counts per operation) instead of looping or
crashing. A teacher that fails every call stops the run with one line after
DEAD_TEACHER_STREAK calls, and keeps the checkpoint-free directory resumable.
"""

from __future__ import annotations

import json

import pytest
import yaml

from ray_pipeline.jobs import load_job
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.methods.tacie.pipeline import run_tacie
from ray_pipeline.teachers.calls import DEAD_TEACHER_STREAK
from tests.conftest import CODE_ALPACA, GSM8K_TRAIN, fusion_cli, openai_teacher
from tests.fault_server import FaultInjectingOpenAIServer, always


def _job(tmp_path, base_url: str, **teacher) -> dict:
    return {
        "kind": "tacie",
        "name": "tacie-faults",
        "seed": 3,
        "seeds": [{"path": str(CODE_ALPACA), "limit": 12}, {"path": str(GSM8K_TRAIN), "limit": 12}],
        "teacher": openai_teacher(base_url, **teacher),
        "collection": {"k_max": 4, "diversify": 2},
        "evolution": {"rounds": 2},
        "filters": {"decontaminate": []},
        "output_dir": str(tmp_path / "run"),
    }


@pytest.mark.ray
def test_a_teacher_answering_garbage_leaves_an_incomplete_run_with_counts(tmp_path, code_alpaca, shared_ray):
    with FaultInjectingOpenAIServer(faults=always("empty")) as srv:
        path = tmp_path / "job.yaml"
        job = _job(tmp_path, srv.base_url)
        job["seeds"][1]["clusters"] = 3  # GSM8K: three clusters as given (TaCIE's per-source counts), no elbow
        path.write_text(yaml.safe_dump(job))
        proc = fusion_cli("run", str(path), timeout=600, ray_address=shared_ray)  # the session's Ray head
        calls = srv.total_calls
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "incomplete" in proc.stderr and "decompose" in proc.stderr and "parse_error" in proc.stderr
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["rounds_completed"] == 0 and not manifest["complete"]
    attempts = manifest["counts"]["attempts"]
    chosen = sum(v["chosen"] for v in manifest["collection"].values())
    collection = manifest["collection"]
    assert (collection["train"]["k"], collection["train"]["k_from"], collection["train"]["chosen"]) == (3, "given", 3)
    assert collection["code_alpaca_2k"]["k_from"] == "elbow" and 2 <= collection["code_alpaca_2k"]["k"] <= 4
    # every chosen seed: one decomposition and one response; diversification (Appendix B.2) shows the
    # seed's elements, so a seed that could not be decomposed is not diversified
    assert "diversify" not in attempts
    assert manifest["diversification"]["skipped_undecomposed"] == chosen
    assert attempts["decompose"] == {"parse_error": chosen}
    assert attempts["response"] == {"parse_error": chosen}
    assert calls == 2 * chosen
    estimate = manifest["estimate"]  # made before the run; beside it, what the run spent
    assert estimate["actual"]["calls_by_phase"] == {"decompose": chosen, "diversify": 0, "depth": 0, "fusion": 0,
                                                    "response": chosen}
    assert estimate["actual"]["calls"] == calls and estimate["phases"]["decompose"]["calls_at_most"] >= chosen
    assert manifest["counts"]["kept"] == 0
    assert (tmp_path / "run/sft_messages.jsonl").read_text() == ""


def test_a_dead_teacher_stops_the_run_with_one_line(tmp_path, local_ray, code_alpaca):
    with FaultInjectingOpenAIServer(faults=always("500")) as srv:
        path = tmp_path / "job.yaml"
        job = _job(tmp_path, srv.base_url, max_retries=1, backoff_max_s=0.01)
        # every seed is decomposed first (24 calls): the streak trips before round 0 ends
        job["collection"]["cluster"] = False
        path.write_text(yaml.safe_dump(job))
        with pytest.raises(TeacherError, match=r"failed \d+ calls in a row \(last: api_error: HTTP 500"):
            run_tacie(load_job(path))
        assert srv.total_calls <= 2 * (DEAD_TEACHER_STREAK + 24)
    assert not (tmp_path / "run/manifest.json").exists()
