"""The run directory a TaCIE job leaves: the pool, its attempts, metrics, SFT files and the manifest.

* ``<job>.parquet``: every item (``items.ITEM_SCHEMA``), kept or not, with why it was removed;
* ``attempts.parquet``: one ``Attempt`` per teacher call;
* ``metrics.json``: each round's metrics, diversity U (eq. 8-10) of seeds, evolved, all and kept items,
  and the filter counts;
* ``sft_messages.jsonl`` / ``sft_alpaca.jsonl``: the kept items as chat messages and Alpaca rows;
* ``manifest.json``: config, versions, templates, seeds, round-0 records, counts, tokens and cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ray_pipeline.methods.tacie.config import TaCIEJob
from ray_pipeline.core.outputs import RunDir, manifest_header
from ray_pipeline.core.seeds import SeedPool
from ray_pipeline.methods.tacie.attempts import Attempt, attempts_table
from ray_pipeline.methods.tacie.checkpoints import RunState
from ray_pipeline.methods.tacie.items import TaCIEItem, items_table
from ray_pipeline.methods.tacie.metrics import json_safe, pool_counts, pool_diversity
from ray_pipeline.methods.tacie.operations import OPERATIONS
from ray_pipeline.prompts import PromptTemplate
from ray_pipeline.teachers.calls import CallTally
from ray_pipeline.teachers.estimate import beside_actual
from ray_pipeline.teachers.pricing import cost_usd, price_for
from ray_pipeline.methods.tacie.estimate import calls_by_phase


@dataclass
class RunRecord:
    """What the manifest reports besides the pool: the job as run, where, with which teacher and scorer."""

    job: TaCIEJob
    config: dict[str, Any]
    cluster: Any
    model: str
    scorer_model: str
    templates: dict[str, PromptTemplate]
    pool: SeedPool
    state: RunState
    tally: CallTally
    t0: float
    estimate: dict[str, Any] | None = None  # the cost estimate made before the run (methods/tacie/estimate.py)


def write_outputs(run: RunDir, rec: RunRecord, items: list[TaCIEItem], attempts: list[Attempt],
                  filters: dict[str, Any]) -> dict[str, Any]:
    """Write the run's files (the manifest last) and return the manifest."""
    job = rec.job
    for it in items:
        it.teacher_model = rec.model
    metrics = {"rounds": rec.state.rounds, "diversity": pool_diversity(items), "filters": filters}
    kept = [it for it in items if it.kept]
    run.write_table(job.name, items_table(items))
    run.write_table("attempts", attempts_table(attempts))
    run.write_json("metrics.json", json_safe(metrics))
    run.write_jsonl("sft_messages.jsonl", (
        {"id": it.id, "messages": [{"role": "user", "content": it.instruction},
                                   {"role": "assistant", "content": it.response}]}
        for it in kept
    ))
    run.write_jsonl("sft_alpaca.jsonl", (
        {"id": it.id, "instruction": it.instruction, "input": "", "output": it.response} for it in kept
    ))
    manifest = json_safe(_manifest(rec, items, attempts, filters, metrics["diversity"]))
    run.write_manifest(manifest)
    return manifest


def _manifest(rec: RunRecord, items: list[TaCIEItem], attempts: list[Attempt], filters: dict[str, Any],
              diversity: dict[str, Any]) -> dict[str, Any]:
    job, tally, state = rec.job, rec.tally, rec.state
    price = price_for(rec.model, getattr(job.teacher, "price", None))
    tokens = {"prompt": sum(a.prompt_tokens for a in attempts), "completion": sum(a.completion_tokens for a in attempts)}
    rounds_done = state.rounds[-1]["round"] if state.rounds else 0
    wall_s = round(time.monotonic() - rec.t0, 3)
    cost = cost_usd(price, tokens["prompt"], tokens["completion"])
    return {
        **manifest_header(rec.config, rec.cluster, wall_s),
        "teacher": {"kind": job.teacher.kind, "model": rec.model},
        "scorer": {"backend": job.scorer.backend, "model": str(rec.scorer_model),
                   "num_perturbations": job.scorer.num_perturbations, "drop_prob": job.scorer.drop_prob},
        "templates": {k: t.record() for k, t in rec.templates.items()},
        "seeds": rec.pool.summary(),
        "collection": state.collection,
        "root_domains": state.root_domains,
        "diversification": state.diversification,
        "rounds_requested": job.evolution.rounds,
        "rounds_completed": rounds_done,
        "complete": rounds_done == job.evolution.rounds,
        "counts": pool_counts(items, attempts, OPERATIONS),
        "filters": filters,
        "diversity": diversity,
        "diversity_metric": "euclidean",  # d_i of eq. 9
        "tokens": tokens,
        "this_run": {"calls": tally.calls, "retries": tally.retries, "cache_hits": tally.cache_hits,
                     "prompt": tally.spent_prompt, "completion": tally.spent_completion},
        "cost_usd": cost,
        "cost_usd_this_run": cost_usd(price, tally.spent_prompt, tally.spent_completion),
        "estimate": beside_actual(rec.estimate, calls_by_phase([a.operation for a in attempts]), tokens, cost, wall_s),
        "outputs": {
            "items": f"{job.name}.parquet",
            "attempts": "attempts.parquet",
            "metrics": "metrics.json",
            "sft_messages": "sft_messages.jsonl",
            "sft_alpaca": "sft_alpaca.jsonl",
            "checkpoints": "checkpoints/",
        },
    }


__all__ = ["RunRecord", "write_outputs"]
