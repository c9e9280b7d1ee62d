"""Finding and killing every process below this one: shared by the harness programs that run inside a sandbox.

A harness that calls ``PR_SET_CHILD_SUBREAPER`` (:func:`become_subreaper`)
stays the parent of every process its children leave behind, also those that
double-forked or left their session, so :func:`kill_all` can find them all.
Standard library only: the harness programs import this file from their own
directory, started with ``-I -S``. So it scans /proc itself (:func:`children`)
rather than through ``ray_pipeline.core.processes``: the package is not there
inside the sandbox.
"""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option, value):
    """``prctl(option, value)``; False where the call is refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def become_subreaper():
    """Orphans of this process's descendants are re-parented here, not to PID 1."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def children():
    """Pids of this process's children (live or zombie)."""
    me = os.getpid()
    found = set()
    try:
        for tid in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{tid}/children") as fh:
                found.update(int(pid) for pid in fh.read().split())
        return found
    except OSError:  # no children file (an old kernel, a user-space kernel): the parent of every process
        pass
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if int(data[data.rindex(b")") + 2:].split()[1]) == me:
            found.add(int(name))
    return found


def kill_all(program=None):
    """SIGKILL ``program``'s group (if given), then everything below this process; reap until nothing is left."""
    if program is not None:
        try:
            os.killpg(program, signal.SIGKILL)
        except OSError:
            pass
    while True:
        for pid in children():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(-1, 0)  # an orphan of what died is re-parented here before its parent can be reaped
        except ChildProcessError:
            return
        except InterruptedError:
            continue
