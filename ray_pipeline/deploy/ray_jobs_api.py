"""``fusion submit --address``: run a job file through a Ray cluster's Jobs API, this project as its ``working_dir``.

The entrypoint is ``python -m ray_pipeline.cli run <job file> [--output-dir DIR]``; a job file outside the project
travels in ``$FUSION_SUBMITTED_JOB``. The job's log is followed to its end (see ``submit`` for the whole command).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from ray_pipeline.core.errors import FusionError, first_line
from ray_pipeline.deploy.remote_job import JOB_SUCCEEDED, relative_paths
from ray_pipeline.jobs import load_job

#: the environment variable that carries a job file from outside the project to the cluster
JOB_ENV = "FUSION_SUBMITTED_JOB"
#: never uploaded: virtual environments, run outputs, caches, VCS data, benchmark results, build output
EXCLUDES = [".venv*", ".git", "runs", "caches", ".cache", "benchmarks/results", "**/__pycache__", "*.pyc",
            "*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist", ".setup-stamp*"]
LAST_LINES = 10
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NO_AGENT = "No available agent"
_K8S_ONLY = ("namespace", "image", "name", "cpu_workers", "gpu_workers", "values")


def project_root() -> Path:
    """The source checkout this package runs from: what ``--address`` uploads."""
    import ray_pipeline

    root = Path(ray_pipeline.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FusionError(
            f"fusion submit --address uploads the project source, but {root} is not a source checkout "
            "(no pyproject.toml): run it from a checkout (pip install -e .)"
        )
    return root


def forwarded_env(names: Iterable[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in names:
        if not _ENV_NAME.match(name):
            raise FusionError(f"--env {name!r}: not an environment variable name")
        if name not in os.environ:
            raise FusionError(f"--env {name}: not set in this environment (nothing to forward)")
        env[name] = os.environ[name]
    return env


def normalise_address(address: str) -> str:
    address = address.strip().rstrip("/")
    if address.startswith("ray://") or address == "auto":
        raise FusionError(f"--address {address}: give the Ray dashboard (Jobs API) address, e.g. http://HEAD:8265")
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise FusionError(f"--address {address}: give an http(s):// dashboard address, e.g. http://HEAD:8265")
    return address


def build_submission(args: argparse.Namespace) -> dict[str, Any]:
    """What ``--address`` sends: the entrypoint and the runtime_env (an outside job file in its env_vars)."""
    misplaced = [f"--{o.replace('_', '-')}" for o in _K8S_ONLY if getattr(args, o, None) is not None]
    if misplaced:
        raise FusionError(f"{', '.join(misplaced)}: only with --k8s")
    job_path = Path(args.job)
    job = load_job(job_path)          # a bad job fails here, before anything is sent
    env = forwarded_env(args.env or [])
    root = project_root()
    resolved = job_path.resolve()
    if resolved.is_relative_to(root):
        rel = resolved.relative_to(root).as_posix()
    else:
        raw = yaml.safe_load(resolved.read_text(encoding="utf-8"))
        local = relative_paths(raw, resolved.parent)
        if local:
            raise FusionError(
                f"{job_path} is outside the project ({root}) and names {', '.join(repr(p) for p in local[:3])} "
                "relative to itself, which would not be uploaded: move the job file into the project, or use "
                "absolute paths, URLs or hub datasets"
            )
        env = {**env, JOB_ENV: resolved.read_text(encoding="utf-8")}
        rel = None
    if rel is None:   # written where the job runs, in a directory of its own
        entrypoint = (f'job="$(mktemp -d)/job.yaml" && printf "%s" "${JOB_ENV}" > "$job" && '
                      f'python -m ray_pipeline.cli run "$job"')
    else:
        entrypoint = f"python -m ray_pipeline.cli run {shlex.quote(rel)}"
    if args.output_dir:
        entrypoint += f" --output-dir {shlex.quote(args.output_dir)}"
    run_dir = args.output_dir or str(job.run_dir())
    runtime_env: dict[str, Any] = {"working_dir": str(root), "excludes": list(EXCLUDES)}
    if env:
        runtime_env["env_vars"] = env
    return {"job": job, "entrypoint": entrypoint, "runtime_env": runtime_env, "run_dir": run_dir}


def submit_address(args: argparse.Namespace) -> int:
    address = normalise_address(args.address)
    sub = build_submission(args)
    job = sub["job"]
    if not Path(sub["run_dir"]).is_absolute():
        print(f"note: the run directory {sub['run_dir']} is relative: on the cluster it lands in the job's working "
              "directory (a temporary copy of the project); give --output-dir a path on shared storage",
              file=sys.stderr)
    if args.dry_run:
        shown = dict(sub["runtime_env"])
        if "env_vars" in shown:
            shown["env_vars"] = {k: "<the job file>" if k == JOB_ENV else "<from the environment>"
                                 for k in shown["env_vars"]}
        print(json.dumps({"address": address, "entrypoint": sub["entrypoint"], "runtime_env": shown}, indent=2))
        return 0
    probe_dashboard(address)
    logging.getLogger("ray").setLevel(logging.WARNING)   # packaging chatter; the job's own log follows
    client = _client(address)
    submission_id = _submit(client, sub["entrypoint"], sub["runtime_env"], {"fusion_job": job.name})
    print(f"submitted {job.name} as Ray job {submission_id} to {address}", flush=True)
    if args.no_follow:
        print(f"follow it: ray job logs --address {address} --follow {submission_id}")
        return 0
    return follow_ray_job(client, submission_id, address)


def probe_dashboard(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when nothing answers at the address (any HTTP answer will do)."""
    import requests

    try:
        requests.get(f"{address}/api/version", timeout=timeout_s)
    except requests.exceptions.RequestException as err:
        reason = type(err).__name__
        if isinstance(err, requests.exceptions.ConnectionError) and "refused" in str(err).lower():
            reason = "connection refused"
        elif isinstance(err, requests.exceptions.Timeout):
            reason = f"no answer in {timeout_s:g}s"
        raise FusionError(f"cannot reach the Ray dashboard at {address} ({reason}); is the cluster up and the "
                          "address its dashboard (port 8265)?") from None


