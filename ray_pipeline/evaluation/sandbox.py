"""Run one untrusted program under bubblewrap, with limits, and report how it ended.

Every generated program (a Python solution with evalplus's checker, a MultiPL-E
build or run step) goes through :meth:`Sandbox.run`. Inside the sandbox:

- no network: a fresh network namespace whose only interface is its own
  loopback, so neither the host's listeners nor the outside can be reached;
- a fresh PID, IPC and UTS namespace: the program sees only its own processes,
  and when the sandbox ends every process in it is killed;
- a read-only view of the system directories (``/usr``, ``/etc``, ``/lib``...)
  plus the host paths the caller names (an interpreter, a toolchain); nothing
  else of the host exists, so neither ``$HOME`` nor the project is visible
  (nor ``/sys``, ``/run`` or the host's ``/tmp``);
- one writable directory, the program's own, mounted at ``/tmp`` (its working
  directory), and a small ``/dev/shm``; a read-only host path that lies under
  ``/tmp`` (a checkout, a virtualenv) is mounted after it, on top, so it stays
  visible wherever the project lives (a file the caller writes where such a
  path is mounted is an error);
- an empty environment except ``PATH``, ``HOME=/tmp``, ``TMPDIR`` and the
  variables the caller passes, so no secret of the host leaks in;
- no capabilities, and an unprivileged user. As a normal user, bwrap runs in
  a user namespace. As root, bwrap builds the mounts and ``setpriv`` drops to a
  high uid of the sandbox's own (``slot_uid``) before the program starts, so
  that the process limit counts that sandbox's processes only (root is exempt
  from RLIMIT_NPROC, a user namespace of root's does not change that);
- limits (``prlimit``) on CPU seconds, address space, processes, file size,
  open files and core dumps, and a wall-clock timeout that kills the sandbox;
- where the host lets this process create cgroups (root with a writable
  cgroup v1 ``memory`` and ``pids`` hierarchy, or cgroup v2 with both
  controllers), a cgroup per sandbox caps the memory of all its processes
  together (``Limits.total_memory_mb``: forked children, SysV and POSIX shared
  memory, memfds and tmpfs files, which the per-process address-space limit
  does not see) and their number;
- the work directory is measured every ``_POLL_S`` while the program runs:
  past ``Limits.disk_mb``, ``MAX_WORK_ENTRIES`` entries, ``MAX_WORK_DEPTH``
  levels or with a path the host cannot read, the sandbox is killed, so a
  program cannot fill the host's disk with many files each under the
  file-size limit.

stdout and stderr go to files outside the sandbox (the file-size limit caps
them) and the first ``Limits.output_bytes`` of each are returned. Host-side
file handling never follows a link a program left in its work directory, and
copes with trees of any depth; bwrap's own setup failures (SandboxError) are
told from a program's exit by bwrap's JSON status, not by its stderr, which a
program controls.

Not covered: there is no seccomp filter, so the kernel's whole system-call
surface stays reachable (creating user namespaces included); a sandbox may
keep every core busy until its wall-clock limit; without a cgroup, the memory
of a sandbox is capped per process only (``nproc`` x ``memory_mb``, shared
memory not at all).

**Pod isolation** (``isolation="pod"``, ``SandboxConfig.isolation`` or
``$FUSION_SANDBOX_ISOLATION=pod``, which wins). Inside a Kubernetes pod that
runs under RuntimeDefault seccomp with every capability dropped, bubblewrap
cannot create its namespaces; there the pod is the sandbox (gVisor runtime,
non-root user, read-only root file system, no service-account token, no
egress by NetworkPolicy, and nothing of value inside but the model's
answers). Each program then runs without bubblewrap but keeps the rest:
a fresh work directory as its working directory, ``TMPDIR`` and ``HOME``;
an empty environment but ``PATH`` (``LANG``) and what the caller passes; the
same ``prlimit`` limits; the cgroup where the host allows one; the
work-directory watch; and the wall-clock kill, through a small supervisor
(``harness/pod_supervisor.py``, a child subreaper) that kills every process
the program started, also those that left its process group or session, when
the program ends or the sandbox is stopped. What differs: the program sees
the pod's file system and processes (read-only where the pod makes them so),
``/tmp`` is the pod's (the caller's ``/tmp`` in argv and environment values,
which names the work directory in bwrap mode, is mapped to the work
directory), and it runs as the pod's user: RLIMIT_NPROC counts all that
user's processes, so the limit is set to ``nproc`` above the count at start.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Sequence

from ray_pipeline.core.processes import process_tree, user_task_count
from ray_pipeline.core.errors import FusionError

#: system directories every sandbox sees read-only (those that exist on the host)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
#: where the program's own writable directory is mounted, and its working directory
WORKDIR = "/tmp"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: the most files and directories a work directory may hold while a program runs, and how deep
MAX_WORK_ENTRIES = 10_000
MAX_WORK_DEPTH = 32
#: total memory of a sandbox when Limits.total_memory_mb is None (or memory_mb, if larger)
DEFAULT_TOTAL_MEMORY_MB = 4096
#: the highest signal number (SIGRTMAX on Linux): an exit code of 128 + up to this means a signal killed the program
MAX_SIGNAL = 64
#: how programs are isolated: each in bubblewrap, or the pod as the sandbox (see the module docstring)
ISOLATIONS = ("bwrap", "pod")
#: overrides SandboxConfig.isolation where the programs run (the evaluation image sets it to "pod")
ISOLATION_ENV = "FUSION_SANDBOX_ISOLATION"
#: the parent of every program in pod isolation
POD_SUPERVISOR = Path(__file__).resolve().parent / "harness" / "pod_supervisor.py"
#: how long a stopped pod supervisor may take to kill and reap its processes before they are killed from here
_POD_STOP_S = 2.0
#: base of the per-sandbox uids used when the host runs as root
_UID_BASE = 200_000
_SLOTS_PER_PROCESS = 64
#: how often the work directory is measured (and ``on_poll`` called) while a program runs
_POLL_S = 0.05
#: how long a killed sandbox's processes may take to vanish before it is an infrastructure error
_REAP_S = 10.0


class SandboxError(FusionError):
    """The sandbox itself cannot run (bubblewrap missing, namespaces refused, ...)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed command."""

    wall_s: float = 15.0
    cpu_s: int = 15
    #: address-space limit (RLIMIT_AS); None for runtimes that reserve large
    #: virtual ranges up front (the JVM, V8), whose heaps are capped by flags
    memory_mb: int | None = 2048
    nproc: int = 64
    fsize_mb: int = 64
    nofile: int = 256
    shm_mb: int = 64
    output_bytes: int = 16_384
    #: memory of all the sandbox's processes together (a cgroup, where the host
    #: allows one); None: DEFAULT_TOTAL_MEMORY_MB, or memory_mb if that is larger
    total_memory_mb: int | None = None
    #: the most the work directory may hold while the program runs
    disk_mb: int = 256

    @property
    def total_memory_bytes(self) -> int:
        total = self.total_memory_mb or max(DEFAULT_TOTAL_MEMORY_MB, self.memory_mb or 0)
        return total * 1024 * 1024


@dataclass
class Outcome:
    """How a sandboxed command ended."""

    exit_code: int | None  # None when it was killed for the wall-clock timeout
    timed_out: bool
    stdout: str
    stderr: str
    wall_s: float
    files: dict[str, bytes] = field(default_factory=dict)  # files the caller asked to read back

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.exit_code == 0

    @property
    def signal(self) -> int | None:
        """The signal that killed the program, if one did (bwrap reports 128 + signal).

        An exit code of 129 to 192 (signals 1 to SIGRTMAX, 64) is read as a
        signal; PHP's 255 for an uncaught exception, for example, is not.
        """
        if self.exit_code is not None and 128 < self.exit_code <= 128 + MAX_SIGNAL:
            return self.exit_code - 128
        return None


def _as_root() -> bool:
    return os.geteuid() == 0


def isolation_mode(configured: str | None = None) -> str:
    """The isolation in force here: ``$FUSION_SANDBOX_ISOLATION`` if set, else ``configured``, else bwrap."""
    override = os.environ.get(ISOLATION_ENV, "").strip()
    mode = override or configured or ISOLATIONS[0]
    if mode not in ISOLATIONS:
        source = f"${ISOLATION_ENV}" if override else "sandbox.isolation"
        raise SandboxError(f"{source}={mode!r}: expected one of {', '.join(ISOLATIONS)}")
    return mode


_slot_lock = threading.Lock()
_free_slots: list[int] = list(range(_SLOTS_PER_PROCESS))


def slot_uid(slot: int) -> int:
    """The uid a sandbox in ``slot`` of this process runs as, when the host is root.

    Distinct per (process, slot), so that concurrent sandboxes, also those of
    other Ray actors on the node, never share a process count (pids stay
    below 2**22, so the uid stays far below 2**32).
    """
    return _UID_BASE + os.getpid() * _SLOTS_PER_PROCESS + slot


class _Slot:
    def __enter__(self) -> int:
        with _slot_lock:
            if not _free_slots:
                raise SandboxError(f"more than {_SLOTS_PER_PROCESS} concurrent sandboxes in one process")
            self.slot = _free_slots.pop()
        return self.slot

    def __exit__(self, *exc: object) -> None:
        with _slot_lock:
            _free_slots.append(self.slot)


def _which(name: str) -> str | None:
    return shutil.which(name)


# ---------------------------------------------------------------------- cgroups
@dataclass(frozen=True)
class _CgroupHost:
    """Where this process may create a sandbox's cgroups: v1 (memory dir, pids dir) or v2 (one dir)."""

    version: int
    parents: tuple[Path, ...]


