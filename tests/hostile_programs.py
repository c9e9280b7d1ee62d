"""Hostile "solutions": of HumanEval/0 that attack the machine they run on, of HumanEval/2 that forge their verdict.

Each program in :data:`HOSTILE` defines a correct ``has_close_elements`` and
attacks at module level first. When the attack is contained, the exception it
meets propagates (or the sandbox kills it), so the solution fails; an attack
that gets through lets the program reach :data:`CHECK` and pass. The test
fills the ``{placeholders}`` with ``str.format`` (so the programs use no other
braces) and checks on the host that nothing was harmed. The two attacks that
would take the test machine down if the sandbox failed (a fork bomb as root,
killing every process in sight of the host's) check for that failure first and
then pass without attacking, so a broken sandbox fails the test, not the machine.

Placeholders: ``port`` (a TCP listener of the host), ``host_ip`` (the host's
own address), ``external`` (internet addresses, as Python tuples), ``unix_name``
(an abstract unix socket of the host),
``host_dir`` (a directory of the host's /tmp), ``project`` (the repository),
``canary_file``, ``canary_dir``, ``project_canary`` and ``system_canary``
(host files to delete: in the host's /tmp, in the repository, under /usr), ``secret_env`` and ``secret_file``
(where the host keeps a secret), ``victim_pid`` (a host process).
"""

from __future__ import annotations

SOLUTION = '''
def has_close_elements(numbers, threshold):
    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])
'''

#: appended to every program: passes only if the module got this far
CHECK = '''
assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3)
assert not has_close_elements([1.0, 2.0, 3.0], 0.5)
print("PASSED")
'''

HOSTILE: dict[str, str] = {
    # reach the host's listeners and the internet
    "socket": '''
import socket
targets = [("127.0.0.1", {port}), ("{host_ip}", {port}), {external}]
reached = []
for target in targets:
    try:
        socket.create_connection(target, timeout=0.5).sendall(b"escaped")
        reached.append(target)
    except OSError as exc:
        print("blocked:", target, exc)
        error = exc
try:
    unix = socket.socket(socket.AF_UNIX)
    unix.connect("\\0{unix_name}")
    reached.append("unix")
except OSError as exc:
    print("blocked: unix", exc)
    error = exc
print("reached:", reached)
if not reached:
    raise error
''',
    # processes without end: the process limit stops fork
    "fork_bomb": '''
import os
if os.getuid() == 0:  # root ignores the process limit: a fork bomb would take the machine down
    print("escaped: root in the sandbox")
else:
    while True:
        os.fork()
''',
    # threads without end: the process (task) and address-space limits stop them
    "thread_bomb": '''
import threading, time
while True:
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
''',
    # write where a program must not
    "write_outside": '''
written = []
for path in ["/etc/fusion_pwned", "/usr/fusion_pwned", "/usr/bin/fusion_pwned", "/fusion_pwned",
             "/root/fusion_pwned", "{project}/fusion_pwned", "{host_dir}/fusion_pwned"]:
    try:
        with open(path, "w") as fh:
            fh.write("pwned")
        written.append(path)
    except OSError as exc:
        print("blocked:", path, exc)
        error = exc
print("written:", written)
if not written:
    raise error
''',
    # steal the host's secrets: its environment, its files, its home
    "read_secrets": '''
import os
found = []
if os.environ.get("{secret_env}"):
    found.append("env: " + os.environ["{secret_env}"])
for path in ["{secret_file}", "/root/.ssh/id_rsa", "/root/.ssh/authorized_keys", "/root/.bash_history",
             "/root/.gitconfig", "/etc/shadow", "/proc/1/environ"]:
    try:
        with open(path, errors="replace") as fh:
            # the test's own secret in full; of a real secret only its name, to keep it out of test logs
            found.append(fh.read() if path == "{secret_file}" else "readable: " + path)
    except OSError as exc:
        print("blocked:", path, exc)
        error = exc
print("home:", sorted(os.listdir("/root")))
print("found:", found)
if not found:
    raise error
''',
    # spin until killed: the CPU limit (or the wall clock) ends it
    "infinite_loop": '''
while True:
    pass
''',
    # allocate without end: the address-space limit raises MemoryError
    "memory_bomb": '''
chunks = []
while True:
    chunks.append(bytearray(64 << 20))
''',
    # each child under the address-space limit, all of them together far over the sandbox's memory
    "fork_memory_bomb": '''
import os, time
children = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (400 << 20)
        time.sleep(1)
        os._exit(0)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
if any(statuses):
    raise MemoryError("children were killed: " + repr(statuses))
''',
    # System V shared memory outlives its mapping, so the address-space limit never sees it
    "shm_bomb": '''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
for _ in range(8):
    segment = libc.shmget(0, 400 << 20, 0o1600)
    if segment < 0:
        raise OSError(ctypes.get_errno(), "shmget")
    address = libc.shmat(segment, None, 0)
    ctypes.memset(address, 1, 400 << 20)
    libc.shmdt(ctypes.c_void_p(address))
''',
    # one endless file: the file-size limit stops it (Python ignores SIGXFSZ, so write raises)
    "disk_fill": '''
with open("fill", "wb") as fh:
    while True:
        fh.write(b"x" * (1 << 20))
''',
    # many files, each under the file-size limit: the work directory's size limit stops them
    "many_files": '''
import itertools
for n in itertools.count():
    with open("fill%d" % n, "wb") as fh:
        fh.write(b"x" * (30 << 20))
''',
    # a tree deeper than the host's recursion limit and PATH_MAX, to break the host's clean-up
    "deep_tree": '''
import os
while True:
    os.mkdir("d")
    os.chdir("d")
''',
    # delete what belongs to the host
    "delete_files": '''
import os, shutil, subprocess
deleted = []
for path in ["{canary_file}", "{system_canary}", "{project_canary}"]:
    try:
        os.remove(path)
        deleted.append(path)
    except OSError as exc:
        print("blocked:", path, exc)
        error = exc
try:
    shutil.rmtree("{canary_dir}")
    deleted.append("{canary_dir}")
except OSError as exc:
    print("blocked:", "{canary_dir}", exc)
    error = exc
rm = subprocess.run(["rm", "-rf", "{canary_dir}", "{canary_file}", "{system_canary}", "{project_canary}"],
                    capture_output=True)
if rm.returncode == 0 and not os.path.exists("{canary_dir}"):
    deleted.append("rm -rf")
print("deleted:", deleted)
if not deleted:
    raise error
''',
    # kill the host's processes: every pid it can see, a host pid, and everything at once
    "kill_host": '''
import os, signal
pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
if {victim_pid} in pids:  # the host's processes are in sight: killing them all would end the test run
    print("escaped: the host's processes are visible")
else:
    killed = []
    for pid in [1, {victim_pid}] + pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError as exc:
            print("blocked:", pid, exc)
            error = exc
    print("killed:", killed)
    if not killed:
        raise error
''',
    # pretend to be bubblewrap failing, so the evaluator takes the sandbox for broken
    "fake_setup_error": '''
import sys
print("bwrap: Can't mount proc on /newroot/proc: Operation not permitted", file=sys.stderr)
sys.exit(1)
''',
}


