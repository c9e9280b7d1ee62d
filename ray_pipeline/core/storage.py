"""Publishing a run's results to a directory or an object store, and reading them back.

``fusion run JOB --publish URI`` copies, after a successful run, what a reader
of its results needs (``summary.json``, ``summary.md``, ``manifest.json``,
``job.yaml``, ``results/``, ``samples/``: whatever of these the run has) to
URI, and writes a ``_SUCCESS`` marker last. ``fusion merge`` counts a
published run only once its ``_SUCCESS`` exists, so a copy cut short (a pod
evicted half-way) is never merged.

URI is a local path (a mounted volume) or anything ``pyarrow.fs`` opens:
``s3://bucket/prefix``, ``gs://bucket/prefix`` (credentials from the usual
environment: ``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, workload identity).
Local paths and object stores go through the same code here (a
``pyarrow.fs.FileSystem`` and a path); only local paths are exercised by the
tests, which have no object store.

``_SUCCESS`` is JSON naming the job, its kind, its config hash (``job.yaml``
through ``outputs.config_hash``, the shard included) and the files copied. A
URI whose ``_SUCCESS`` names another job or config is refused; publishing the
same run again replaces the copy (its old ``_SUCCESS`` is removed first, so it
is incomplete while it is rewritten).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from ray_pipeline.core.errors import FusionError, first_line
from ray_pipeline.core.outputs import RunDir, config_hash

#: written last: its presence means the copy is complete
SUCCESS = "_SUCCESS"
#: what a published run holds (those that exist): files, and directories copied whole
PUBLISHED = ("summary.json", "summary.md", "manifest.json", RunDir.JOB_FILE, "results", "samples")
#: URI schemes handed to pyarrow.fs (besides plain local paths)
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


@dataclass(frozen=True)
class Location:
    """A place in a file system: the pyarrow file system, the path inside it, and the URI as written."""

    fs: Any  # pyarrow.fs.FileSystem
    path: str
    uri: str

    @property
    def local(self) -> bool:
        return type(self.fs).__name__ == "LocalFileSystem"

    def child(self, *parts: str) -> "Location":
        rel = "/".join(p.strip("/") for p in parts if p.strip("/"))
        if not rel:
            return self
        return Location(self.fs, f"{self.path.rstrip('/')}/{rel}", f"{self.uri.rstrip('/')}/{rel}")

    def relative(self, other: "Location") -> str:
        """``other``'s path below this one ("" for itself)."""
        base = self.path.rstrip("/")
        return other.path[len(base):].strip("/") if other.path.startswith(base) else other.path

    def contains(self, other: "Location") -> bool:
        base = self.path.rstrip("/")
        return other.path == base or other.path.startswith(base + "/")


def scheme(uri: str) -> str:
    """``s3`` for ``s3://b/x``; "" for a local path."""
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def check_uri(uri: str) -> None:
    """FusionError (one line) for a URI no file system here can open; no network access."""
    if not uri or not str(uri).strip():
        raise FusionError("empty URI: give a directory, s3://bucket/prefix or gs://bucket/prefix")
    kind = scheme(uri)
    if kind and kind not in SCHEMES:
        raise FusionError(f"{uri}: unsupported scheme {kind}:// (use a local path, s3:// or gs://)")
    if kind in ("s3", "gs", "gcs"):
        import pyarrow.fs as pafs

        needed = {"s3": "S3FileSystem", "gs": "GcsFileSystem", "gcs": "GcsFileSystem"}[kind]
        if not hasattr(pafs, needed):
            raise FusionError(f"{uri}: this pyarrow build has no {needed}")
        if not uri.split("://", 1)[1].strip("/"):
            raise FusionError(f"{uri}: no bucket named")


def resolve(uri: str | os.PathLike[str]) -> Location:
    """The file system and path of ``uri`` (a local path, relative or not, or a URI)."""
    import pyarrow.fs as pafs

    text = str(uri)
    check_uri(text)
    if not scheme(text):
        return Location(pafs.LocalFileSystem(), os.path.abspath(text), text)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a bad or unreachable URI
        raise FusionError(f"{text}: cannot open: {first_line(err)}") from None
    return Location(fs, path, text)


# ------------------------------------------------------------------ reading and writing
def exists(loc: Location) -> bool:
    import pyarrow.fs as pafs

    try:
        return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound
    except OSError as err:
        raise FusionError(f"{loc.uri}: cannot read: {first_line(err)}") from None


def read_bytes(loc: Location) -> bytes:
    try:
        with loc.fs.open_input_stream(loc.path) as fh:
            return fh.read()
    except (OSError, FileNotFoundError) as err:
        raise FusionError(f"{loc.uri}: cannot read: {first_line(err)}") from None


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode("utf-8")


def read_json(loc: Location) -> Any:
    try:
        return json.loads(read_text(loc))
    except (ValueError, UnicodeDecodeError) as err:
        raise FusionError(f"{loc.uri}: not valid JSON ({first_line(err)})") from None


def read_jsonl(loc: Location) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(read_text(loc).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise FusionError(f"{loc.uri}: line {number} is not JSON ({first_line(err)})") from None
    return rows


def write_bytes(loc: Location, data: bytes) -> None:
    """Write one file whole: on a local disk through a temporary name and a rename; an object store's put is whole."""
    parent = loc.path.rsplit("/", 1)[0] or "/"
    try:
        loc.fs.create_dir(parent, recursive=True)
        if loc.local:
            tmp = f"{parent}/.{loc.path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp"
            with loc.fs.open_output_stream(tmp) as fh:
                fh.write(data)
            loc.fs.move(tmp, loc.path)
        else:
            with loc.fs.open_output_stream(loc.path) as fh:
                fh.write(data)
    except OSError as err:
        raise FusionError(f"{loc.uri}: cannot write: {first_line(err)}") from None


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode("utf-8"))


