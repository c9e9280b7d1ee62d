"""``fusion sweep``: render or install the evaluation-sweep chart (``helm/fusion-eval``).

    fusion sweep VALUES.yaml                    # print every object (YAML) and, on stderr, the chart's notes
    fusion sweep VALUES.yaml --out DIR          # one file per object + NOTES.txt in DIR (kubectl apply -f DIR)
    fusion sweep VALUES.yaml --install [--release NAME] [--namespace NS] [--dry-run]

Before anything is printed or sent, three checks run, each failing with one line naming the cause:

1. the values against the chart's ``values.schema.json`` (after Helm merges them over the chart's defaults);
2. every rendered object against the Kubernetes 1.31 OpenAPI schemas, strictly (``manifests.validate_objects``);
3. every sweep item's eval job file (the ConfigMaps) through the project's own job schema (``config.parse_job``),
   so the chart never ships a job that ``fusion run`` would reject in the pod.

``--install`` goes through the Helm SDK (no ``helm`` binary): install, or upgrade when the release exists;
``--dry-run`` asks the API server to check everything and changes nothing (Helm's ``--dry-run=server``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

import ray_pipeline
from ray_pipeline.jobs import parse_job
from ray_pipeline.deploy import manifests
from ray_pipeline.core.errors import FusionError, joined_lines

CHART_NAME = "fusion-eval"
#: where the chart lives: next to the package in a checkout (and in the job image, which copies helm/)
CHART_DIRS = (
    Path(ray_pipeline.__file__).resolve().parents[1] / "helm" / CHART_NAME,
    Path.cwd() / "helm" / CHART_NAME,
)
#: the key of each sweep item's ConfigMap that holds its eval job file
JOB_KEY = "job.yaml"
#: seconds allowed to reach the API server before `--install` gives up
REACH_TIMEOUT_S = 20.0
#: seconds Helm may take to create (not run) the sweep's objects
INSTALL_TIMEOUT_S = 300
#: apply order of the files written by --out (kubectl apply -f DIR takes them by name)
KIND_ORDER = ("ServiceAccount", "NetworkPolicy", "PersistentVolumeClaim", "ConfigMap", "Job")
_OUT_FILE = re.compile(r"^\d\d-[a-z]+-[a-z0-9.-]+\.yaml$")


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.dry_run and not args.install:
        raise FusionError("--dry-run goes with --install (rendering never contacts the cluster)")
    if args.out and args.install:
        raise FusionError("--out writes the rendered manifests; it does not go with --install")
    values = load_values(args.values)
    chart = chart_dir()
    check_values(chart, values, args.values)
    namespace = args.namespace or kube_namespace()
    objects = render(chart, values, args.release, namespace)
    notes = manifests.chart_notes(chart, values, args.release, namespace)
    if args.install:
        release = install(chart, values, args.release, namespace, dry_run=args.dry_run)
        info = release.get("info") if isinstance(release.get("info"), dict) else {}
        status = release.get("status") or info.get("status") or "deployed"
        revision = release.get("version") or release.get("revision") or "?"
        what = "checked by the API server, nothing changed (dry run)" if args.dry_run else f"status {status}"
        print(f"release {args.release} in namespace {namespace}: revision {revision}, {what}; {len(objects)} objects")
        print(notes)
    elif args.out:
        written = write_manifests(objects, Path(args.out), notes)
        print(f"wrote {len(written)} manifests to {args.out} (kubectl apply -f {args.out})")
        print(notes)
    else:
        sys.stdout.write(manifests.to_yaml(objects))
        print(notes, file=sys.stderr)
    return 0


# --- inputs -----------------------------------------------------------------------------------------------------

def load_values(path: str | Path) -> dict[str, Any]:
    """The values file as a mapping (an empty file means the chart's defaults)."""
    from ray_pipeline.core.config import read_yaml_mapping

    return read_yaml_mapping(path, "values file")


def chart_dir() -> Path:
    for candidate in CHART_DIRS:
        if (candidate / "Chart.yaml").is_file():
            return candidate
    raise FusionError(f"the {CHART_NAME} chart is not installed: looked in " + ", ".join(map(str, CHART_DIRS))
                      + " (run fusion sweep from a checkout of the project, or from the job image)")


def check_values(chart: Path, values: Mapping[str, Any], source: str | Path = "values") -> None:
    """Check the values, merged over the chart's defaults as Helm merges them, against values.schema.json."""
    import jsonschema

    import helm_python as helm

    schema = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
    try:
        with helm.Chart.load(str(chart)) as loaded:
            merged = loaded.merge_values(dict(values))
    except helm.HelmError as err:
        raise FusionError(f"{source}: cannot merge over the chart's defaults: {joined_lines(err)}") from None
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(merged), key=lambda e: list(map(str, e.path)))
    if errors:
        raise FusionError(f"{source}: " + "; ".join(_schema_message(e) for e in errors[:5])
                          + (f"; and {len(errors) - 5} more" if len(errors) > 5 else ""))


