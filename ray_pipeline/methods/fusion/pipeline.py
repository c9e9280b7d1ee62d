"""Instruction Fusion (Guo et al., 2023) from a seed pool to an SFT dataset.

1. Read and normalise the seed pool (``seeds.load_seeds``).
2. Fusion as a stream (``loop.FusionLoop``): draw random pairs of distinct
   seeds (``pairing``) in a fixed order, render the fusion template, keep the
   teacher's calls in flight (``teachers.pool``), parse each answer
   (``parsing.parse_fusion``). Invalid or unparsable fusions are discarded and
   new pairs drawn, until M fused instructions exist or the attempt budget is
   spent; no pair is drawn that the valid ones so far plus those in flight
   could make unnecessary.
3. One response per chosen fused instruction (a second teacher call), asked
   as soon as it is chosen, while fusion goes on.
4. Write the run directory (``outputs.RunDir``): Parquet with every attempt and
   its lineage, SFT JSONL in two shapes, and a manifest.

Every teacher call goes through ``teachers.calls.TeacherCalls``: calls are
cached by content in the run directory, so a run that is killed and started
again draws the same pairs, answers them from the cache, and calls the teacher
only for what it had not done; the teacher starts at the first call the cache
cannot answer, so a finished job's rerun starts none. The manifest's token and
call counts are that object's ``CallTally``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from ray_pipeline.teachers.cache import load_cache
from ray_pipeline.core.config import EmbeddingConfig, job_to_dict
from ray_pipeline.methods.fusion.config import InstructionFusionJob
from ray_pipeline.analysis.diversity import diversity_u
from ray_pipeline.analysis.embeddings import embed_texts
from ray_pipeline.core.errors import SeedError
from ray_pipeline.core.executor import connect
from ray_pipeline.core.outputs import RunDir, manifest_header
from ray_pipeline.methods.fusion.loop import FusionLoop, FusionResult, Outcomes
from ray_pipeline.methods.fusion.pairing import PairSampler
from ray_pipeline.prompts.parsing import OUTCOMES
from ray_pipeline.teachers.calls import DEAD_TEACHER_STREAK, CallTally, RequestBuilder, TeacherCalls
from ray_pipeline.prompts import PromptTemplate, load_template, warn_not_from_papers
from ray_pipeline.core.seeds import load_seeds, seed_prompt
from ray_pipeline.teachers.factory import configured_model_name
from ray_pipeline.teachers.rows import RESULT_TYPES, Answer
from ray_pipeline.teachers.pricing import cost_usd, price_for
from ray_pipeline.teachers.estimate import beside_actual
from ray_pipeline.methods.fusion.estimate import fusion_estimate

log = logging.getLogger(__name__)


def pool_diversity(seeds: list[str], fused: list[str], embedding: EmbeddingConfig) -> dict[str, Any]:
    """The IF paper's uniformity U (section 3; TaCIE eq. 8-10) of the seed pool, the fused
    instructions and the two together (the paper's C_30 vs C_30 + H_20); None below 3 texts."""
    vectors = embed_texts(seeds + fused, embedding)  # one pass; the pool always holds two seeds or more
    parts = {"seeds": vectors[: len(seeds)], "fused": vectors[len(seeds):], "seeds_and_fused": vectors}
    return {"metric": "euclidean"} | {
        name: float(diversity_u(X)) if len(X) >= 3 else None for name, X in parts.items()
    } | {"n": {name: len(X) for name, X in parts.items()}}


class InstructionFusionRun:
    def __init__(self, job: InstructionFusionJob, address: str | None = None, force: bool = False):
        self.job = job
        self.address = address
        self.force = force
        self.run = RunDir(job.run_dir())

    # ------------------------------------------------------------------ main
    def execute(self) -> dict[str, Any]:
        t0 = time.monotonic()
        job = self.job
        config = job_to_dict(job)
        self.run.check_compatible(config, self.force)
        fusion_tpl = load_template(job.fusion.template)
        response_tpl = load_template(job.response.template)
        warn_not_from_papers({"fusion": fusion_tpl})  # the paper gives no response prompt

        pool = load_seeds(job.seeds, seed=job.seed)
        seeds = pool.records
        if len(seeds) < 2:
            raise SeedError(
                f"instruction fusion needs at least 2 distinct seeds; the pool has {len(seeds)} "
                f"(after removing {pool.duplicates_removed} duplicates)"
            )
        sampler = PairSampler([s["language"] for s in seeds], seed=job.seed, cross_language=job.fusion.cross_language)
        if sampler.total == 0:
            raise SeedError("no seed pair is allowed: every seed names a different language and cross_language is false")

        estimate = fusion_estimate(job, seeds).to_dict()  # made before anything is paid; the manifest adds the spend
        cluster = connect(self.address or job.ray.address)
        cache = load_cache(self.run.cache_dir)
        if cache:
            log.info("resuming: %d teacher calls already in the cache", len(cache))
        model = configured_model_name(job.teacher)
        fusion = RequestBuilder(fusion_tpl, job.fusion.sampling, model, cache)
        respond = RequestBuilder(response_tpl, job.response.sampling, model, cache)

        # the teacher starts at the first call the cache cannot answer: a rerun of a finished job starts none;
        # its preflight comes before the run directory starts: an unreachable one fails before anything is written
        with TeacherCalls.lazy(job.teacher, job.ray, self.run.cache_dir, self.run.log_dir,
                               on_start=lambda: self.run.start(config)) as calls:
            result = self._fuse(calls, fusion, respond, seeds, sampler)
        self.run.start(config)
        rows = result.rows
        table = _to_table(rows, fusion_tpl, response_tpl, model)
        sft = [r for r in rows if r["outcome"] == "ok"]
        self.run.write_table(job.name, table)
        self.run.write_jsonl("sft_messages.jsonl", (_sft_messages(r) for r in sft))
        self.run.write_jsonl("sft_alpaca.jsonl", (_sft_alpaca(r) for r in sft))
        manifest = self._manifest(config, pool, result, calls.tally, model, calls.started, cluster, t0, estimate)
        if job.diversity:
            manifest["diversity"] = pool_diversity(
                [seed_prompt(s) for s in seeds], [r["instruction"] for r in sft], job.embedding
            )
        self.run.write_manifest(manifest)
        return manifest

    # ------------------------------------------------------- fusion and responses
    def _fuse(self, calls: TeacherCalls, fusion: RequestBuilder, respond: RequestBuilder, seeds: list[dict[str, str]],
              sampler: PairSampler) -> FusionResult:
        job = self.job
        target, budget = job.fusion.num_instructions, job.fusion.attempt_budget
        # a context manager: the bar ends its line before an error (one line of its own) is printed
        with tqdm(total=target, desc="fused instructions", unit="instr", dynamic_ncols=True) as bar:
            def chosen(n: int, outcomes: Outcomes) -> None:
                bar.update(n - bar.n)
                bar.set_postfix(attempts=outcomes.attempts, pass_rate=f"{outcomes.pass_rate:.0%}", refresh=False)

            result = FusionLoop(seeds=seeds, sampler=sampler, fusion=fusion, respond=respond, calls=calls,
                                target=target, budget=budget, job_seed=job.seed, on_chosen=chosen).run()
        outcomes = result.outcomes
        if result.stop_reason != "reached":
            log.warning(
                "made %d of %d fused instructions: %s after %d attempts (%s)",
                outcomes.ok,
                target,
                "attempt budget spent" if result.stop_reason == "budget" else "every allowed seed pair used",
                outcomes.attempts,
                ", ".join(f"{k} {v}" for k, v in sorted(outcomes.by_outcome.items())),
            )
        return result

    # --------------------------------------------------------------- manifest
    def _manifest(self, config, pool, result: FusionResult, calls: CallTally, model, teacher_started,
                  cluster, t0, estimate: dict[str, Any] | None = None) -> dict[str, Any]:
        job = self.job
        rows, outcomes, stop_reason = result.rows, result.outcomes, result.stop_reason
        price = price_for(model, getattr(job.teacher, "price", None))
        tokens, spent = calls.tokens(), calls.this_run()
        wall_s = round(time.monotonic() - t0, 3)
        cost = cost_usd(price, tokens["prompt"], tokens["completion"])
        fusion_counts = {o: outcomes.by_outcome.get(o, 0) for o in OUTCOMES}
        response_counts = Counter(r["response_outcome"] for r in rows if r["selected"])
        final_counts = Counter(r["outcome"] for r in rows)
        selected = sum(r["selected"] for r in rows)

        def rate(counter: Counter) -> dict[str, Any]:
            n = sum(counter.values())
            return {"attempts": n, "ok": counter.get("ok", 0), "pass_rate": counter.get("ok", 0) / n if n else None}

        return {
            **manifest_header(config, cluster, wall_s),
            "teacher": {"kind": job.teacher.kind, "model": model, "started": teacher_started},
            "templates": {
                "fusion": load_template(job.fusion.template).record(),
                "response": load_template(job.response.template).record(),
            },
            "seeds": pool.summary(),
            "target": job.fusion.num_instructions,
            "attempt_budget": job.fusion.attempt_budget,
            "stop_reason": stop_reason,
            "complete": stop_reason == "reached",
            "counts": {
                "attempts": outcomes.attempts,
                "fusion": fusion_counts,
                "fused": selected,
                "surplus": fusion_counts["ok"] - selected,  # 0: the loop draws no pair M valid ones make needless
                "max_in_flight": result.max_in_flight,
                "response": {o: response_counts.get(o, 0) for o in ("ok", "parse_error", "api_error")},
                "rows": len(rows),
                "sft_rows": final_counts.get("ok", 0),
            },
            "invalid_rate": fusion_counts["invalid"] / outcomes.attempts if outcomes.attempts else None,
            "pass_rate": {"all": rate(Counter(outcomes.by_outcome))} | {k: rate(Counter(v)) for k, v in outcomes.by_pairing.items()},
            "tokens": tokens,
            "this_run": spent,
            "cost_usd": cost,
            "cost_usd_this_run": cost_usd(price, spent["prompt"], spent["completion"]),
            "price_per_million": price.model_dump(),
            "estimate": beside_actual(estimate, calls.by_prefix, tokens, cost, wall_s),
            "outputs": {
                "parquet": f"{job.name}.parquet",
                "sft_messages": "sft_messages.jsonl",
                "sft_alpaca": "sft_alpaca.jsonl",
            },
        }


# ------------------------------------------------------------------- outputs
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _call_columns(prefix: str) -> list[tuple[str, pa.DataType]]:
    """A teacher call's result columns in the table: every ``Answer`` field but the text (stored as ``<prefix>_raw``)."""
    return [(f"{prefix}_{name}", _ARROW[kind]) for name, kind in RESULT_TYPES.items() if name != "text"]


_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("attempt", pa.int64()),
        ("outcome", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("selected", pa.bool_()),
        ("parent_ids", pa.list_(pa.string())),
        ("parent_sources", pa.list_(pa.string())),
        ("parent_languages", pa.list_(pa.string())),
        ("parent_domains", pa.list_(pa.string())),
        ("cross_language", pa.bool_()),
        ("teacher_model", pa.string()),
        ("fusion_outcome", pa.string()),
        ("fusion_reason", pa.string()),
        ("fusion_template", pa.string()),
        ("fusion_template_sha256", pa.string()),
        ("fusion_sampling", pa.string()),
        ("fusion_cache_key", pa.string()),
        ("fusion_raw", pa.string()),
        *_call_columns("fusion"),
        ("response_outcome", pa.string()),
        ("response_template", pa.string()),
        ("response_template_sha256", pa.string()),
        ("response_sampling", pa.string()),
        ("response_cache_key", pa.string()),
        ("response_raw", pa.string()),
        *_call_columns("response"),
    ]
)