def delete(loc: Location) -> None:
    try:
        loc.fs.delete_file(loc.path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise FusionError(f"{loc.uri}: cannot delete: {first_line(err)}") from None


def list_files(loc: Location) -> list[Location]:
    """Every file below ``loc`` (any depth), sorted by path; none if it does not exist."""
    import pyarrow.fs as pafs

    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    except OSError as err:
        raise FusionError(f"{loc.uri}: cannot list: {first_line(err)}") from None
    base = loc.path.rstrip("/")
    files = [loc.child(info.path[len(base):]) for info in infos
             if info.type == pafs.FileType.File and info.path.startswith(base + "/")]
    return sorted(files, key=lambda f: f.path)


# ------------------------------------------------------------------ publishing
def _run_files(run_dir: Path) -> Iterator[tuple[Path, str]]:
    """(local file, name relative to the run directory) of what is published; links are not followed."""
    for name in PUBLISHED:
        path = run_dir / name
        if path.is_symlink():
            continue
        if path.is_file():
            yield path, name
        elif path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and not sub.is_symlink() and not sub.name.startswith("."):
                    yield sub, sub.relative_to(run_dir).as_posix()


def run_identity(run_dir: Path) -> dict[str, Any]:
    """What a published run is: job name, kind, config hash (shard included), shard."""
    job_file = run_dir / RunDir.JOB_FILE
    if not job_file.is_file():
        raise FusionError(f"{run_dir}: no {RunDir.JOB_FILE}, so not a run directory to publish")
    try:
        config = yaml.safe_load(job_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise FusionError(f"{job_file}: unreadable ({first_line(err)})") from None
    if not isinstance(config, dict):
        raise FusionError(f"{job_file}: not a job config")
    return {"job": config.get("name"), "kind": config.get("kind"), "config_hash": config_hash(config),
            "shard": config.get("shard")}


def published_record(loc: Location) -> dict[str, Any] | None:
    """The ``_SUCCESS`` record of a published run at ``loc``; None if there is none (or it is unreadable)."""
    marker = loc.child(SUCCESS)
    if not exists(marker):
        return None
    try:
        record = json.loads(read_text(marker))
    except (ValueError, UnicodeDecodeError, FusionError):
        return None
    return record if isinstance(record, dict) else None


def publish_run(run_dir: str | os.PathLike[str], uri: str) -> dict[str, Any]:
    """Copy a finished run's results to ``uri``, ``_SUCCESS`` last; returns the ``_SUCCESS`` record.

    FusionError if ``uri`` already holds a complete publication of a different
    job or config; the same run published again replaces its copy.
    """
    run_dir = Path(run_dir)
    identity = run_identity(run_dir)
    files = list(_run_files(run_dir))
    if not any(name != RunDir.JOB_FILE for _, name in files):
        raise FusionError(f"{run_dir}: nothing to publish (no {', '.join(PUBLISHED[:3])}, results/ or samples/)")
    dest = resolve(uri)
    previous = published_record(dest)
    if previous is not None:
        if (previous.get("job"), previous.get("config_hash")) != (identity["job"], identity["config_hash"]):
            raise FusionError(
                f"{uri} already holds a published run of job {previous.get('job')} (config "
                f"{previous.get('config_hash')}), not of this run's job {identity['job']} (config "
                f"{identity['config_hash']}); publish to another URI or remove that one"
            )
        delete(dest.child(SUCCESS))  # incomplete while it is rewritten
    names = [name for _, name in files]
    for path, name in files:
        write_bytes(dest.child(name), path.read_bytes())
    for stale in sorted(set((previous or {}).get("files") or []) - set(names)):
        if isinstance(stale, str) and stale and ".." not in stale.split("/"):
            delete(dest.child(stale))
    record = {**identity, "files": names, "source": str(run_dir.resolve()),
              "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_text(dest.child(SUCCESS), json.dumps(record, indent=2) + "\n")
    return record


def find_published(root: Location, skip: tuple[Location, ...] = ()) -> tuple[list[Location], list[Location]]:
    """Published runs below ``root`` (directories holding ``_SUCCESS``, any depth), and incomplete ones.

    Incomplete: a directory with a ``manifest.json`` or ``job.yaml`` but no
    ``_SUCCESS`` (a copy cut short, or still under way). Directories inside
    ``skip`` (the merge's own output) are ignored.
    """
    complete: dict[str, Location] = {}
    started: dict[str, Location] = {}
    for file in list_files(root):
        if any(s.contains(file) for s in skip):
            continue
        parent_path, _, name = file.path.rpartition("/")
        parent = Location(file.fs, parent_path, file.uri.rpartition("/")[0])
        if name == SUCCESS:
            complete[parent_path] = parent
        elif name in ("manifest.json", RunDir.JOB_FILE):
            started[parent_path] = parent
    incomplete = [loc for path, loc in started.items() if path not in complete]
    return ([complete[p] for p in sorted(complete)], sorted(incomplete, key=lambda loc: loc.path))
