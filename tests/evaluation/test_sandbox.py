"""The bubblewrap sandbox against hostile programs: each attack fails and the host stays unharmed.

Every program of ``tests/hostile_programs.py`` runs through ``Sandbox.run``
with tight limits; the test then checks on the host side that the outcome is a
failure, that it ended in time, and that nothing of the host was reached:
listeners, files, secrets, processes, memory. Positive controls show that the
same checks do see an attack that gets through (outside the sandbox, or with
the sandbox given the secret on purpose).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from ray_pipeline.evaluation import sandbox as sandbox_module
from ray_pipeline.evaluation.sandbox import Limits, Outcome, Sandbox, SandboxError, slot_uid
from tests.conftest import REPO, needs_bwrap, require_sandbox
from tests.hostile_programs import CHECK, HOSTILE, SOLUTION, program

pytestmark = [pytest.mark.sandbox, needs_bwrap]

#: the wall clock is well above the CPU limit, so that a loaded machine still ends infinite_loop by CPU time
LIMITS = Limits(wall_s=6, cpu_s=2, memory_mb=512, total_memory_mb=1024, disk_mb=128)
#: how long after its wall-clock limit a sandbox may take to be gone
MARGIN_S = 2.0
#: how far the host's available memory may dip while a hostile program runs
MEMORY_DIP = (LIMITS.total_memory_mb + 512) << 20
SECRET_ENV = "FUSION_SANDBOX_TEST_SECRET"
#: where the hostile programs would leave a file if a write got through
WRITE_TARGETS = ["/etc/fusion_pwned", "/usr/fusion_pwned", "/usr/bin/fusion_pwned", "/fusion_pwned",
                 "/root/fusion_pwned", str(REPO / "fusion_pwned")]
#: the sandbox's evidence that it stopped the attack (all in _report(outcome))
EVIDENCE: dict[str, tuple[str, ...]] = {
    "socket": ("Connection refused", "Network is unreachable"),
    "fork_bomb": ("BlockingIOError",),
    "thread_bomb": ("can't start new thread",),
    "write_outside": ("Read-only file system", "Permission denied"),
    "read_secrets": ("/etc/shadow [Errno 13]", "/root/.ssh/id_rsa [Errno 2]", "found: []"),
    "infinite_loop": ("killed by SIGKILL",),  # the CPU limit: RLIMIT_CPU's hard limit sends SIGKILL
    "memory_bomb": ("MemoryError",),
    "fork_memory_bomb": ("children were killed",),
    "shm_bomb": ("sandbox: killed: out of memory",),
    "disk_fill": ("File too large",),
    "many_files": ("sandbox: killed: the work directory passed 128 MB",),
    "deep_tree": ("sandbox: killed: the work directory is more than",),
    "delete_files": ("Read-only file system", "No such file or directory"),
    "kill_host": ("Operation not permitted", "No such process"),
    "fake_setup_error": ("bwrap: Can't mount proc",),
}
#: attacks on the memory of the machine, contained only where the sandbox has a cgroup
NEEDS_CGROUPS = {"fork_memory_bomb", "shm_bomb"}


def _sandbox(tmp_path: Path, *extra: str | Path) -> Sandbox:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return Sandbox(read_only=[sys.prefix, sys.base_prefix, *extra], scratch_root=scratch)


@pytest.fixture(scope="module", autouse=True)
def _sandbox_works() -> None:
    require_sandbox()


def _report(outcome: Outcome) -> str:
    """The outcome as one text: its output and how it ended."""
    ended = "timed out" if outcome.timed_out else f"exit {outcome.exit_code}"
    if outcome.signal:
        ended += f", killed by {signal.Signals(outcome.signal).name}"
    return f"{outcome.stdout}\n{outcome.stderr}\n[{ended}]"


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def _host_ip() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent; it picks the outgoing address
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _sandbox_processes(marker: str | None = None) -> list[str]:
    """Live host processes that belong to a sandbox of this process (by uid) or carry ``marker``.

    A zombie (state Z, or X: being reaped) has ended already: under load the kernel may still be tearing down a
    PID namespace's init (bwrap's inner process) when the sandbox returns; it runs nothing and holds nothing."""
    uids = {slot_uid(slot) for slot in range(sandbox_module._SLOTS_PER_PROCESS)}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "?")
        if state in ("Z", "X"):
            continue
        if uid in uids or (marker is not None and marker in cmdline):
            found.append(f"{entry.name} uid={uid} {cmdline[:120]}")
    return found


class Host:
    """What a hostile program could reach on the host, and how to tell it was not reached."""

    def __init__(self, tmp_path: Path):
        self.marker = f"fusion-sandbox-test-{uuid.uuid4().hex[:12]}"
        self.listener = socket.create_server(("0.0.0.0", 0))
        self.listener.settimeout(0.2)
        self.unix_name = self.marker
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind("\0" + self.unix_name)
        self.unix.listen()
        self.unix.settimeout(0.2)
        self.host_dir = tmp_path / "host"
        self.host_dir.mkdir(parents=True)
        self.secret = f"secret-{uuid.uuid4().hex}"
        self.secret_file = tmp_path / "secret.txt"
        self.secret_file.write_text(self.secret)
        self.canary_file = tmp_path / "canary.txt"
        self.canary_dir = tmp_path / "canary_dir"
        self.project_canary = REPO / f".{self.marker}"
        self.system_canary = Path("/usr/local/share") / self.marker
        self.canaries = {self.canary_file: "canary", self.canary_dir / "inner.txt": "inner",
                         self.project_canary: "project canary"}
        if os.access(self.system_canary.parent, os.W_OK):  # as root: a file under /usr as well
            self.canaries[self.system_canary] = "system canary"
        for path, text in self.canaries.items():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        self.victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", self.marker])

    def placeholders(self, external: str = '("1.1.1.1", 53), ("8.8.8.8", 443)') -> dict[str, object]:
        return {"port": self.listener.getsockname()[1], "host_ip": _host_ip(), "external": external,
                "unix_name": self.unix_name, "host_dir": self.host_dir, "project": REPO,
                "project_canary": self.project_canary, "system_canary": self.system_canary,
                "canary_file": self.canary_file, "canary_dir": self.canary_dir, "secret_env": SECRET_ENV,
                "secret_file": self.secret_file, "victim_pid": self.victim.pid}

    def connections(self) -> list[str]:
        """Connections made to the host's listeners since the last call."""
        made = []
        for name, listener in (("tcp", self.listener), ("unix", self.unix)):
            try:
                while True:
                    connection, _ = listener.accept()
                    connection.close()
                    made.append(name)
            except (TimeoutError, socket.timeout, BlockingIOError):
                pass
        return made

    def harm(self, outcome: Outcome) -> list[str]:
        """Everything a hostile program changed or learned on the host (empty: none)."""
        harm = [f"connection to the host's {name} listener" for name in self.connections()]
        for path, text in self.canaries.items():
            if not path.is_file() or path.read_text() != text:
                harm.append(f"canary {path} deleted or changed")
        for path in [*WRITE_TARGETS, str(self.host_dir / "fusion_pwned")]:
            if os.path.lexists(path):
                harm.append(f"{path} written")
        if self.secret in outcome.stdout + outcome.stderr:
            harm.append("the secret leaked into the output")
        if self.victim.poll() is not None:
            harm.append(f"host process {self.victim.pid} killed")
        harm += [f"left running: {line}" for line in _sandbox_processes()]
        return harm

    def close(self) -> None:
        self.victim.kill()
        self.victim.wait()
        self.listener.close()
        self.unix.close()
        for path in self.canaries:
            path.unlink(missing_ok=True)
        for path in WRITE_TARGETS:
            if os.path.lexists(path):
                os.unlink(path)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    host = Host(tmp_path)
    monkeypatch.setenv(SECRET_ENV, host.secret)
    yield host
    host.close()


