"""The parent of one program in pod isolation; runs as its own process, never imported by the pipeline.

Usage (by ``evaluation.sandbox`` in ``isolation: pod``)::

    python -I -S pod_supervisor.py STATUS_FD PARENT_PID -- ARGV...

In bwrap mode a sandbox's PID namespace ends every process the program
started when the sandbox ends. A pod without bubblewrap has no namespace of
its own per program, so this small process takes that role:

1. it becomes a child subreaper: every process below it stays below it, also
   one that left the program's process group or session (an orphan is
   re-parented here, not to the pod's init), so it can always be found;
2. it arms ``PR_SET_PDEATHSIG`` (SIGTERM) and checks its parent is still
   PARENT_PID, so it goes when the scoring process goes;
3. it forks ARGV (``prlimit ... -- program``) in a process group of its own,
   with default signal dispositions (SIGPIPE, SIGXFSZ) and no inherited
   status descriptor, and writes ``{"child-pid": N}`` to STATUS_FD;
4. when the program ends, or on SIGTERM, SIGINT or SIGHUP (the sandbox's
   wall-clock limit or work-directory watch, or the parent's death), it
   SIGKILLs the program's group and then every process left below it,
   reaping until none is left, and re-checks every second that its parent
   is alive;
5. it writes ``{"exit-code": N}`` (the program's exit status, 128 + the
   signal that ended it; 128 + the stop signal when it was stopped) and
   exits with N, as bubblewrap reports a program's end.

Standard library only (and ``reaping.py`` beside it), started with ``-I -S`` so that it starts fast.
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's directory out

from reaping import PR_SET_PDEATHSIG, become_subreaper, kill_all, prctl  # noqa: E402
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: how often the parent's presence is checked while the program runs
PARENT_POLL_S = 1.0


def _reap(program):
    """Reap every child that ended; the program's exit code (128 + signal) if it was among them, else None."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == program:
            exit_code = os.waitstatus_to_exitcode(status)
            code = exit_code if exit_code >= 0 else 128 - exit_code


def _run_program(argv, status_fd):
    """In the forked child: become the program."""
    try:
        os.close(status_fd)
        os.setpgid(0, 0)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *STOP_SIGNALS):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execv(argv[0], argv)
    except BaseException as exc:  # noqa: BLE001 - reported as the program's failure
        os.write(2, f"pod sandbox: cannot execute {argv[0]}: {exc}\n".encode())
    os._exit(127)


def main():
    status_fd, parent = int(sys.argv[1]), int(sys.argv[2])
    argv = sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:]
    become_subreaper()
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, (*STOP_SIGNALS, signal.SIGCHLD))
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        os._exit(1)
    program = os.fork()
    if program == 0:
        _run_program(argv, status_fd)
    os.write(status_fd, (json.dumps({"child-pid": program}) + "\n").encode())
    code, stopped_by = None, None
    while True:
        code = _reap(program)
        if code is not None:
            break
        info = signal.sigtimedwait((*STOP_SIGNALS, signal.SIGCHLD), PARENT_POLL_S)
        if info is not None and info.si_signo != signal.SIGCHLD:
            stopped_by = info.si_signo
        elif os.getppid() != parent:  # PDEATHSIG follows the parent's thread; this catches the rest
            stopped_by = signal.SIGTERM
        if stopped_by is not None:
            break
    kill_all(program)
    if code is None:
        code = 128 + stopped_by
    os.write(status_fd, (json.dumps({"exit-code": code}) + "\n").encode())
    os._exit(code)


if __name__ == "__main__":
    main()
