"""evalplus's checker for one solution; runs INSIDE the sandbox, never imported by the pipeline.

Usage (by ``executors.evalplus``): ``python -I -S evalplus_check.py [SYS_PATH_DIR ...]``
with two pickles on stdin: the request (dataset, solution, entry_point, atol,
min_time_limit, gt_time_limit_factor, fast_check, base_only) and the task
(base/plus inputs, expected outputs and reference times). The directories on
the command line (those holding evalplus and numpy) go first on ``sys.path``, as
the interpreter starts without ``site`` to start fast.

It calls ``evalplus.eval.untrusted_check`` on the base inputs, then, unless
base_only, on the plus inputs, exactly as ``evalplus.evaluate.check_correctness``
does, and writes one JSON line to its original stdout::

    {"base": {"status": "pass", "done": 3, "failed_at": null, "total": 3}, "plus": {...} or null}

``done`` is the length of evalplus's details (inputs run), ``failed_at`` the
index of the first failing input among them; ``{"error": "..."}`` if the check
itself raised. The solution's own output never reaches that stream (fds 1 and 2
point to /dev/null while evalplus runs it). The memory limit evalplus sets in
its child comes from ``EVALPLUS_MAX_MEMORY_BYTES``, which the executor sets to
the sandbox's own limit. Like evalplus's, the verdict is only as trustworthy as
its child allows: a hostile solution shares the checker's memory and
descriptors and could forge it; the sandbox protects the host, not the score.
"""

import gc
import json
import os
import pickle
import sys


def _summary(result, total):
    status, details = result
    details = [bool(d) for d in details]
    failed_at = details.index(False) if False in details else None
    return {"status": status, "done": len(details), "failed_at": failed_at, "total": total}


def check(untrusted_check, request, task):
    """evalplus.evaluate.check_correctness's two calls, summarised."""
    report = {"base": None, "plus": None}
    for phase in ("base",) if request["base_only"] else ("base", "plus"):
        result = untrusted_check(
            request["dataset"],
            request["solution"],
            task[f"{phase}_input"],
            request["entry_point"],
            expected=task[phase],
            atol=request["atol"],
            ref_time=task[f"{phase}_time"],
            fast_check=request["fast_check"],
            min_time_limit=request["min_time_limit"],
            gt_time_limit_factor=request["gt_time_limit_factor"],
        )
        report[phase] = _summary(result, len(task[f"{phase}_input"]))
    return report


def main():
    sys.path[:0] = sys.argv[1:]
    gc.disable()  # a large task (HumanEval/15: 147 MB of expected output) loads much faster
    request = pickle.load(sys.stdin.buffer)
    task = pickle.load(sys.stdin.buffer)
    gc.enable()  # the solution runs with the collector on, as in evalplus
    from evalplus.eval import untrusted_check

    for module in ("resource", "shutil", "subprocess"):  # evalplus's children import these in
        __import__(module)  # reliability_guard: imported here once, not in each of its two children

    out = os.dup(1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    try:
        report = check(untrusted_check, request, task)
    except BaseException as exc:  # reported as a failed check, with the reason
        report = {"error": f"{type(exc).__name__}: {exc}"}
    os.write(out, (json.dumps(report) + "\n").encode())
    os._exit(0)  # evalplus has ended its children; skip the interpreter's teardown of the task's data


if __name__ == "__main__":
    main()
