"""A fake Kubernetes API server on 127.0.0.1, just enough for ``fusion submit --k8s``.

Why a fake: no Kubernetes cluster (kind, k3s) is available to the tests, and the point is to check the HTTP calls
the real ``kubernetes`` client makes (paths, verbs, bodies, their order) and that they stay within the Role the
fusion-ray chart grants its scheduler. It serves, over plain HTTP:

    POST  /api/v1/namespaces/{ns}/configmaps                  create   (201, or 409 when the name exists)
    PATCH /api/v1/namespaces/{ns}/configmaps/{name}           patch    (merge patch of metadata)
    POST  /apis/ray.io/v1/namespaces/{ns}/rayjobs             create   (201; 404 when ``crd_installed`` is False)
    GET   /apis/ray.io/v1/namespaces/{ns}/rayjobs/{name}      get      (the object, its .status the next of ``statuses``)

Every request is recorded as (verb, resource, namespace, name, body) in ``requests``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/v1)/namespaces/(?P<ns>[^/]+)/(?P<res>[^/?]+)(?:/(?P<name>[^/?]+))?")
_VERBS = {"POST": "create", "PATCH": "patch", "GET": "get", "PUT": "update", "DELETE": "delete"}


class FakeKubeAPI:
    def __init__(self, statuses: list[dict[str, Any]] | None = None, crd_installed: bool = True):
        self.statuses = list(statuses or [{"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}])
        self.crd_installed = crd_installed
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle
    def __enter__(self) -> "FakeKubeAPI":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, payload = fake.handle(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }

    # -- the API
    def handle(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        m = _PATH.match(path)
        if not m:
            return 404, _status(404, f"no route {path}")
        group, ns, res, name = m.group("group") or "", m.group("ns"), m.group("res"), m.group("name")
        with self._lock:
            self.requests.append({"verb": _VERBS.get(method, method), "group": group, "resource": res,
                                  "namespace": ns, "name": name or (body or {}).get("metadata", {}).get("name"),
                                  "body": body})
            if res == "rayjobs" and not self.crd_installed:
                return 404, _status(404, "the server could not find the requested resource")
            if method == "POST" and not name:
                key = (res, ns, body["metadata"]["name"])
                if key in self.objects:
                    return 409, _status(409, f'{res} "{key[2]}" already exists', "AlreadyExists")
                obj = json.loads(json.dumps(body))
                obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion="1")
                self.objects[key] = obj
                return 201, obj
            key = (res, ns, name or "")
            if key not in self.objects:
                return 404, _status(404, f'{res} "{name}" not found', "NotFound")
            obj = self.objects[key]
            if method == "PATCH":
                obj["metadata"].update(body.get("metadata", {}))
                return 200, obj
            if method == "GET":
                if res == "rayjobs":
                    obj["status"] = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
                return 200, obj
            return 405, _status(405, f"{method} not served by the fake")


def _status(code: int, message: str, reason: str = "") -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}
