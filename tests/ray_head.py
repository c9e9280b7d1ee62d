"""A real Ray head for tests: `ray start --head` on 127.0.0.1 in its own process group, every port picked free.

Used by the session's shared head (``shared_ray`` in tests/conftest.py, no dashboard) and by the Jobs API tests
(tests/deploy/test_submit.py, dashboard on). Teardown kills exactly the head's process group (never `ray stop`,
which would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pytest

_PORTS = ("port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
          "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_auth() -> dict[str, str]:
    """Ray turns token authentication on for `ray start`: the head and every client need the same token."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def kill_group(pgid: int) -> None:
    """SIGKILL a process group (a throwaway cluster needs no graceful stop) and wait until it is gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@contextmanager
def ray_head(auth: Mapping[str, str], *, dashboard: bool, env: Mapping[str, str] = {}, drop_env: Sequence[str] = (),
             cwd: str | Path | None = None, timeout: float = 180) -> Iterator[dict[str, int]]:
    """Start a head with 2 CPUs and yield its ports (``port``: the GCS; ``dashboard-port`` when ``dashboard``)."""
    temp = tempfile.mkdtemp(prefix="fray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ports = {name: free_port() for name in (*_PORTS, *(("dashboard-port",) if dashboard else ()))}
    bin_dir = Path(sys.executable).parent
    full_env = {**os.environ, **auth, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "RAY_USAGE_STATS_ENABLED": "0", **env}
    for name in ("RAY_ADDRESS", *drop_env):
        full_env.pop(name, None)
    argv = [str(bin_dir / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
            "--temp-dir", temp, "--disable-usage-stats"]
    argv += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--min-worker-port", "0",
             "--max-worker-port", "0"] if dashboard else ["--include-dashboard", "false"]
    argv += [a for name, port in ports.items() for a in (f"--{name}", str(port))]
    proc = subprocess.Popen(argv, env=full_env, cwd=cwd or temp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"ray start failed ({proc.returncode}): {out[-2000:]}")
        yield ports
    finally:
        kill_group(proc.pid)
        shutil.rmtree(temp, ignore_errors=True)
