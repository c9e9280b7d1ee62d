"""Round checkpoints of a TaCIE run, and resuming from them.

After every finished round the pool (``TaCIEItem`` rows), the attempts so far and the run state are
saved under ``checkpoints/``; a rerun of the same job resumes after the last saved round (the teacher
calls inside an unfinished round come back from the call cache). ``RunState`` is what the rounds carry
besides the pool: the metrics of each round, the fusion pairs already used, and the round-0 records.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ray_pipeline.core.errors import FusionError
from ray_pipeline.core.outputs import RunDir
from ray_pipeline.methods.tacie.attempts import Attempt, attempts_from_table, attempts_table
from ray_pipeline.methods.tacie.items import TaCIEItem, items_from_table, items_table

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """The run's state besides its pool and attempts, as ``state.json`` keeps it."""

    config_hash: str = ""
    teacher_model: str = ""
    #: one metrics record per finished round (``metrics.round_metrics``)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: fusion pairs drawn so far (``sampling.pair_key``), for ``evolution.exclude_used_pairs``
    used_pairs: set[tuple[str, str]] = field(default_factory=set)
    #: round 0: seeds chosen per source (clustering), root domain per source, diversification counts
    collection: dict[str, Any] = field(default_factory=dict)
    root_domains: dict[str, str] = field(default_factory=dict)
    diversification: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "config_hash": self.config_hash,
            "teacher_model": self.teacher_model,
            "rounds": self.rounds,
            "used_pairs": sorted(list(p) for p in self.used_pairs),
            "collection": self.collection,
            "root_domains": self.root_domains,
            "diversification": self.diversification,
        }

    @classmethod
    def from_json(cls, state: dict[str, Any], round_no: int) -> "RunState":
        """The state after round ``round_no`` (later rounds' metrics, if any, are dropped)."""
        return cls(
            config_hash=state.get("config_hash", ""),
            teacher_model=state.get("teacher_model", ""),
            rounds=state["rounds"][: round_no + 1],
            used_pairs={tuple(p) for p in state["used_pairs"]},
            collection=state.get("collection", {}),
            root_domains=state.get("root_domains", {}),
            diversification=state.get("diversification", {}),
        )


@dataclass
class Resumed:
    """A run read back from its checkpoints: the last finished round, its pool, attempts and state."""

    round: int
    items: list[TaCIEItem]
    attempts: list[Attempt]
    state: RunState


class Checkpoint:
    """``checkpoints/`` of a run: the pool and attempts after each finished round, and a state file naming the last.

    The round's Parquet files are written first and ``state.json`` last (each atomically), so a crash
    between them leaves the previous state pointing at the previous, complete round.
    """

    def __init__(self, run: RunDir):
        self.run = run
        self.dir = run.path / "checkpoints"
        self.state_path = self.dir / "state.json"

    def save(self, round_no: int, items: list[TaCIEItem], attempts: list[Attempt], state: RunState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run.write_table(f"checkpoints/round-{round_no:02d}.items", items_table(items))
        self.run.write_table(f"checkpoints/round-{round_no:02d}.attempts", attempts_table(attempts))
        self.run.write_json("checkpoints/state.json", {"round": round_no, **state.to_json()})

    def load(self) -> Resumed | None:
        """The last saved round, or None when there is none; an unreadable one is a one-line ``FusionError``."""
        if not self.state_path.is_file():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            round_no = int(state.pop("round"))
            items = items_from_table(pq.read_table(self.dir / f"round-{round_no:02d}.items.parquet"))
            attempts = attempts_from_table(pq.read_table(self.dir / f"round-{round_no:02d}.attempts.parquet"))
            run_state = RunState.from_json(state, round_no)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
            raise FusionError(f"{self.dir}: checkpoint unreadable ({err}); move it away to start the rounds again") from None
        return Resumed(round_no, items, attempts, run_state)

    def resume(self, config_hash: str) -> Resumed | None:
        """The saved rounds of this job (by its config hash), or None: nothing saved, or another job's rounds."""
        loaded = self.load()
        if loaded is None:
            return None
        if loaded.state.config_hash != config_hash:  # another job's rounds (the directory was reused with --force)
            log.warning("%s holds another job's rounds; starting the rounds again", self.dir)
            return None
        log.info("resuming after round %d: %d items in the pool", loaded.round, len(loaded.items))
        return loaded


__all__ = ["Checkpoint", "RunState", "Resumed"]
