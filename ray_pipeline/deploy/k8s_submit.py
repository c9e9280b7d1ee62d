"""``fusion submit --k8s``: create a job file's ConfigMap and RayJob (rendered by ``rayjob``) and follow the RayJob.

The RayJob owns the ConfigMap (deleting the RayJob deletes both); its status is followed until KubeRay reports it
finished, and the exit code is 0 only when the job SUCCEEDED.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from ray_pipeline.core.errors import FusionError
from ray_pipeline.deploy.kube_client import KubeApi
from ray_pipeline.deploy.remote_job import JOB_SUCCEEDED, relative_paths

# KubeRay RayJob status (ray.io/v1): .status.jobDeploymentStatus is KubeRay's view of the cluster and submission,
# .status.jobStatus is Ray's view of the job.
DEPLOYMENT_TERMINAL = {"Complete", "Failed", "ValidationFailed"}
POLL_S = 3.0


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