class MemoryWatch:
    """The lowest available memory of the host while it is open."""

    def __init__(self) -> None:
        self.before = self.lowest = _mem_available()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.lowest = min(self.lowest, _mem_available())

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ the attacks
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(name: str, host: Host, tmp_path: Path) -> None:
    sandbox = _sandbox(tmp_path)
    if name in NEEDS_CGROUPS and not sandbox.cgroups:
        pytest.skip("no writable cgroup here: the memory of all a sandbox's processes together is not capped")
    source = program(name, **host.placeholders())
    with MemoryWatch() as memory:
        started = time.monotonic()
        outcome = sandbox.run([sys.executable, "solution.py"], files={"solution.py": source}, limits=LIMITS)
        elapsed = time.monotonic() - started
    report = _report(outcome)
    assert not outcome.ok, f"the attack got through: {report[-2000:]}"
    assert "PASSED" not in outcome.stdout
    assert all(evidence in report for evidence in EVIDENCE[name]), report[-2000:]
    assert not outcome.timed_out  # the limits stop them, before the wall clock
    assert elapsed < LIMITS.wall_s + MARGIN_S
    assert host.harm(outcome) == []
    dip_mb = (memory.before - memory.lowest) >> 20
    assert memory.lowest > memory.before - MEMORY_DIP, f"host memory dipped by {dip_mb} MB"
    assert list((tmp_path / "scratch").iterdir()) == []  # the sandbox's own files are gone too


