"""The few Kubernetes API calls ``fusion submit --k8s`` makes, each failure one line that names its cause."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from ray_pipeline.core.errors import FusionError, first_line


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
            raise FusionError(f"no Kubernetes configuration ({first_line(err)}): set KUBECONFIG or run in a cluster, "
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
            raise FusionError(f"cannot reach the Kubernetes API at {self.host} ({first_line(err)})") from None

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
