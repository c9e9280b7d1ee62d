"""Runs one Python solution on evalplus inputs INSIDE the sandbox and writes its outputs; decides nothing.

Usage (by ``executors.evalplus``)::

    python -I -S evalplus_run.py EVALPLUS_UTILS_PY [SYS_PATH_DIR ...]

with two pickles on stdin: the request (``solution``, ``entry_point``,
``fast_check``, ``memory_bytes``: evalplus's RLIMIT_AS for the solution, or
None, ``not_none``: an MBPP+ task whose oracle only asks whether the output is
not None, ``preload``: modules to import before the guard, as evalplus's
process has them), then the task's phases, each with ``name`` (``base``/``plus``), ``inputs``,
``time_limits`` (one per input) and ``timeout`` (evalplus's limit of the whole
phase). The expected outputs are never sent here: the verdict is made outside
the sandbox, by a process that runs no model code (``evaluation.evalplus_oracle``).

Each phase runs in a fresh child process, as ``evalplus.eval.untrusted_check``
runs ``unsafe_execute``: in a temporary directory, under evalplus's own
``reliability_guard`` (its memory limit, its disabled functions), the solution
``exec``-ed with evalplus's ``swallow_io``, and each input called under
evalplus's ``time_limit``. These helpers come from evalplus's ``eval/utils.py``,
loaded by path (importing the ``evalplus`` package would import NumPy and
psutil: a quarter of a second per solution). After each call the output is
written as one line of ``<phase>.out`` in the working directory:
``{"o": <plain value>}`` (``plain_values``), or ``{"x": "<exception>"}`` when
the call raised or timed out, or the output is not plain data; then, after the
last input, ``{"end": "done"}``, or ``{"end": "failed", "why": ...}`` when the
solution could not be loaded, or (fast check) an input raised. The program's
own stdout and stderr go to /dev/null.

This process waits ``timeout + 1`` seconds for each child (evalplus's
``join``), or until the scoring process, which judges the lines as they come,
creates ``<phase>.stop`` (the phase has failed: evalplus stops at the first
failing input, and so the phase ends there); it kills the child if it is still
running and, being a child subreaper, every process the child left behind
(double-forked, new session, signals ignored) before the next phase starts,
so no leftover slows or taints it. On its stdout it writes ``{"phase": ...,
"exit": N}`` or ``{"phase": ..., "killed": "timeout" | "stopped"}`` per phase:
only a description, never a verdict. Nothing
written here, by this process or by the solution, can make a solution pass:
the outputs are compared with the expected ones outside, and a missing or
malformed line is a failure.
"""

import importlib.util
import json
import os
import pickle
import sys
import time

HARNESS_DIR = os.path.dirname(os.path.abspath(__file__))
#: how often the parent looks whether a phase's child has ended
_POLL_S = 0.002


def _load_utils(path):
    """evalplus's ``eval/utils.py`` as a module of its own (standard library imports only)."""
    spec = importlib.util.spec_from_file_location("evalplus_eval_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(request, phase, out_fd, utils, plain_values):
    """In the forked child: ``unsafe_execute``'s steps; the outputs go to ``out_fd``. Never returns."""
    # kept before the solution runs: what it patches later does not change how lines are written
    write, dumps, text, exit_now = os.write, plain_values.dumps, json.dumps, os._exit
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(quiet, fd)

    def emit(line):  # ASCII (dumps escapes the rest); a short write, if any, is completed
        data = memoryview(line.encode("ascii") + b"\n")
        while data:
            data = data[write(out_fd, data):]

    def failure(exc):  # the exception's type only: its message would run the solution's code
        return '{"x":' + text(type(exc).__name__[:100]) + "}"

    not_none, fast_check = request["not_none"], request["fast_check"]
    inputs, time_limits = phase["inputs"], phase["time_limits"]
    try:
        with utils.create_tempdir():
            import shutil

            rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir  # the temporary directory's clean-up needs them
            utils.reliability_guard(maximum_memory_bytes=request["memory_bytes"])
            exec_globals = {}
            try:
                with utils.swallow_io():
                    exec(request["solution"], exec_globals)
                    fn = exec_globals[request["entry_point"]]
                for i, inp in enumerate(inputs):
                    try:
                        with utils.time_limit(time_limits[i]):
                            with utils.swallow_io():
                                out = fn(*inp)
                        if not_none and not isinstance(out, bool):
                            out = out is not None
                        line = '{"o":' + dumps(out) + "}"
                    except BaseException as exc:  # noqa: BLE001 - the solution's failure on this input
                        emit(failure(exc))
                        if fast_check:
                            raise
                        continue
                    emit(line)
                emit('{"end":"done"}')
            except BaseException as exc:  # noqa: BLE001 - as unsafe_execute: the phase failed
                emit('{"end":"failed","why":' + text(type(exc).__name__[:100]) + "}")
            shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir
    except BaseException:  # noqa: BLE001 - the temporary directory's clean-up; the lines are written
        pass
    exit_now(0)


def _wait(pid, seconds, stop_file):
    """How the child ended: ``{"exit": N}`` (negative: killed by signal -N), or, while it still runs,
    ``{"killed": "timeout"}`` after ``seconds`` or ``{"killed": "stopped"}`` once ``stop_file`` exists."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return {"exit": os.waitstatus_to_exitcode(status)}
        if os.path.exists(stop_file):
            return {"killed": "stopped"}
        if time.monotonic() >= deadline:
            return {"killed": "timeout"}
        time.sleep(_POLL_S)


def main():
    utils_path = sys.argv[1]
    sys.path[:0] = [HARNESS_DIR] + sys.argv[2:]  # the harness's modules, then where the solution imports from
    import plain_values
    import reaping

    utils = _load_utils(utils_path)
    for module in ("resource", "shutil", "subprocess", "tempfile", "platform", "faulthandler"):
        __import__(module)  # reliability_guard imports these: once here, not in every child
    request = pickle.load(sys.stdin.buffer)
    request["phases"] = pickle.load(sys.stdin.buffer)
    for module in request["preload"]:  # loaded before reliability_guard, as in evalplus's process
        try:
            __import__(module)
        except BaseException:  # noqa: BLE001 - the solution's own import then fails as it would
            pass
    reaping.become_subreaper()
    report = sys.stdout
    for phase in request["phases"]:
        out_fd = os.open(phase["name"] + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        pid = os.fork()
        if pid == 0:
            _child(request, phase, out_fd, utils, plain_values)
        os.close(out_fd)
        ended = _wait(pid, phase["timeout"] + 1, phase["name"] + ".stop")
        reaping.kill_all(pid)  # the child if it still runs (evalplus's terminate/kill), and all it left
        report.write(json.dumps({"phase": phase["name"], **ended}) + "\n")
        report.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