def test_attacks_would_be_seen(host: Host, tmp_path: Path) -> None:
    """Positive controls: the checks above do notice an attack that gets through."""
    # Outside the sandbox, the socket attack (on the host's listeners only) reaches them and passes.
    outside = subprocess.run([sys.executable, "-c", program("socket", **host.placeholders(external=""))],
                             capture_output=True, text=True, timeout=30)
    assert outside.returncode == 0 and "PASSED" in outside.stdout, outside.stderr
    assert sorted(host.connections()) == ["tcp", "tcp", "unix"]
    # Outside, the deletion attack removes (a second set of) canaries.
    doomed = Host(tmp_path / "outside")
    try:
        outside = subprocess.run([sys.executable, "-c", program("delete_files", **doomed.placeholders())],
                                 capture_output=True, text=True, timeout=30)
        assert outside.returncode == 0, outside.stderr
        assert not any(path.exists() for path in doomed.canaries)
    finally:
        doomed.close()
    # A sandbox handed the secret on purpose lets the secret-reading attack pass, and the check sees the leak.
    given = _sandbox(tmp_path)
    outcome = given.run([sys.executable, "solution.py"], limits=LIMITS, env={SECRET_ENV: host.secret},
                        files={"solution.py": program("read_secrets", **host.placeholders())})
    assert outcome.ok and "PASSED" in outcome.stdout, outcome.stderr
    assert host.harm(outcome) == ["the secret leaked into the output"]
    # The host itself has what the sandbox hides: the secret, more of /root, the victim process.
    assert os.environ[SECRET_ENV] == host.secret and host.secret_file.read_text() == host.secret
    visible_home = {Path(p).relative_to("/root").parts[0] for p in given.read_only if p.startswith("/root/")}
    assert set(os.listdir("/root")) - visible_home
    assert _sandbox_processes(host.marker) != []


def test_home_shows_only_mount_points(host: Host, tmp_path: Path) -> None:
    """/root in the sandbox holds only the directories leading to the bound toolchains."""
    sandbox = _sandbox(tmp_path)
    outcome = sandbox.run([sys.executable, "solution.py"], limits=LIMITS,
                          files={"solution.py": program("read_secrets", **host.placeholders())})
    listed = next(line for line in outcome.stdout.splitlines() if line.startswith("home:"))
    visible_home = {Path(p).relative_to("/root").parts[0] for p in sandbox.read_only if p.startswith("/root/")}
    assert listed == f"home: {sorted(visible_home)}"


