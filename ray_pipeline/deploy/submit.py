"""``fusion submit``: run a job file on a remote Ray cluster (Ray Jobs API) or as a KubeRay RayJob.

``--address http://HEAD:8265`` uploads this project (the source checkout that holds ``ray_pipeline``) as the job's
``working_dir`` and runs ``python -m ray_pipeline.cli run <job file> [--output-dir DIR]`` on the cluster, which needs
the project's dependencies installed (the job image has them). The job file is checked first, so a bad one fails
here, before anything is sent. A job file outside the project travels in the job's environment (``$FUSION_SUBMITTED_JOB``)
and is written to a temporary file on the cluster, never into the project, so concurrent submissions from one checkout
never see each other's files; it must then name no file relative to itself (those would not be uploaded): that is an
error. ``--env NAME``
forwards that variable's value from this environment (nothing else is forwarded). The command follows the job's log
to the end, prints its final status and last lines, and exits 0 when it SUCCEEDED, 1 otherwise.

``--k8s`` renders ``helm/fusion-ray`` for this one job (see ``rayjob``), creates the ConfigMap and the RayJob with the
Kubernetes API, makes the RayJob the ConfigMap's owner (deleting the RayJob deletes both) and follows the RayJob's
status until KubeRay reports it finished. ``--dry-run`` prints what would be sent and needs no cluster.
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
from typing import Any, Callable, Iterable, Mapping

import yaml

from ray_pipeline.jobs import load_job
from ray_pipeline.core.errors import FusionError

#: the environment variable that carries a job file from outside the project to the cluster
JOB_ENV = "FUSION_SUBMITTED_JOB"
#: never uploaded: virtual environments, run outputs, caches, VCS data, benchmark results, build output
EXCLUDES = [".venv*", ".git", "runs", "caches", ".cache", "benchmarks/results", "**/__pycache__", "*.pyc",
            "*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist", ".setup-stamp*"]
LAST_LINES = 10
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NO_AGENT = "No available agent"
_K8S_ONLY = ("namespace", "image", "name", "cpu_workers", "gpu_workers", "values")

# KubeRay RayJob status (ray.io/v1): .status.jobDeploymentStatus is KubeRay's view of the cluster and submission,
# .status.jobStatus is Ray's view of the job.
DEPLOYMENT_TERMINAL = {"Complete", "Failed", "ValidationFailed"}
JOB_SUCCEEDED = "SUCCEEDED"
POLL_S = 3.0


def cmd_submit(args: argparse.Namespace) -> int:
    if args.k8s:
        return submit_k8s(args)
    return submit_address(args)


# ----------------------------------------------------------------------------------------------- Ray Jobs API

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


#: job-file keys whose values may be local paths (load_job resolves relative ones against the job file's directory)
PATH_KEYS = {"path", "run", "hf", "model", "chat_template", "storage_path", "cache_dir"}


def relative_paths(raw: Any, base: Path) -> list[str]:
    """Values of path keys in a job file that name an existing file or directory relative to the job file."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in PATH_KEYS and isinstance(value, str) and _relative_existing(value, base):
                    found.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(raw)
    return found


