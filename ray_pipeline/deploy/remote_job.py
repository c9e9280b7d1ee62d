"""What both ways of ``fusion submit`` share: the paths a job file names relative to itself (neither the
``--address`` upload nor a ``--k8s`` pod carries them), Ray's success status, and one line of a client's error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Ray's status of a job that ended well (the Jobs API's JobStatus; a RayJob's .status.jobStatus)
JOB_SUCCEEDED = "SUCCEEDED"

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
