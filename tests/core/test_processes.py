"""The process table from /proc: trees, liveness, a user's task count."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from ray_pipeline.core.processes import alive, process_tree, user_task_count


def _task_count_with_threads(n: int) -> tuple[int, int]:
    """This uid's task count before and while ``n`` more threads of this process run."""
    stop = threading.Event()
    before = user_task_count(os.getuid())
    workers = [threading.Thread(target=stop.wait) for _ in range(n)]
    for worker in workers:
        worker.start()
    try:
        return before, user_task_count(os.getuid())
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def test_user_task_count_counts_threads_not_processes():
    # every thread is a task of this uid (what RLIMIT_NPROC counts); other processes of the uid may come and go
    # meanwhile, so a few tries
    counts = [_task_count_with_threads(16) for _ in range(3)]
    assert any(after - before >= 16 for before, after in counts), counts
    assert all(after >= threading.active_count() for _, after in counts)
    unused = max(os.stat(f"/proc/{p}").st_uid for p in os.listdir("/proc") if p.isdigit()) + 12345
    assert user_task_count(unused) == 0


def test_process_tree_and_alive_see_a_child_until_it_is_reaped():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in process_tree(os.getpid())
        assert alive([child.pid]) == {child.pid}
    finally:
        child.kill()
        child.wait()
    assert child.pid not in process_tree(os.getpid()) and alive([child.pid]) == set()