def _relative_existing(value: str, base: Path) -> bool:
    if not value or "://" in value or "\n" in value or len(value) > 4096 or Path(value).is_absolute():
        return False
    try:
        return (base / value).exists()
    except OSError:
        return False


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
        raise FusionError(f"Ray Jobs API at {address}: {_first_line(err)}") from None


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
            raise FusionError(f"the Ray Jobs API refused the job: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


# --------------------------------------------------------------------------------------------------- KubeRay

def submit_k8s(args: argparse.Namespace) -> int:
    from ray_pipeline.deploy import rayjob

    if args.env:
        raise FusionError("--env forwards local variables to --address jobs; on Kubernetes keep keys in a Secret "
                          "(secrets.openai / secrets.extra in --values) or plain variables in env:")
    objects = rayjob.build_objects(
        args.job, namespace=args.namespace or "default", values_file=args.values, name=args.name,
        output_dir=args.output_dir, image=args.image, cpu_workers=args.cpu_workers, gpu_workers=args.gpu_workers,
    )
    cm, rj = rayjob.find(objects, "ConfigMap"), rayjob.find(objects, "RayJob")
    _warn_relative(Path(args.job), rj)
    if args.dry_run:
        sys.stdout.write(rayjob.dump_yaml(objects))
        return 0
    api = KubeApi.connect(namespace=args.namespace)
    name = rj["metadata"]["name"]
    api.create_config_map(cm)
    created = api.create_rayjob(rj)
    api.own_config_map(cm["metadata"]["name"], created)
    print(f"rayjob/{name} created in namespace {api.namespace} (ConfigMap {cm['metadata']['name']} holds the job file)",
          flush=True)
    logs = f"kubectl -n {api.namespace} logs -f -l job-name={name}"
    if args.no_follow:
        print(f"follow it: kubectl -n {api.namespace} get rayjob {name} -w   (driver log: {logs})")
        return 0
    try:
        code = follow_rayjob(lambda: api.rayjob_status(name), name)
    except KeyboardInterrupt:
        print(f"\nstopped following; rayjob/{name} keeps running (kubectl -n {api.namespace} delete rayjob {name} "
              "stops it)", file=sys.stderr)
        return 130
    print(f"driver log: {logs}")
    return code


def _warn_relative(job_path: Path, rj: Mapping[str, Any]) -> None:
    try:
        raw = yaml.safe_load(job_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return
    local = relative_paths(raw, job_path.resolve().parent)
    if local:
        print(f"note: {job_path} names {', '.join(repr(p) for p in local[:3])} relative to itself; in the pod the job "
              f"file is under /etc/fusion/jobs, where those paths do not exist (use paths inside the image or on "
              f"the runs volume, URLs or hub datasets)", file=sys.stderr)


def describe_status(status: Mapping[str, Any] | None) -> str:
    """One line for a RayJob .status: deployment status, Ray job status, reason/message."""
    status = status or {}
    deployment = status.get("jobDeploymentStatus") or "New"
    parts = [deployment]
    if status.get("jobStatus"):
        parts.append(f"job {status['jobStatus']}")
    if status.get("failed"):
        parts.append(f"{status['failed']} failed attempt(s)")
    detail = status.get("message") or status.get("reason")
    line = ", ".join(parts)
    return f"{line}: {detail}" if detail and deployment in DEPLOYMENT_TERMINAL | {"Retrying"} else line


def is_terminal(status: Mapping[str, Any] | None) -> bool:
    return bool(status) and (status.get("jobDeploymentStatus") in DEPLOYMENT_TERMINAL)


def exit_code(status: Mapping[str, Any] | None) -> int:
    """0 only when KubeRay completed the RayJob and Ray reports the job SUCCEEDED."""
    status = status or {}
    return 0 if status.get("jobDeploymentStatus") == "Complete" and status.get("jobStatus") == JOB_SUCCEEDED else 1


def follow_rayjob(get_status: Callable[[], Mapping[str, Any] | None], name: str, out: Any = None,
                  sleep: Callable[[float], None] = time.sleep, poll_s: float | None = None) -> int:
    """Print each change of the RayJob's status until it is terminal; return the exit code."""
    out = out or sys.stdout
    poll_s = POLL_S if poll_s is None else poll_s
    last = None
    while True:
        status = get_status() or {}
        line = describe_status(status)
        if line != last:
            print(f"rayjob/{name}: {line}", file=out, flush=True)
            last = line
        if is_terminal(status):
            final = status.get("jobStatus") or status.get("jobDeploymentStatus")
            print(f"rayjob/{name}: {final}", file=out, flush=True)
            return exit_code(status)
        sleep(poll_s)


class KubeApi:
    """The few Kubernetes calls ``fusion submit --k8s`` makes (the chart's submitter Role allows exactly these)."""

    GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
    TIMEOUT = (5, 30)

    def __init__(self, api_client: Any, namespace: str):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.host = api_client.configuration.host

    @classmethod
    def connect(cls, namespace: str | None = None) -> "KubeApi":
        from kubernetes import client, config

        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        try:
            if in_cluster:
                config.load_incluster_config()
            else:  # $KUBECONFIG read now (the client reads it once, at import)
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except Exception as err:  # ConfigException, missing or malformed kubeconfig
            raise FusionError(f"no Kubernetes configuration ({_first_line(err)}): set KUBECONFIG or run in a cluster, "
                              "or use --dry-run to print the objects") from None
        if namespace is None:
            namespace = _default_namespace(in_cluster)
        conf = client.Configuration.get_default_copy()
        conf.retries = 1
        return cls(client.ApiClient(conf), namespace)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, on_404: str | None = None, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, _request_timeout=self.TIMEOUT, **kwargs)
        except ApiException as err:
            reason = _api_reason(err)
            if err.status == 409:
                raise FusionError(f"{what}: already exists in namespace {self.namespace} (pass --name)") from None
            if err.status == 404 and on_404:
                raise FusionError(f"{what}: {on_404} ({reason})") from None
            raise FusionError(f"{what} in namespace {self.namespace}: {err.status} {reason}") from None
        except Exception as err:  # urllib3 connection errors, timeouts
            raise FusionError(f"cannot reach the Kubernetes API at {self.host} ({_first_line(err)})") from None

    def create_config_map(self, cm: Mapping[str, Any]) -> Any:
        return self._call(f"configmap/{cm['metadata']['name']}", self.core.create_namespaced_config_map,
                          self.namespace, dict(cm))

    def create_rayjob(self, rj: Mapping[str, Any]) -> dict[str, Any]:
        return self._call(f"rayjob/{rj['metadata']['name']}", self.custom.create_namespaced_custom_object,
                          self.GROUP, self.VERSION, self.namespace, self.PLURAL, dict(rj),
                          on_404="this cluster has no RayJob kind: install the KubeRay operator (see k8s/README.md)")

    def own_config_map(self, cm_name: str, owner: Mapping[str, Any]) -> Any:
        meta = owner["metadata"]
        ref = {"apiVersion": f"{self.GROUP}/{self.VERSION}", "kind": "RayJob", "name": meta["name"],
               "uid": meta["uid"]}
        return self._call(f"configmap/{cm_name}", self.core.patch_namespaced_config_map, cm_name, self.namespace,
                          {"metadata": {"ownerReferences": [ref]}})

    def rayjob_status(self, name: str) -> dict[str, Any]:
        obj = self._call(f"rayjob/{name}", self.custom.get_namespaced_custom_object, self.GROUP, self.VERSION,
                         self.namespace, self.PLURAL, name)
        return dict(obj.get("status") or {})


def _api_reason(err: Any) -> str:
    try:
        body = json.loads(err.body)
        return str(body.get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


def _default_namespace(in_cluster: bool) -> str:
    if in_cluster:
        path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        if path.is_file():
            return path.read_text().strip() or "default"
        return "default"
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG") or None)
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:
        return "default"