@lru_cache(maxsize=1)
def _cgroup_host() -> _CgroupHost | None:
    """The cgroup directories of this process under which a child can be made, or None."""
    if not _as_root():
        return None
    try:
        own: dict[str, str] = {}  # controller ("" for v2) -> this process's cgroup path
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = path
        mounts: dict[str, tuple[str, str]] = {}  # controller -> (root in the hierarchy, mount point)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, fs = left.split(), right.split()
            if fs[0] == "cgroup2":
                mounts.setdefault("", (fields[3], fields[4]))
            elif fs[0] == "cgroup":
                for name in set(fs[2].split(",")) & {"memory", "pids"}:
                    mounts.setdefault(name, (fields[3], fields[4]))

        def directory(name: str) -> Path:
            root, point = mounts[name]
            rel = own[name][len(root):] if own[name].startswith(root) and root != "/" else own[name]
            return Path(point + rel.rstrip("/"))

        if {"memory", "pids"} <= mounts.keys() & own.keys():
            host = _CgroupHost(1, (directory("memory"), directory("pids")))
        elif "" in mounts and "" in own:
            parent = directory("")
            if not {"memory", "pids"} <= set((parent / "cgroup.controllers").read_text().split()):
                return None
            if not {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
            host = _CgroupHost(2, (parent,))
        else:
            return None
        for parent in host.parents:  # can a child be made here?
            probe = parent / f"fusion-sbx-probe-{os.getpid()}-{threading.get_ident()}"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        return host
    except (OSError, ValueError, KeyError, IndexError):
        return None


class _Cgroup:
    """The cgroup(s) of one running sandbox: memory and process caps, OOM count, final sweep."""

    def __init__(self, host: _CgroupHost, name: str, limits: Limits):
        self.host = host
        self.dirs = [parent / name for parent in host.parents]
        memory, pids = self.dirs[0], self.dirs[-1]
        total = str(limits.total_memory_bytes)
        try:
            for directory in self.dirs:
                directory.mkdir(exist_ok=True)
            if host.version == 1:
                (memory / "memory.limit_in_bytes").write_text(total)
                _write_if_present(memory / "memory.memsw.limit_in_bytes", total)
            else:
                (memory / "memory.max").write_text(total)
                _write_if_present(memory / "memory.swap.max", "0")
            (pids / "pids.max").write_text(str(limits.nproc + 2))  # and bwrap's two processes
        except OSError as exc:
            self.remove()
            raise SandboxError(f"cannot set up the sandbox's cgroup {memory}: {exc}") from None

    @property
    def procs_files(self) -> list[str]:
        return [str(directory / "cgroup.procs") for directory in self.dirs]

    def oom_kills(self) -> int:
        """How many of its processes the kernel killed for the memory cap."""
        events = self.dirs[0] / ("memory.oom_control" if self.host.version == 1 else "memory.events")
        for line in events.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Kill what is left in it and remove it; SandboxError if a process outlives SIGKILL."""
        deadline = time.monotonic() + _REAP_S
        for directory in self.dirs:
            while directory.exists():
                for pid in (directory / "cgroup.procs").read_text().split():
                    _kill(int(pid))
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise SandboxError(f"sandbox processes outlived SIGKILL for {_REAP_S:g} s "
                                           f"(cgroup {directory})") from None
                    time.sleep(0.01)


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        path.write_text(value)


# ---------------------------------------------------------------------- sandbox
class Sandbox:
    """Runs commands under bubblewrap (or, in pod isolation, under a supervisor); one instance serves many threads.

    ``isolation``: "bwrap" or "pod" (None: bwrap); ``$FUSION_SANDBOX_ISOLATION`` overrides it.
    """

    def __init__(self, read_only: Sequence[str | Path] = (), env: Mapping[str, str] | None = None,
                 scratch_root: str | Path | None = None, isolation: str | None = None):
        self.isolation = isolation_mode(isolation)
        bwrap = _which("bwrap")
        if bwrap is None and self.isolation == "bwrap":
            raise SandboxError("bubblewrap (bwrap) is not installed: apt-get install bubblewrap "
                               f"(or, inside a locked-down pod, {ISOLATION_ENV}=pod)")
        prlimit = _which("prlimit")
        if prlimit is None:
            raise SandboxError("prlimit (util-linux) is not installed")
        setpriv = _which("setpriv")
        if setpriv is None and _as_root() and self.isolation == "bwrap":
            raise SandboxError("setpriv (util-linux) is not installed: needed to drop root inside the sandbox")
        self.bwrap = bwrap or "bwrap"
        self.prlimit = prlimit
        self.setpriv = setpriv or "setpriv"
        self.read_only = sorted({str(Path(p).resolve()) for p in read_only if Path(p).exists()})
        self.env = dict(env or {})
        self.scratch_root = str(scratch_root) if scratch_root else None
        #: whether Limits.total_memory_mb (and a process cap besides RLIMIT_NPROC) is enforced here
        self.cgroups = _cgroup_host() is not None

    # ------------------------------------------------------------------ commands
    def _bwrap_args(self, work: Path, limits: Limits, env: Mapping[str, str], status_fd: int) -> list[str]:
        args = [self.bwrap]
        if _as_root():
            # Privileged bwrap builds the mounts (so host paths under /root can be
            # bound); setpriv then drops to the slot's uid with no capabilities.
            args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        else:
            args += ["--unshare-all", "--cap-drop", "ALL"]  # a user namespace, unprivileged
        # --json-status-fd reports an "exit-code" only once the command was executed,
        # which tells bwrap's own setup failures from a program that prints "bwrap: ...".
        args += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv",
                 "--json-status-fd", str(status_fd)]
        for d in SYSTEM_DIRS:
            if os.path.exists(d):
                args += ["--ro-bind", d, d]
        args += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--perms", "1777", "--size", str(limits.shm_mb * 1024 * 1024), "--tmpfs", "/dev/shm",
            # the work directory first, then the read-only paths: one under /tmp (a checkout, a virtualenv
            # there) is mounted on top of it, not hidden by it
            "--bind", str(work), WORKDIR,
        ]
        made: set[str] = {WORKDIR}
        for p in self.read_only:
            if any(p == d or p.startswith(d + "/") for d in SYSTEM_DIRS):
                continue
            for parent in reversed(Path(p).parents):  # mount points readable by the sandbox's user
                if str(parent) != "/" and str(parent) not in made:
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", p, p]
        args += ["--chdir", WORKDIR]
        merged = {"PATH": DEFAULT_PATH, "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}
        merged.update(self.env)
        merged.update(env)
        for key, value in merged.items():
            args += ["--setenv", key, value]
        return args + ["--"]

    def _drop_args(self, uid: int | None) -> list[str]:
        if uid is None:
            return []
        return [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs"]

    def _limit_args(self, limits: Limits, nproc: int | None = None) -> list[str]:
        args = [
            self.prlimit,
            f"--cpu={limits.cpu_s}",
            f"--nproc={limits.nproc if nproc is None else nproc}",
            f"--fsize={limits.fsize_mb * 1024 * 1024}",
            f"--nofile={limits.nofile}",
            "--core=0",
        ]
        if limits.memory_mb is not None:
            args.append(f"--as={limits.memory_mb * 1024 * 1024}")
        return args + ["--"]

    # ------------------------------------------------------------------- running
    def run(
        self,
        argv: Sequence[str],
        files: Mapping[str, str | bytes] | None = None,
        limits: Limits | None = None,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        read_back: Sequence[str] = (),
        work: Path | None = None,
        on_poll: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run ``argv`` in a fresh sandbox whose ``/tmp`` holds ``files``.

        ``work``: run in this existing host directory (kept, e.g. between a build
        and a run step) instead of a fresh one that is removed afterwards.
        ``argv`` and ``env`` name the work directory ``/tmp`` (``WORKDIR``) in
        either isolation; pod isolation maps that to the host directory.
        ``read_back``: names of files in the work directory to return in ``Outcome.files``
        (a name that is not a regular file inside the work directory is left out).
        ``on_poll``: called every ``_POLL_S`` while the program runs (e.g. to read
        its results as they come); if it raises, the sandbox is stopped and the
        exception goes to the caller.
        """
        limits = limits or Limits()
        own = work is None
        scratch = Path(tempfile.mkdtemp(prefix="fusion-sbx-", dir=self.scratch_root))
        try:
            work_dir = scratch / "work" if own else Path(work)
            work_dir.mkdir(exist_ok=True)
            for name in files or {}:
                self._check_not_shadowed(name)
            for name, content in (files or {}).items():
                data = content.encode("utf-8") if isinstance(content, str) else content
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                fd = os.open(_file_to_write(work_dir, name), flags, 0o644)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            with _Slot() as slot:
                uid = slot_uid(slot) if _as_root() and self.isolation == "bwrap" else None
                if uid is not None:
                    _chown_tree(work_dir, uid)
                outcome = self._run(argv, work_dir, scratch, limits, stdin, env or {}, uid, slot, on_poll)
            for name in read_back:
                path = _file_to_read(work_dir, name)
                if path is not None:
                    with open(path, "rb") as fh:
                        outcome.files[name] = fh.read(limits.fsize_mb * 1024 * 1024)
            return outcome
        finally:
            _remove_tree(scratch)

    @property
    def under_workdir(self) -> list[str]:
        """The read-only paths that lie under ``/tmp``, the work directory's place in the sandbox."""
        return [p for p in self.read_only if p.startswith(WORKDIR + "/")]

    def _check_not_shadowed(self, name: str) -> None:
        """A file the caller puts in the work directory must not sit where a read-only path is mounted."""
        path = WORKDIR + "/" + "/".join(_parts(name))
        for p in self.under_workdir:
            if p == path or p.startswith(path + "/") or path.startswith(p + "/"):
                raise SandboxError(f"the sandbox's file {name!r} collides with the read-only path {p} "
                                   f"mounted in its work directory")

    def new_workdir(self) -> Path:
        """A host directory for a multi-step program (build, then run); remove it with ``remove_workdir``."""
        return Path(tempfile.mkdtemp(prefix="fusion-sbx-work-", dir=self.scratch_root))

    @staticmethod
    def remove_workdir(path: Path) -> None:
        _remove_tree(path)

    def _run(self, argv: Sequence[str], work: Path, scratch: Path, limits: Limits, stdin: bytes | None,
             env: Mapping[str, str], uid: int | None, slot: int,
             on_poll: Callable[[], None] | None = None) -> Outcome:
        out_path, err_path, in_path = scratch / "stdout", scratch / "stderr", scratch / "stdin"
        in_path.write_bytes(stdin or b"")
        host = _cgroup_host()
        cgroup = _Cgroup(host, f"fusion-sbx-{os.getpid()}-{slot}", limits) if host else None
        pod = self.isolation == "pod"
        try:
            with open(in_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr, \
                    open(scratch / "status", "w+b") as status:
                if pod:
                    command = self._pod_args(status.fileno(), limits) + [self._in_work(a, work) for a in argv]
                    popen_env: dict[str, str] | None = self._pod_env(work, env)
                else:
                    command = (self._bwrap_args(work, limits, env, status.fileno()) + self._drop_args(uid)
                               + self._limit_args(limits) + list(argv))
                    popen_env = None
                if cgroup is not None:  # join the cgroups before bwrap starts, so all it forks is inside
                    joins = " && ".join(f"echo $$ > {shlex.quote(p)}" for p in cgroup.procs_files)
                    command = ["/bin/sh", "-c", f'{joins} && unset PWD OLDPWD && exec "$@"', "sh", *command]
                started = time.monotonic()
                proc = subprocess.Popen(command, stdin=fin, stdout=fout, stderr=ferr, start_new_session=True,
                                        close_fds=True, pass_fds=(status.fileno(),), env=popen_env,
                                        cwd=work if pod else None)
                raw, killed_for = _watch(proc, work, limits, started, _stop_supervisor if pod else _kill_group,
                                         on_poll)
                wall = time.monotonic() - started
                status.seek(0)
                reports = [json.loads(line) for line in status.read().splitlines() if line.strip()]
            if pod and raw < 0 and reports:  # the supervisor was killed (by the program?): its group goes too
                _kill_group(reports[0]["child-pid"])
            elif killed_for and cgroup is None and reports:
                _wait_gone(reports[0]["child-pid"])  # the sandbox's PID 1: its end is the end of all inside
            oom = cgroup.oom_kills() if cgroup is not None else 0
        finally:
            if cgroup is not None:
                cgroup.remove()  # also waits until every process of the sandbox is gone
        stdout, stderr = _head(out_path, limits.output_bytes), _head(err_path, limits.output_bytes)
        if raw >= 0 and not killed_for and not any("exit-code" in report for report in reports):
            lines = stderr.strip().splitlines()
            what = "the pod sandbox's supervisor could not start" if pod else "bubblewrap could not start a sandbox"
            raise SandboxError(f"{what}: {lines[-1] if lines else f'exit {raw}'}")
        code: int | None = 128 - raw if raw < 0 else raw  # negative: bwrap itself killed by that signal
        if killed_for == "timeout":
            code = None
        elif killed_for:  # a failure even if the program ended while the directory was being measured
            code = 128 + signal.SIGKILL
            stderr += f"\nsandbox: killed: {killed_for}\n"
        elif oom and code is not None and code > 128:
            stderr += f"\nsandbox: killed: out of memory ({limits.total_memory_bytes >> 20} MB for all processes)\n"
        return Outcome(exit_code=code, timed_out=killed_for == "timeout", stdout=stdout, stderr=stderr,
                       wall_s=wall)

    # ------------------------------------------------------------- pod isolation
    def _pod_args(self, status_fd: int, limits: Limits) -> list[str]:
        """The supervisor, then prlimit; RLIMIT_NPROC counts every process of this user, so it starts from there."""
        nproc = limits.nproc if _as_root() else limits.nproc + user_task_count(os.getuid())
        return ([sys.executable, "-I", "-S", str(POD_SUPERVISOR), str(status_fd), str(os.getpid()), "--"]
                + self._limit_args(limits, nproc=nproc))

    def _pod_env(self, work: Path, env: Mapping[str, str]) -> dict[str, str]:
        merged = {"PATH": DEFAULT_PATH, "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}
        merged.update(self.env)
        merged.update(env)
        return {key: self._in_work(value, work) for key, value in merged.items()}

    def _in_work(self, value: str, work: Path) -> str:
        """``/tmp`` and paths below it (the work directory, as bwrap mode shows it) as host paths of ``work``.

        A path inside one of the host paths shared read-only (a toolchain, an
        interpreter that happens to live under ``/tmp``) is left alone.
        """
        if value != WORKDIR and not value.startswith(WORKDIR + "/"):
            return value
        if any(value == p or value.startswith(p + "/") for p in self.read_only):
            return value
        return str(work) + value[len(WORKDIR):]

    def check(self) -> None:
        """Raise SandboxError with one line if a sandbox cannot start here."""
        outcome = self.run(["/bin/true"], limits=Limits(wall_s=30))
        if not outcome.ok:
            what = "the pod sandbox" if self.isolation == "pod" else "bubblewrap sandbox"
            raise SandboxError(f"{what} does not start here (exit {outcome.exit_code}): "
                               f"{outcome.stderr.strip()[-300:]}")


def _stop_supervisor(pid: int) -> None:
    """Stop a pod sandbox: SIGTERM tells its supervisor to kill and reap everything below it.

    A supervisor that does not end in time (stopped, stuck) is killed from here with its whole process tree.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _POD_STOP_S
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.005)
    for child in process_tree(pid):
        _kill(child)
    _kill_group(pid)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _watch(proc: subprocess.Popen, work: Path, limits: Limits, started: float,
           stop: Callable[[int], None], on_poll: Callable[[], None] | None = None) -> tuple[int, str]:
    """Wait for the sandbox; ``stop`` it at the wall-clock limit or when its work directory overflows.

    Returns bwrap's (or the pod supervisor's) return code (negative: killed by
    that signal) and why the sandbox was stopped ("" if it was not, "timeout"
    for the wall clock). ``on_poll`` runs at every poll; should it raise, the
    sandbox is stopped first.
    """
    with _ExitWaiter(proc) as exited:
        while True:
            left = started + limits.wall_s - time.monotonic()
            if exited(max(0.0, min(_POLL_S, left))):
                return proc.wait(), ""
            reason = "timeout" if left <= _POLL_S else _work_overflow(work, limits)
            if not reason and on_poll is not None:
                try:
                    on_poll()
                except BaseException:
                    stop(proc.pid)
                    proc.wait()
                    raise
            if reason:
                stop(proc.pid)
                return proc.wait(), reason


class _ExitWaiter:
    """``exited(seconds)``: whether the process ended within that time.

    A pidfd wakes up the moment it ends (Popen.wait's sleeps, which double up
    to 50 ms, would add up to tens of milliseconds to every short program);
    Popen.wait serves kernels without pidfd_open (before Linux 5.3).
    """

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.poller: select.poll | None = None
        self.pidfd = -1

    def __enter__(self) -> Callable[[float], bool]:
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
            self.poller = select.poll()
            self.poller.register(self.pidfd, select.POLLIN)
        except (AttributeError, OSError):
            self.poller = None
        return self.exited

    def exited(self, seconds: float) -> bool:
        if self.poller is not None:
            return bool(self.poller.poll(seconds * 1000))
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)


def _work_overflow(work: Path, limits: Limits) -> str:
    """Why the work directory is over its limits, or "": size, entries, depth, a path the host cannot read."""
    budget, used, entries = limits.disk_mb * 1024 * 1024, 0, 0
    stack = [(str(work), 0)]
    while stack:
        directory, depth = stack.pop()
        if depth > MAX_WORK_DEPTH:
            return f"the work directory is more than {MAX_WORK_DEPTH} directories deep"
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    entries += 1
                    used += entry.stat(follow_symlinks=False).st_blocks * 512
                    if used > budget:
                        return f"the work directory passed {limits.disk_mb} MB"
                    if entries > MAX_WORK_ENTRIES:
                        return f"the work directory passed {MAX_WORK_ENTRIES} files"
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, depth + 1))
        except FileNotFoundError:  # removed while being measured
            continue
        except OSError as exc:  # e.g. a path longer than PATH_MAX
            return f"the work directory holds a path the host cannot read ({exc.strerror})"
    return ""


def _parts(name: str) -> tuple[str, ...]:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise ValueError(f"not a relative path inside the work directory: {name!r}")
    return parts


def _file_to_write(work: Path, name: str) -> Path:
    """The host path of ``name`` in a work directory, ready to be written without following a link.

    What an earlier step's program left on the way (a link, a file where a
    directory must be, a directory where the file must be) is removed first.
    """
    path, parts = work, _parts(name)
    for i, part in enumerate(parts):
        path, last = path / part, i == len(parts) - 1
        if path.is_symlink() or (path.exists() and path.is_dir() == last):
            _remove_tree(path)
        if not last:
            path.mkdir(exist_ok=True)
    return path


def _file_to_read(work: Path, name: str) -> Path | None:
    """The host path of ``name`` in a work directory if it is a regular file reached through no link."""
    path = work
    for part in _parts(name):
        path = path / part
        if path.is_symlink():
            return None
    return path if path.is_file() else None


def open_work_file(work: Path, name: str) -> BinaryIO | None:
    """``name`` in a work directory opened for reading, if it is a regular file reached through no link.

    For results a program left behind, read after its sandbox ended: a link, a
    FIFO or a device in its place gives None, never a blocked or redirected read.
    """
    path = _file_to_read(work, name)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _head(path: Path, limit: int) -> str:
    with open(path, "rb") as fh:
        return fh.read(limit).decode("utf-8", errors="replace")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_group(pid: int) -> None:
    # bwrap's child is PID 1 of the sandbox's PID namespace and dies with bwrap
    # (--die-with-parent); when it dies the kernel kills every process inside.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int) -> None:
    """Wait until ``pid`` has exited (gone or a zombie); SandboxError after _REAP_S."""
    deadline = time.monotonic() + _REAP_S
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"the sandbox's PID 1 ({pid}) outlived SIGKILL for {_REAP_S:g} s")
        time.sleep(0.01)


def _run_quietly(argv: list[str]) -> None:
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)


def _chown_tree(root: Path, uid: int) -> None:
    """Give a work directory to the sandbox's uid, never following a link.

    An iterative walk serves the usual few files; ``chown -R`` takes over what
    it cannot (a tree a program made deeper than PATH_MAX).
    """
    try:
        os.chown(root, uid, uid)
        stack = [str(root)]
        while stack:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    os.chown(entry.path, uid, uid, follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
    except OSError:
        _run_quietly(["chown", "-R", "-h", f"{uid}:{uid}", "--", str(root)])


def _remove_tree(path: Path) -> None:
    """Remove a directory tree whatever a program left in it, with ``rm -rf``.

    Unlike shutil.rmtree (recursive, and slow on deep trees: 2 s for 900 levels),
    it copes with any depth in linear time. As a normal user, directories a
    program made unreadable or unwritable are opened up first with ``chmod -R``.
    """
    if not _as_root():
        _run_quietly(["chmod", "-R", "u+rwX", "--", str(path)])
    _run_quietly(["rm", "-rf", "--", str(path)])
