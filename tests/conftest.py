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

from tests.ray_head import ray_head, token_auth
from tests.paths import REPO
SHARED = REPO.parent / "shared"
CODE_ALPACA = SHARED / "data/seeds/codealpaca/code_alpaca_2k.json"
GSM8K_TRAIN = SHARED / "data/seeds/gsm8k/train.jsonl"


#: tests that need bubblewrap (make setup installs it where it can); they are marked ``sandbox`` too
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


@pytest.fixture(scope="session")
def served_gemma(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The teacher config of one embedded vLLM server (the bundled Gemma 3 270M) shared by the whole run.

    For tests that need a real model behind an OpenAI-compatible endpoint but do not test the embedded
    teacher's own start and stop (tests/methods/fusion/test_embedded_e2e.py and
    tests/teachers/test_embedded_teacher.py start servers of their own): each job pointing at it is a job
    with ``kind: openai`` on a vLLM server, which is how a user points a job at a big model. It spares
    every such ``fusion run`` the ~40 s server start. Use it from tests marked ``vllm``.
    """
    from ray_pipeline.core.config import EmbeddedTeacherConfig
    from ray_pipeline.teachers.embedded import EmbeddedServer, embedded_stage_config

    config = EmbeddedTeacherConfig()
    log = tmp_path_factory.mktemp("served-gemma") / "embedded-vllm.log"
    with EmbeddedServer(config, log_path=log) as server:
        stage = embedded_stage_config(config, server)
        yield {"kind": "openai", "model": stage.model, "base_url": stage.base_url, "api_key": "EMPTY",
               "concurrency": stage.concurrency, "timeout_s": stage.timeout_s, "max_retries": stage.max_retries}


#: the shared head's token (Ray turns token authentication on for `ray start`): given to the CLI with its address
_SHARED_RAY_AUTH = token_auth()


@pytest.fixture(scope="session")
def shared_ray() -> Any:
    """The address of one Ray head (`ray start --head`, 2 CPUs, no dashboard) shared by the run's `fusion run`
    subprocesses that only need a finished run: ``fusion_cli(..., ray_address=shared_ray)`` joins it instead of
    starting (and stopping) a local Ray of its own, ~9 s each on a 2-core machine.

    Only for runs that end normally (a run killed with SIGKILL could leave actors holding the CPUs of every later
    test) and that set no environment variable for code running in Ray workers (the head's workers inherit the
    head's environment, not the CLI's), and whose job does not behave differently with an address: an evaluation
    with programs to score skips its local toolchain preflight when given one (tests/evaluation/test_eval_e2e.py
    keeps a local Ray for that reason). Tests of Ray's own start and stop (tests/core/test_cluster.py, the SIGKILL
    and Ctrl-C tests, the first run of tests/training/test_sft_ray.py) keep a local Ray started from nothing.
    Teardown kills exactly the head's process group (never `ray stop`, which would stop every Ray on the machine).
    """
    with ray_head(_SHARED_RAY_AUTH, dashboard=False, env={"PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"},
                  cwd=REPO) as ports:
        yield f"127.0.0.1:{ports['port']}"


def fusion_cli(*args: str, timeout: float = 600, ray_address: str | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """`python -m ray_pipeline.cli ARGS`; a `run` starts a local Ray of its own, or joins ``ray_address``
    (the ``shared_ray`` fixture)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", **kwargs.pop("extra_env", {})}
    env.pop("RAY_ADDRESS", None)
    if ray_address:
        env.update(RAY_ADDRESS=ray_address, **_SHARED_RAY_AUTH)
    return subprocess.run(
        [sys.executable, "-m", "ray_pipeline.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=kwargs.pop("cwd", REPO), **kwargs,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module's tests (the pipelines attach to it): started once and kept for the rest of
    the run, started again for a module after one that shut it down (a two-node cluster, say)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield


# --- markers (declared in pyproject.toml): what a test starts ---------------------------------
# `make test-fast` deselects every test marked ray, vllm, checkov, sandbox or slow. The guard below fails an
# unmarked test that starts one of the first four in this process, so the marks cannot drift; a test that
# starts them in a subprocess (`fusion run` to the end) carries its mark by hand.


#: fixtures that start something: a test using one carries its mark
FIXTURE_MARKS = {
    "local_ray": pytest.mark.ray,
    "ray_head": pytest.mark.ray,
    "shared_ray": pytest.mark.ray,  # a `ray start` head shared by `fusion run` subprocesses  # tests/deploy/test_submit.py: a `ray start` head for the Jobs API
    "torchrun_results": pytest.mark.slow,  # tests/training/test_deepspeed_config.py: two torchrun ranks
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in FIXTURE_MARKS:
                item.add_marker(FIXTURE_MARKS[fixture])


def _refuse(marker: str, what: str):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"this test {what} but is not marked @pytest.mark.{marker} (tests/conftest.py)")
    return refuse


@pytest.fixture(autouse=True)
def _declared_resources(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """An unmarked test that starts Ray, vLLM, checkov or the sandbox fails with one line saying so."""
    import ray

    marked = {m.name for m in request.node.iter_markers()}
    ray_was_up = ray.is_initialized()
    if "ray" not in marked:
        if not ray_was_up:  # (patch attributes looked up at each call, never a function imported by name)
            monkeypatch.setattr(ray, "init", _refuse("ray", "starts Ray"))
    if "vllm" not in marked:
        monkeypatch.setattr("ray_pipeline.teachers.embedded.EmbeddedServer.start", _refuse("vllm", "starts vLLM"))
        monkeypatch.setattr("ray_pipeline.teachers.vllm_offline.VLLMOfflineTeacher.__init__", _refuse("vllm", "loads vLLM"))
    if "checkov" not in marked:
        monkeypatch.setattr("tests.k8s_helpers.checkov_bin", _refuse("checkov", "runs checkov"))
    if "sandbox" not in marked:
        monkeypatch.setattr("ray_pipeline.evaluation.sandbox.Sandbox.run", _refuse("sandbox", "runs the sandbox"))
        monkeypatch.setattr("ray_pipeline.evaluation.sandbox.Sandbox.check", _refuse("sandbox", "checks the sandbox"))
    yield
    if "ray" not in marked and not ray_was_up and ray.is_initialized():  # e.g. Ray Data starting it on its own
        ray.shutdown()
        raise AssertionError("this test started Ray but is not marked @pytest.mark.ray (tests/conftest.py)")