def _row_id(row: dict[str, Any]) -> str:
    return hashlib.sha256(f"{row['parent_a']}\x1f{row['parent_b']}\x1f{row['cache_key']}".encode()).hexdigest()[:16]


def _to_table(rows: list[dict[str, Any]], fusion_tpl: PromptTemplate, response_tpl: PromptTemplate, model: str) -> pa.Table:
    out = []
    for r in rows:
        fusion, response = Answer.read(r, "fusion"), Answer.read(r, "response")  # response: defaults if never asked
        has_response = bool(r["response_outcome"])
        parents = r["parents"]
        rec = {
            "id": _row_id(r),
            "attempt": int(r["attempt"]),
            "outcome": r["outcome"],
            "instruction": r["instruction"],
            "response": r["response"],
            "selected": bool(r["selected"]),
            "parent_ids": [p["id"] for p in parents],
            "parent_sources": [p["source"] for p in parents],
            "parent_languages": [p["language"] for p in parents],
            "parent_domains": [p["domain"] for p in parents],
            "cross_language": bool(r["cross_language"]),
            "teacher_model": model,
            "fusion_outcome": r["fusion_outcome"],
            "fusion_reason": r["fusion_reason"],
            "fusion_template": fusion_tpl.ref,
            "fusion_template_sha256": fusion_tpl.sha256,
            "fusion_sampling": r["sampling"],
            "fusion_cache_key": r["cache_key"],
            "fusion_raw": fusion.text,
            "response_outcome": r["response_outcome"],
            "response_template": response_tpl.ref if has_response else "",
            "response_template_sha256": response_tpl.sha256 if has_response else "",
            "response_sampling": r.get("response_sampling", ""),
            "response_cache_key": r.get("response_cache_key", ""),
            "response_raw": response.text,
            **{k: v for k, v in fusion.columns("fusion").items() if k != "fusion_text"},
            **{k: v for k, v in response.columns("response").items() if k != "response_text"},
        }
        out.append(rec)
    return pa.Table.from_pylist(out, schema=_SCHEMA)


def _sft_messages(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": _row_id(r),
        "messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}],
    }


def _sft_alpaca(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": _row_id(r), "instruction": r["instruction"], "input": "", "output": r["response"]}


def run_instruction_fusion(job: InstructionFusionJob, address: str | None = None, force: bool = False) -> dict[str, Any]:
    return InstructionFusionRun(job, address=address, force=force).execute()


__all__ = ["run_instruction_fusion", "InstructionFusionRun", "RequestBuilder", "DEAD_TEACHER_STREAK"]
