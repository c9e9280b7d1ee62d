"""One job file as a KubeRay RayJob: the ConfigMap that carries the file and the RayJob that runs it.

Both come from rendering ``helm/fusion-ray`` with ``rayCluster.enabled: false`` and a single ``jobs[]`` entry, so
the chart's RayJob template is the one definition of a RayJob (its own autoscaling RayCluster, hardened pods,
secrets by reference, the runs volume). Values are layered, later wins:

    the chart's values.yaml  <  --values FILE  <  this job (file, name, output dir; the worker groups it needs:
        GPU workers for GPU training or a vLLM teacher on GPUs, unless --values' jobs[] entry sets them)
        <  --image/--cpu-workers/--gpu-workers

``--values`` is a values file of the chart; its ``jobs[]`` entry named like the job (or its only entry) gives the
per-job settings (deadlines, runtimeEnv, env, rayCluster overrides). The job file itself always comes from the
command line. The RayJob mounts the runs volume of a ``helm install`` of the chart (claim ``fusion-runs`` unless
``storage.existingClaim`` says otherwise) and writes ``<storage.mountPath>/<job name>``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ray_pipeline.core.errors import FusionError
from ray_pipeline.jobs import load_job

CHART_ENV = "FUSION_RAY_CHART"
CHART_NAME = "fusion-ray"
RELEASE = "fusion"
RAYJOB_NAME_MAX = 47            # KubeRay: the RayCluster it makes is <name>-xxxxx, within 53
RAYJOB_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")   # a DNS-1035 label
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_REPOSITORY = re.compile(r"^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+/[a-z0-9._/-]*[a-z0-9])?$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def chart_dir() -> Path:
    """helm/fusion-ray: $FUSION_RAY_CHART, next to the package (a source checkout), or ./helm/fusion-ray (the image's /app)."""
    import ray_pipeline

    candidates = []
    if os.environ.get(CHART_ENV):
        candidates.append(Path(os.environ[CHART_ENV]))
    candidates += [Path(ray_pipeline.__file__).resolve().parents[1] / "helm" / CHART_NAME, Path.cwd() / "helm" / CHART_NAME]
    for path in candidates:
        if (path / "Chart.yaml").is_file():
            return path
    raise FusionError(
        f"the {CHART_NAME} Helm chart was not found (looked in {', '.join(str(c) for c in candidates)}); "
        f"run from a source checkout or set {CHART_ENV}"
    )


def k8s_name(name: str) -> str:
    """A job name as a DNS-1035 label: lower case, '-' for anything else, starting with a letter."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = f"job-{label}".rstrip("-")
    return label[:30].rstrip("-")


def default_rayjob_name(base: str, now: _dt.datetime | None = None) -> str:
    """<base>-<UTC yymmdd-hhmmss>: a new RayJob per submission (earlier ones stay until deleted)."""
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%y%m%d-%H%M%S")
    return f"{base[:RAYJOB_NAME_MAX - len(stamp) - 1].rstrip('-')}-{stamp}"


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merged key by key (over wins, false and 0 included); lists and scalars replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_values(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A values file of the chart (--values), as a mapping."""
    from ray_pipeline.core.config import read_yaml_mapping

    return read_yaml_mapping(path, "values file")


def _job_entry(values: Mapping[str, Any], label: str, source: str) -> dict[str, Any]:
    """The per-job settings in a values file: the jobs[] entry named ``label``, or its only entry."""
    jobs = values.get("jobs") or []
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise FusionError(f"--values {source}: jobs must be a list of mappings")
    if not jobs:
        return {}
    named = [j for j in jobs if j.get("name") == label]
    if named:
        entry = named[0]
    elif len(jobs) == 1:
        entry = jobs[0]
    else:
        names = ", ".join(str(j.get("name")) for j in jobs)
        raise FusionError(f"--values {source}: jobs[] has {len(jobs)} entries ({names}) and none is named {label!r}")
    entry = {k: copy.deepcopy(v) for k, v in entry.items() if k not in ("jobFile", "config")}
    if entry.get("cluster", "own") != "own":
        raise FusionError(
            f"--values {source}: jobs[{entry.get('name', label)}].cluster: fusion submit --k8s runs a job on its own "
            "RayCluster; jobs of the shared cluster are chart jobs (add it to jobs[] with cluster: shared, helm upgrade)"
        )
    return entry


def _image(ref: str) -> dict[str, str]:
    """REPOSITORY[:TAG] -> image values (a registry port is part of the repository)."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = ref, ""
    if "@" in ref or not _REPOSITORY.match(repo) or (tag and not _TAG.match(tag)):
        raise FusionError(f"--image {ref!r}: give REPOSITORY[:TAG] (the chart appends -cpu / -gpu to the tag)")
    if tag == "latest":
        raise FusionError(f"--image {ref!r}: 'latest' is not allowed; pin a version")
    return {"repository": repo, **({"tag": tag} if tag else {})}


def _workers(flag: str, n: int) -> dict[str, Any]:
    if n < 0:
        raise FusionError(f"{flag} {n}: must be 0 or more")
    return {"enabled": False} if n == 0 else {"enabled": True, "minReplicas": 0, "maxReplicas": n}


def job_workers(job: Any) -> dict[str, Any]:
    """The worker groups a job file asks for by itself (flags and --values win): GPU training or a vLLM teacher on
    GPUs gets GPU workers (and no CPU group for training); anything else keeps the chart's groups."""
    import math

    if job.kind == "sft" and job.scaling.use_gpu:
        gpus = math.ceil(job.scaling.num_workers * job.scaling.gpus_per_worker)
        return {"gpuWorkers": _workers("scaling.num_workers", gpus), "cpuWorkers": {"enabled": False}}
    teacher = getattr(job, "teacher", None)
    if getattr(teacher, "kind", None) == "vllm" and teacher.num_gpus > 0:
        gpus = math.ceil(teacher.num_gpus * teacher.tensor_parallel_size) * job.ray.num_actors
        return {"gpuWorkers": _workers("teacher.num_gpus", gpus)}
    return {}


def build_values(
    job_file: str | os.PathLike[str],
    *,
    values_file: str | None = None,
    name: str | None = None,
    output_dir: str | None = None,
    image: str | None = None,
    cpu_workers: int | None = None,
    gpu_workers: int | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Values of helm/fusion-ray that make exactly this job's ConfigMap and RayJob (the job file is validated first)."""
    job = load_job(job_file)
    text = Path(job_file).read_text(encoding="utf-8")
    base = read_values(values_file) if values_file else {}
    entry = _job_entry(base, k8s_name(job.name), str(values_file))
    label = str(entry.get("name") or k8s_name(job.name))
    rayjob_name = name or default_rayjob_name(f"{label}", now)
    if not (RAYJOB_NAME.match(rayjob_name) and len(rayjob_name) <= RAYJOB_NAME_MAX):
        raise FusionError(
            f"--name {rayjob_name!r}: a RayJob name is lower-case letters, digits and '-', starts with a letter, "
            f"at most {RAYJOB_NAME_MAX} characters"
        )
    storage = base.get("storage") or {}
    mount = str(storage.get("mountPath") or "/data/runs").rstrip("/")
    if output_dir is not None:
        if not _SAFE_PATH.match(output_dir):
            raise FusionError(f"--output-dir {output_dir!r}: on Kubernetes give an absolute path (letters, digits, . _ - /)")
        entry["outputDir"], entry["datedOutput"] = output_dir, False
    elif not entry.get("outputDir"):
        own = job.output_dir if job.output_dir and _SAFE_PATH.match(job.output_dir) else None
        entry["outputDir"] = own or f"{mount}/{job.name}"
    entry.update(name=label, config=text, rayJobName=rayjob_name, runOnInstall=True, cluster="own")
    given = entry.get("rayCluster") or {}
    overrides: dict[str, Any] = {k: v for k, v in job_workers(job).items() if k not in given}
    if cpu_workers is not None:
        overrides["cpuWorkers"] = _workers("--cpu-workers", cpu_workers)
    if gpu_workers is not None:
        overrides["gpuWorkers"] = _workers("--gpu-workers", gpu_workers)
    if overrides:
        entry["rayCluster"] = deep_merge(entry.get("rayCluster") or {}, overrides)
    values = {k: v for k, v in base.items() if k not in ("jobs", "schedules")}
    values = deep_merge(values, {
        "rayCluster": {"enabled": False},
        # the runs volume of the chart's release; a submission never creates a PVC of its own
        "storage": {"create": False, "existingClaim": storage.get("existingClaim") or f"{RELEASE}-runs"},
        "jobs": [entry],
        "schedules": [],
    })
    if image:
        values["image"] = deep_merge(values.get("image") or {}, _image(image))
    return values


def build_objects(job_file: str | os.PathLike[str], *, namespace: str = "default", **options: Any) -> list[dict[str, Any]]:
    """[ConfigMap, RayJob] for one job file, rendered from the chart and validated (built-in kinds; the RayJob's
    schema needs the CRD, see manifests.validate_objects)."""
    from ray_pipeline.deploy.manifests import render_chart

    values = build_values(job_file, **options)
    objects = render_chart(chart_dir(), values, release=RELEASE, namespace=namespace)
    kinds = sorted(o["kind"] for o in objects)
    if kinds != ["ConfigMap", "RayJob"]:
        raise FusionError(f"the {CHART_NAME} chart made {kinds} for one job, expected a ConfigMap and a RayJob "
                          "(check --values: only jobs, image, secrets, env, storage and rayCluster settings apply)")
    return sorted(objects, key=lambda o: o["kind"] != "ConfigMap")


def find(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (job files, runtimeEnvYAML) as literal blocks, so the YAML reads like the files."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_BlockDumper.add_representer(str, _str)


def dump_yaml(objects: list[Mapping[str, Any]]) -> str:
    """Multi-document YAML, keys in template order, multi-line strings as blocks."""
    return "".join(
        "---\n" + yaml.dump(dict(o), Dumper=_BlockDumper, sort_keys=False, width=120, allow_unicode=True)
        for o in objects
    )