def program(name: str, **placeholders: object) -> str:
    """The full program: the attack, the solution, the check."""
    return HOSTILE[name].format(**placeholders) + SOLUTION + CHECK


#: Solutions of HumanEval/2 (``truncate_number``) that compute no right answer and try to pass anyway, by forging
#: the verdict instead. Not formatted (no placeholders). :data:`FORGES_EVALPLUS` names those that do pass under
#: evalplus's own checker, which compares in the process that runs the solution (the positive control).
FORGERIES: dict[str, str] = {
    # an output that says it equals anything
    "eq_always_true": '''
def truncate_number(number):
    class Anything:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        __hash__ = object.__hash__
    return Anything()
''',
    # a float that says it equals anything, holding a wrong value
    "float_subclass": '''
def truncate_number(number):
    class Liar(float):
        def __eq__(self, other):
            return True
        __hash__ = float.__hash__
    return Liar(-1.0)
''',
    # the checker's float comparison patched
    "patch_allclose": '''
import numpy
numpy.allclose = lambda *args, **kwargs: True
def truncate_number(number):
    return -1.0
''',
    # the expected outputs read from the checker's own frames
    "read_expected": '''
import sys
def truncate_number(number):
    frame = sys._getframe(1)
    while frame is not None:
        if "expected" in frame.f_locals and "i" in frame.f_locals:
            return frame.f_locals["expected"][frame.f_locals["i"]]
        frame = frame.f_back
    return -1.0
''',
    # the runner's output writer patched, to write a constant whatever the solution returns
    "patch_writer": '''
import sys
for module in list(sys.modules.values()):
    if hasattr(module, "dumps") and hasattr(module, "to_plain"):
        module.dumps = lambda value: "0.5"
def truncate_number(number):
    return -1.0
''',
    # a passing verdict printed on every descriptor and on stdout, then an exit with status 0 before any input
    "fake_report": '''
import os
LINES = (b'{"end":"done"}\\n', b'{"phase":"base","exit":0}\\n', b'{"phase":"plus","exit":0}\\n',
         b'{"base": {"status": "pass", "done": 3, "failed_at": null, "total": 3}, "plus": null}\\n')
for fd in range(1, 64):
    for line in LINES:
        try:
            os.write(fd, line)
        except OSError:
            pass
print('{"base": {"status": "pass"}, "plus": {"status": "pass"}}')
os._exit(0)
def truncate_number(number):
    return -1.0
''',
    # an exit with status 0 as soon as the function is called
    "exit_zero": '''
def truncate_number(number):
    import posix
    posix._exit(0)
''',
    # SystemExit(0) from the function
    "system_exit": '''
def truncate_number(number):
    raise SystemExit(0)
''',
    # the runner's parent killed, so that it never reports the phase
    "kill_runner": '''
import posix, signal
def truncate_number(number):
    posix.kill(posix.getppid(), signal.SIGKILL)
    return -1.0
''',
}
FORGES_EVALPLUS = {"eq_always_true", "float_subclass", "patch_allclose", "read_expected"}

#: a correct HumanEval/2 solution that leaves behind a double-forked, new-session process ignoring SIGTERM;
#: ``{marker}`` is in its command line (evalplus's join waits for it to close an inherited pipe: its whole timeout)
ORPHAN = '''
import posix, signal, time
if posix.fork() == 0:
    posix.setsid()
    if posix.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        posix.execv("/bin/sleep", ["/bin/sleep", "60", "{marker}"])
    posix._exit(0)

def truncate_number(number):
    return number % 1.0
'''