def _schema_message(err: Any) -> str:
    where = ""
    for part in err.path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = err.message
    if err.validator == "additionalProperties" and "'false'" in message:
        message += ' (a bare n: key reads as false in Helm\'s YAML; quote it: "n": 10)'
    return f"{where or '(top level)'}: {message}"


def kube_namespace() -> str:
    """The current kubeconfig context's namespace, else ``default`` (what kubectl would use)."""
    try:
        from kubernetes import config as kube_config

        _, active = kube_config.list_kube_config_contexts()
        return str((active or {}).get("context", {}).get("namespace") or "default")
    except Exception:  # no kubeconfig, or an unreadable one: rendering does not need a cluster
        return "default"


# --- render and check -------------------------------------------------------------------------------------------

def render(chart: Path, values: Mapping[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """Every object of the sweep in apply order, each validated, and every item's job file checked by the project's
    schema."""
    objects = manifests.render_chart(chart, values, release=release, namespace=namespace)
    objects.sort(key=lambda obj: KIND_ORDER.index(obj["kind"]) if obj["kind"] in KIND_ORDER else len(KIND_ORDER))
    manifests.validate_objects(objects, kube_version=manifests.DEFAULT_KUBE_VERSION)
    item_jobs(objects)
    return objects


def item_jobs(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """ConfigMap name -> its parsed eval job (raises FusionError naming the item whose job the project rejects)."""
    jobs: dict[str, Any] = {}
    for obj in objects:
        if obj.get("kind") != "ConfigMap" or JOB_KEY not in (obj.get("data") or {}):
            continue
        name = obj["metadata"]["name"]
        item = (obj["metadata"].get("annotations") or {}).get("fusion-eval/item", name)
        job = parse_job(yaml.safe_load(obj["data"][JOB_KEY]), f"sweep item {item}")
        if job.kind != "eval":
            raise FusionError(f"sweep item {item}: the chart made a {job.kind} job, not an eval job")
        jobs[name] = job
    return jobs


def write_manifests(objects: list[dict[str, Any]], out: Path, notes: str) -> list[Path]:
    """One file per object, named <order>-<kind>-<name>.yaml so `kubectl apply -f DIR` creates them in order;
    files of an earlier render in DIR are replaced, nothing else there is touched."""
    if out.exists() and not out.is_dir():
        raise FusionError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if _OUT_FILE.match(old.name):
            old.unlink()
    written = []
    for obj in objects:
        kind = str(obj["kind"])
        rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
        path = out / f"{rank:02d}-{kind.lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(manifests.to_yaml([obj]), encoding="utf-8")
        written.append(path)
    (out / "NOTES.txt").write_text(notes, encoding="utf-8")
    return written


# --- install ----------------------------------------------------------------------------------------------------

def install(chart: Path, values: Mapping[str, Any], release: str, namespace: str,
            dry_run: bool = False) -> dict[str, Any]:
    """Install the release, or upgrade it when it exists; the kubeconfig is found as kubectl finds it."""
    import helm_python as helm

    try:
        helm.validate_release_name(release)
    except helm.HelmError as err:
        raise FusionError(f"release name {release!r}: {joined_lines(err)}") from None
    with helm.Config(namespace=namespace, kubeconfig_path=_kubeconfig_path()) as cfg:
        _bounded(cfg.check_reachable, REACH_TIMEOUT_S, "the Kubernetes cluster")
        try:
            cfg.status(release)
            exists = True
        except helm.HelmNotFoundError:
            exists = False
        except helm.HelmError as err:
            raise FusionError(f"release {release}: {joined_lines(err)}") from None
        action = cfg.upgrade if exists else cfg.install
        try:
            return dict(action(str(chart), release, dict(values), namespace=namespace, timeout=INSTALL_TIMEOUT_S,
                               dry_run="server" if dry_run else None))
        except helm.HelmError as err:
            verb = "upgrade" if exists else "install"
            hint = " (Jobs are immutable: helm uninstall the release first)" if exists and "immutable" in str(err) \
                else ""
            raise FusionError(f"helm {verb} {release}: {joined_lines(err)}{hint}") from None


def _kubeconfig_path() -> str | None:
    """$KUBECONFIG as this process sees it now. The SDK's Go runtime keeps the environment it was loaded with, so
    a kubeconfig chosen later (by a caller setting os.environ) must be passed explicitly; several files are left
    to the SDK's own lookup."""
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return paths[0] if len(paths) == 1 else None


def _bounded(call: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Run a blocking SDK call with a deadline (a black-holed API server would otherwise hang the CLI)."""
    import helm_python as helm

    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            call()
        except BaseException as err:  # reported below, in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=target, name="fusion-sweep-reach", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise FusionError(f"cannot reach {what} within {timeout_s:.0f} s (check KUBECONFIG and the current context)")
    err = outcome.get("error")
    if isinstance(err, helm.HelmError):
        raise FusionError(f"cannot reach {what}: {joined_lines(err)} (check KUBECONFIG and the current "
                          "context)") from None
    if err is not None:
        raise err