# ------------------------------------------------------------ benign programs
def test_benign_solution_passes_and_writes_its_own_tmp(tmp_path: Path) -> None:
    source = SOLUTION + CHECK + (
        "import os\n"
        "open('/tmp/own.txt', 'w').write('mine')\n"
        "os.makedirs('/tmp/sub/dir')\n"
        "print(open('own.txt').read(), os.getcwd(), os.environ['HOME'])\n"
    )
    outcome = _sandbox(tmp_path).run([sys.executable, "solution.py"], files={"solution.py": source},
                                     limits=LIMITS, read_back=["own.txt"])
    assert outcome.ok, outcome.stderr
    assert outcome.stdout.splitlines() == ["PASSED", "mine /tmp /tmp"]
    assert outcome.files == {"own.txt": b"mine"}


def test_check_passes(tmp_path: Path) -> None:
    _sandbox(tmp_path).check()


def test_concurrent_sandboxes_get_distinct_uids(tmp_path: Path) -> None:
    sandbox = _sandbox(tmp_path)
    source = "import os, time\nprint(os.getuid())\ntime.sleep(0.5)\n"
    spans: list[tuple[float, float, Outcome]] = []

    def one() -> None:
        started = time.monotonic()
        outcome = sandbox.run([sys.executable, "-c", source], limits=LIMITS)
        spans.append((started, time.monotonic(), outcome))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(outcome.ok for _, _, outcome in spans), [outcome.stderr for _, _, outcome in spans]
    assert max(start for start, _, _ in spans) < min(end for _, end, _ in spans)  # they did overlap
    uids = {int(outcome.stdout) for _, _, outcome in spans}
    assert len(uids) == 4
    if os.geteuid() == 0:
        assert uids <= {slot_uid(slot) for slot in range(sandbox_module._SLOTS_PER_PROCESS)}


