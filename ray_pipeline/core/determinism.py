"""Every random choice of a run derives from the job's ``seed`` through ``derived_seed``.

A derived seed depends only on its parts (job seed, stage, ids), never on
batching, scheduling or how far an earlier run got, so a resumed or rescheduled
run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib


def derived_seed(*parts: object) -> int:
    """A 32-bit seed that depends only on ``parts``."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")
