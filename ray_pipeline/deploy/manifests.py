"""Render Helm charts offline and validate every object they make.

Rendering goes through the Helm v4 SDK (``helm-python-sdk``: Helm's own Go code as a library), so templates, the
chart's ``values.schema.json`` and ``helm lint`` behave exactly as the ``helm`` binary would. Validation is two-fold:

* built-in kinds (Job, ConfigMap, NetworkPolicy, Role, ...) against the Kubernetes OpenAPI schemas shipped by
  ``kubernetes-validate``, in strict mode (an unknown field is an error, as ``kubectl apply`` reports it);
* custom resources (KubeRay's RayCluster, RayJob, RayCronJob) against the ``openAPIV3Schema`` of their CRDs,
  with unknown fields rejected wherever the schema does not say ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ray_pipeline.core.errors import FusionError, joined_lines

DEFAULT_KUBE_VERSION = "1.31"
_NOTES = "NOTES.txt"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _helm() -> Any:
    try:
        import helm_python
    except ImportError as err:  # pragma: no cover - a dependency of the project
        raise FusionError(f"the Helm SDK is not installed ({err}); pip install helm-python-sdk") from err
    return helm_python


def _load(chart_dir: str | Path) -> Any:
    helm = _helm()
    path = Path(chart_dir)
    if not (path / "Chart.yaml").is_file():
        raise FusionError(f"{path}: not a Helm chart (no Chart.yaml)")
    try:
        return helm.Chart.load(str(path))
    except helm.HelmError as err:
        raise FusionError(f"{path}: cannot load the chart: {joined_lines(err)}") from err


def render_templates(chart_dir: str | Path, values: Mapping[str, Any] | None = None, release: str = "fusion",
                     namespace: str = "default") -> dict[str, str]:
    """Template path -> rendered text, as ``helm template`` makes them (values checked against the chart schema)."""
    helm = _helm()
    chart = _load(chart_dir)
    try:
        helm.validate_release_name(release)
        return chart.render(dict(values or {}), name=release, namespace=namespace, is_install=True)
    except helm.HelmValuesError as err:
        raise FusionError(f"{Path(chart_dir).name}: bad values: {joined_lines(err)}") from err
    except helm.HelmError as err:
        raise FusionError(f"{Path(chart_dir).name}: cannot render: {joined_lines(err)}") from err


def render_chart(chart_dir: str | Path, values: Mapping[str, Any] | None = None, release: str = "fusion",
                 namespace: str = "default") -> list[dict[str, Any]]:
    """Every Kubernetes object the chart makes, in template order (NOTES.txt and empty documents left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_templates(chart_dir, values, release, namespace).items()):
        if path.endswith(_NOTES) or not text.strip():
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            raise FusionError(f"{path}: the rendered template is not YAML: {joined_lines(err)}") from err
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise FusionError(f"{path}: a rendered document is not a Kubernetes object")
            objects.append(doc)
    return objects


def chart_notes(chart_dir: str | Path, values: Mapping[str, Any] | None = None, release: str = "fusion",
                namespace: str = "default") -> str:
    """The chart's rendered NOTES.txt (what ``helm install`` prints), or '' when it has none."""
    for path, text in render_templates(chart_dir, values, release, namespace).items():
        if path.endswith(_NOTES):
            return text
    return ""


def lint_chart(chart_dir: str | Path, values: Mapping[str, Any] | None = None, strict: bool = True) -> list[str]:
    """``helm lint`` findings at warning level or above, as 'path: message' lines (empty when clean)."""
    helm = _helm()
    report = helm.lint(str(chart_dir), dict(values) if values else None, strict=strict)
    found = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    return found + [str(e) for e in report.get("errors") or []]


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML, in the given order."""
    return "".join("---\n" + yaml.safe_dump(dict(obj), sort_keys=False) for obj in objects)


def describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name') or meta.get('generateName') or '?'}"


# --- validation ---------------------------------------------------------------------------------------------

def validate_objects(objects: Iterable[Mapping[str, Any]], kube_version: str = DEFAULT_KUBE_VERSION,
                     crd_dir: str | Path | None = None) -> None:
    """Raise FusionError listing every invalid object; custom resources need ``crd_dir`` (their CRD YAML files)."""
    problems: list[str] = []
    crds = load_crd_schemas(crd_dir) if crd_dir else {}
    for obj in objects:
        problems += [f"{describe(obj)}: {p}" for p in object_problems(obj, kube_version, crds)]
    if problems:
        raise FusionError(f"{len(problems)} invalid object field(s): " + "; ".join(problems))


def object_problems(obj: Mapping[str, Any], kube_version: str = DEFAULT_KUBE_VERSION,
                    crds: Mapping[tuple[str, str, str], dict[str, Any]] | None = None) -> list[str]:
    """Every problem of one object ([] when valid)."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    group, _, version = api_version.rpartition("/")
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName", "x").rstrip("-") or "x"
    problems = [] if _DNS_SUBDOMAIN.match(str(name)) else [f"metadata.name {name!r} is not a DNS subdomain"]
    if (group, version, kind) in (crds or {}):
        return problems + _crd_problems(obj, crds[(group, version, kind)])
    if "." in group and not group.endswith(".k8s.io"):
        return problems + [f"no CRD schema for {api_version} {kind} (pass the directory of its CRD)"]
    import kubernetes_validate

    try:
        kubernetes_validate.validate(dict(obj), kube_version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        problems.append(f"{path}: {err.message}")
    except kubernetes_validate.SchemaNotFoundError:
        problems.append(f"{api_version} {kind} is not a Kubernetes {kube_version} kind")
    return problems


def _crd_problems(obj: Mapping[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
        for err in sorted(validator.iter_errors(dict(obj)), key=lambda e: list(map(str, e.absolute_path)))
    ]


def load_crd_schemas(crd_dir: str | Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> the strict JSON schema of every CRD version in ``crd_dir``."""
    return dict(_crd_schemas(str(Path(crd_dir).resolve())))


@lru_cache(maxsize=4)
def _crd_schemas(crd_dir: str) -> tuple[tuple[tuple[str, str, str], dict[str, Any]], ...]:
    found = []
    files = sorted(Path(crd_dir).glob("*.yaml")) + sorted(Path(crd_dir).glob("*.yml"))
    if not files:
        raise FusionError(f"{crd_dir}: no CRD files (*.yaml)")
    for path in files:
        for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for ver in spec.get("versions", []):
                schema = (ver.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    found.append(((spec["group"], ver["name"], spec["names"]["kind"]), _strict(schema)))
    return tuple(found)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields (the API server's strict field validation), keep preserve-unknown-fields subtrees open."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for key, value in node.items():
                if key != "x-kubernetes-preserve-unknown-fields":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    # the CRD schema leaves metadata open; the API server checks it as ObjectMeta
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema
