"""Shared fixtures: paths to ../shared, job files, a local Ray, CLI runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.paths import REPO
SHARED = REPO.parent / "shared"
CODE_ALPACA = SHARED / "data/seeds/codealpaca/code_alpaca_2k.json"
GSM8K_TRAIN = SHARED / "data/seeds/gsm8k/train.jsonl"


#: tests that run programs in the evaluation sandbox (make setup installs bubblewrap where it can)
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


def require_sandbox() -> None:
    """Skip unless an evaluation sandbox starts here (bubblewrap installed, namespaces allowed)."""
    from ray_pipeline.evaluation.sandbox import Sandbox, SandboxError

    try:
        Sandbox().check()
    except SandboxError as exc:
        pytest.skip(f"no sandbox on this machine: {exc}")


def require_shared() -> None:
    if not CODE_ALPACA.is_file():
        pytest.skip(f"../shared is absent ({CODE_ALPACA} not found): data-backed test skipped")


@pytest.fixture(scope="session")
def code_alpaca() -> Path:
    require_shared()
    return CODE_ALPACA


def write_job(directory: Path, **job: Any) -> Path:
    """Write a job file; ``job`` is merged over a small instruction-fusion job."""
    data: dict[str, Any] = {
        "kind": "instruction_fusion",
        "name": "test",
        "seed": 11,
        "seeds": [{"path": str(CODE_ALPACA), "limit": 16}],
        "fusion": {"num_instructions": 4, "max_attempts": 16},
        "output_dir": str(directory / "run"),
    }
    data.update(job)
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def openai_teacher(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "openai",
        "model": "fault-model",
        "base_url": base_url,
        "api_key": "sk-test-not-a-real-key",
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 1.0,
        **extra,
    }


def fusion_cli(*args: str, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", **kwargs.pop("extra_env", {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "ray_pipeline.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=kwargs.pop("cwd", REPO), **kwargs,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for a test module (the pipeline attaches to it)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