def _client(address: str) -> Any:
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise FusionError(f"the Ray cluster at {address} requires a token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                          "(or ~/.ray/auth_token)") from None
    except (ConnectionError, RuntimeError) as err:
        raise FusionError(f"Ray Jobs API at {address}: {first_line(err)}") from None


def _submit(client: Any, entrypoint: str, runtime_env: dict[str, Any], metadata: dict[str, str],
            agent_wait_s: float = 60.0) -> str:
    """submit_job, waiting for the head's job agent of a cluster that is still starting."""
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata)
        except RuntimeError as err:
            if _NO_AGENT in str(err) and time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            raise FusionError(f"the Ray Jobs API refused the job: {first_line(err)}") from None


def follow_ray_job(client: Any, submission_id: str, address: str, out: Any = None) -> int:
    """Stream the job's log until it ends; print its status and last lines; 0 when it SUCCEEDED."""
    out = out or sys.stdout
    tail: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
    try:
        _stream_logs(client, submission_id, out, tail)
        status = _wait_terminal(client, submission_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; Ray job {submission_id} keeps running "
              f"(ray job stop --address {address} {submission_id})", file=sys.stderr)
        return 130
    info = client.get_job_info(submission_id)
    if not tail:  # the stream gave nothing (an old dashboard): take the log as it stands
        tail.extend(client.get_job_logs(submission_id).splitlines()[-LAST_LINES:])
    message = getattr(info, "message", None) or ""
    message = f" ({message.strip().splitlines()[0]})" if status != JOB_SUCCEEDED and message.strip() else ""
    print(f"Ray job {submission_id}: {status}{message}", file=out)
    print("last lines:", file=out)
    for line in tail:
        print(f"  {line}", file=out)
    out.flush()
    return 0 if status == JOB_SUCCEEDED else 1


def _stream_logs(client: Any, submission_id: str, out: Any, tail: collections.deque[str]) -> None:
    import asyncio

    async def stream() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            out.write(chunk)
            out.flush()
            tail.extend(line for line in chunk.splitlines() if line.strip())

    try:
        asyncio.run(stream())
    except KeyboardInterrupt:
        raise
    except Exception:  # the log stream is best effort: fall back to polling the whole log
        seen = 0
        while True:
            text = client.get_job_logs(submission_id)
            if len(text) > seen:
                out.write(text[seen:])
                out.flush()
                tail.extend(line for line in text[seen:].splitlines() if line.strip())
                seen = len(text)
            if client.get_job_status(submission_id).is_terminal():
                return
            time.sleep(1.0)


def _wait_terminal(client: Any, submission_id: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(submission_id)
        if status.is_terminal() or time.monotonic() > deadline:
            return str(status.value if hasattr(status, "value") else status)
        time.sleep(0.5)