# ---------------------------------------------------------------- the limits
def _sandbox_with_cgroups(cgroups: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """A sandbox with a cgroup per run (skipped where the host allows none), or without, as in a pod."""
    sandbox = _sandbox(tmp_path)
    if cgroups and not sandbox.cgroups:
        pytest.skip("no writable cgroup here")
    if not cgroups:
        monkeypatch.setattr(sandbox_module, "_cgroup_host", lambda: None)
    return sandbox


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
def test_timeout_kills_grandchildren(cgroups: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that left the process group and ignores SIGTERM dies with the sandbox at the wall clock."""
    sandbox = _sandbox_with_cgroups(cgroups, tmp_path, monkeypatch)
    marker = f"fusion-sandbox-test-{uuid.uuid4().hex[:12]}"
    source = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)', '{marker}'], start_new_session=True)\n"
        "print('spawned', flush=True)\n"
        "time.sleep(60)\n"
    )
    limits = replace(LIMITS, wall_s=1.5)
    started = time.monotonic()
    outcome = sandbox.run([sys.executable, "-c", source], limits=limits)
    assert time.monotonic() - started < limits.wall_s + MARGIN_S
    assert outcome.timed_out and outcome.exit_code is None and not outcome.ok
    assert outcome.stdout == "spawned\n"
    assert _sandbox_processes(marker) == []


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
def test_a_program_that_ends_takes_everything_it_left_with_it(cgroups: bool, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A double-forked, new-session orphan ignoring SIGTERM neither holds the sandbox nor outlives it."""
    sandbox = _sandbox_with_cgroups(cgroups, tmp_path, monkeypatch)
    marker = f"fusion-sandbox-test-{uuid.uuid4().hex[:12]}"
    source = (
        "import os, signal\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"        os.execv('/bin/sleep', ['/bin/sleep', '60', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('done', flush=True)\n"
    )
    started = time.monotonic()
    outcome = sandbox.run([sys.executable, "-c", source], limits=replace(LIMITS, wall_s=30))
    assert outcome.ok and outcome.stdout == "done\n"
    assert time.monotonic() - started < MARGIN_S
    assert _sandbox_processes(marker) == []


def test_waits_without_pidfd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On kernels without pidfd_open the sandbox polls with Popen.wait: same outcomes."""
    monkeypatch.delattr(os, "pidfd_open")
    sandbox = _sandbox(tmp_path)
    assert sandbox.run(["/bin/sh", "-c", "echo done"], limits=LIMITS).stdout == "done\n"
    started = time.monotonic()
    slept = sandbox.run(["/bin/sleep", "30"], limits=replace(LIMITS, wall_s=0.5))
    assert slept.timed_out and time.monotonic() - started < 0.5 + MARGIN_S


def test_output_flood_is_capped(tmp_path: Path) -> None:
    limits = replace(LIMITS, output_bytes=1000, fsize_mb=8)
    source = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    started = time.monotonic()
    outcome = _sandbox(tmp_path).run([sys.executable, "-c", source], limits=limits)
    assert time.monotonic() - started < limits.wall_s + MARGIN_S
    assert not outcome.ok and "File too large" in outcome.stderr
    assert outcome.stdout == "x" * 1000


def test_a_tree_deeper_than_path_max_is_handled(tmp_path: Path) -> None:
    """A work directory left deeper than PATH_MAX and Python's recursion limit still runs, and goes."""
    sandbox = _sandbox(tmp_path)
    work = sandbox.new_workdir()
    fd = os.open(work, os.O_RDONLY)
    for _ in range(1100):  # 1100 levels, 4400 characters
        os.mkdir("ddd", dir_fd=fd)
        deeper = os.open("ddd", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    os.close(fd)
    try:
        outcome = sandbox.run(["/bin/sh", "-c", "cd ddd/ddd && pwd"], limits=LIMITS, work=work)
        assert outcome.stdout == "/tmp/ddd/ddd\n"
    finally:  # even when the run fails: a tree this deep left in tmp_path breaks pytest's own cleanup later
        sandbox.remove_workdir(work)
    assert not work.exists()


def test_links_left_in_a_work_directory_are_not_followed(host: Host, tmp_path: Path) -> None:
    """A build step plants links; the host's next step writes and reads back through none of them."""
    sandbox = _sandbox(tmp_path)
    work = sandbox.new_workdir()
    try:
        plant = (f"import os\nos.symlink({str(host.secret_file)!r}, 'result.txt')\n"
                 f"os.symlink({str(host.host_dir)!r}, 'sub')\nos.symlink({str(host.canary_file)!r}, 'main.py')\n")
        planted = sandbox.run([sys.executable, "-c", plant], limits=LIMITS, work=work,
                              read_back=["result.txt", "sub/token.txt"])
        assert planted.ok and planted.files == {}
        (host.host_dir / "token.txt").write_text(host.secret)
        run = sandbox.run([sys.executable, "-c", "print(open('result.txt').read())"], limits=LIMITS, work=work,
                          files={"result.txt": "mine", "sub/new.txt": "new", "main.py": "x"},
                          read_back=["result.txt", "sub/token.txt", "sub/new.txt"])
        assert run.ok and run.stdout == "mine\n"
        assert run.files == {"result.txt": b"mine", "sub/new.txt": b"new"}
        assert host.secret_file.read_text() == host.secret
        assert sorted(os.listdir(host.host_dir)) == ["token.txt"]
        assert host.harm(run) == []  # the canary behind main.py among them
    finally:
        sandbox.remove_workdir(work)
    assert not work.exists()


# ------------------------------------------------------------ infrastructure
def test_bwrap_missing_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    with pytest.raises(SandboxError, match="bwrap") as caught:
        Sandbox()
    assert "\n" not in str(caught.value)
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH at all
    with pytest.raises(SandboxError, match="not installed") as caught:
        Sandbox()
    assert "\n" not in str(caught.value)


def test_setup_failure_is_a_sandbox_error(tmp_path: Path) -> None:
    """A real bubblewrap failure raises (a program printing "bwrap: ..." does not: fake_setup_error)."""
    gone = tmp_path / "toolchain"
    gone.mkdir()
    sandbox = _sandbox(tmp_path, gone)
    gone.rmdir()
    with pytest.raises(SandboxError, match="could not start a sandbox: bwrap: Can't find source path") as caught:
        sandbox.run(["/bin/true"], limits=LIMITS)
    assert "\n" not in str(caught.value)
