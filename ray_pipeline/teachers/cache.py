"""Content-addressed cache of teacher calls, persisted in the run directory.

Key: ``ChatRequest.cache_key(model)`` (model, messages, sampling parameters and
seed). Each writer process appends one JSON line per completed call to its own
file ``cache/calls-<host>-<pid>-<rand>.jsonl`` with a single ``write()`` on an
``O_APPEND`` descriptor, so a process killed with SIGKILL loses no call it had
finished and never leaves a line another process is writing into. Files are
fsynced at most once a second (power loss may lose that last second; a killed
process loses nothing). A torn last line is skipped on load.

Only calls that reached the teacher and got an answer are cached; calls that
failed after their retries (``api_error``) are tried again when a run resumes.

On a multi-node cluster the run directory must be on storage every node sees
(a shared volume), as for Ray Train's ``storage_path``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ray_pipeline.teachers.base import ChatResult

log = logging.getLogger(__name__)

_FSYNC_INTERVAL_S = 1.0


def load_cache(cache_dir: str | os.PathLike[str]) -> dict[str, ChatResult]:
    """Every cached call in ``cache_dir`` (missing directory: empty cache)."""
    out: dict[str, ChatResult] = {}
    directory = Path(cache_dir)
    if not directory.is_dir():
        return out
    torn = 0
    for path in sorted(directory.glob("calls-*.jsonl")):
        with path.open("rb") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    out[rec["key"]] = ChatResult.from_json(rec["result"])
                except (ValueError, KeyError, TypeError):
                    torn += 1
    if torn:
        log.info("call cache: skipped %d torn or unreadable lines in %s", torn, directory)
    for result in out.values():
        result.cached = True
    return out


class CacheWriter:
    """Appends completed calls to this process's own cache file."""

    def __init__(self, cache_dir: str | os.PathLike[str]):
        directory = Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"calls-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = directory / name
        self._fd: int | None = None
        self._last_sync = 0.0
        self._lock = threading.Lock()  # a stage actor answers several chunks at once, on threads

    def put(self, key: str, result: ChatResult) -> None:
        if not result.ok:
            return
        line = (json.dumps({"key": key, "result": result.to_json()}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, line)
            now = time.monotonic()
            if now - self._last_sync >= _FSYNC_INTERVAL_S:
                os.fsync(self._fd)
                self._last_sync = now

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except OSError:
            pass
