"""The process table from /proc: what the embedded teacher's supervisor and the evaluation sandbox use to find
every process below one they started, to tell which are still alive, and to count a user's tasks.

The harness programs that run inside a sandbox (``evaluation/harness/reaping.py``) scan /proc on their own:
they run without this package."""

from __future__ import annotations

import os
from typing import Sequence


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) for every process visible in /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        table[int(name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def process_tree(root: int, pgid: int | None = None) -> set[int]:
    """Live (non-zombie) descendants of ``root``, plus members of process group ``pgid``."""
    table = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    if pgid is not None:
        found.update(pid for pid, (_, group, _) in table.items() if group == pgid)
    return {pid for pid in found if pid in table and table[pid][2] not in ("Z", "X")}


def alive(pids: Sequence[int] | set[int]) -> set[int]:
    """The given pids that still exist and are not zombies."""
    table = proc_table()
    return {pid for pid in pids if pid in table and table[pid][2] not in ("Z", "X")}


def user_task_count(uid: int) -> int:
    """How many processes and threads ``uid`` has (what RLIMIT_NPROC counts), as far as /proc shows."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid == uid:
                count += len(os.listdir(f"/proc/{name}/task"))
        except OSError:  # gone meanwhile
            continue
    return count
