"""The stage that runs generated programs against their benchmark's tests.

Rows in: ``suite``, ``problem`` (JSON of a ``Problem``) and ``solution``.
Rows out: the same plus ``passed``, ``status``, ``base_passed``,
``base_status``, ``exit_code``, ``detail``, ``wall_s``, ``skipped`` (the reason
a suite could not be scored on this node, e.g. its compiler is missing) and
``node``.

One executor per suite is built on first use inside the actor (evalplus data
and its expected outputs are loaded there); with ``self_check`` it first scores
its known-correct and known-wrong programs (``Executor.self_check``) and the
actor fails, with that one line, if either verdict is wrong, so a node whose
scoring is broken stops the run instead of failing every sample. The rows of a
batch run in up to ``parallel`` sandboxes at once. Ray Data runs the class as an actor pool,
one per node or more, and a test can call it directly.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from ray_pipeline.evaluation.executors.base import Executor, Verdict
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.teachers.stage import node_id

VERDICT_FIELDS = ("passed", "status", "base_passed", "base_status", "exit_code", "detail", "wall_s", "skipped")


class ExecutionStage:
    """``map_batches`` UDF: score every row's solution in the sandbox."""

    def __init__(self, suites: dict[str, dict[str, Any]], sandbox: dict[str, Any], self_check: bool = False):
        self.suites = suites
        self.sandbox_cfg = sandbox
        self.self_check = self_check
        self.parallel = int(sandbox.get("parallel", 1))
        self.executors: dict[str, Executor] = {}
        self.unavailable: dict[str, str] = {}
        self.node = node_id()

    def _executor(self, suite: str) -> Executor | None:
        if suite in self.executors or suite in self.unavailable:
            return self.executors.get(suite)
        from ray_pipeline.evaluation.benchmarks import make_executor

        executor = make_executor(self.suites[suite], self.sandbox_cfg)
        reason = executor.unavailable_reason()
        if reason:
            self.unavailable[suite] = reason
            executor.close()
            return None
        if self.self_check:
            from ray_pipeline.evaluation.benchmarks import check_scoring

            try:
                check_scoring(executor, suite)
            except Exception:
                executor.close()
                raise
        self.executors[suite] = executor
        return executor

    def _score(self, suite: str, problem_json: str, solution: str, generation_error: str) -> dict[str, Any]:
        executor = self._executor(suite)
        if executor is None:
            return _row(Verdict(passed=False, status="skipped"), skipped=self.unavailable[suite])
        if generation_error:
            return _row(Verdict(passed=False, status="generation_error", base_passed=False, detail=generation_error))
        problem = Problem.from_json(json.loads(problem_json))
        return _row(executor.score(problem, solution))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        suites, problems = batch["suite"].tolist(), batch["problem"].tolist()
        solutions = batch["solution"].tolist()
        errors = batch["generation_error"].tolist() if "generation_error" in batch else [""] * len(batch)
        for suite in dict.fromkeys(suites):  # build executors before the threads start
            self._executor(suite)
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            verdicts = list(pool.map(self._score, suites, problems, solutions, errors))
        out = batch.copy()
        for name in VERDICT_FIELDS:
            out[name] = [v[name] for v in verdicts]
        out["node"] = self.node
        return out

    def __del__(self) -> None:
        for executor in getattr(self, "executors", {}).values():
            try:
                executor.close()
            except Exception:
                pass


def _row(verdict: Verdict, skipped: str = "") -> dict[str, Any]:
    d = verdict.to_json()
    return {
        "passed": bool(d["passed"]),
        "status": d["status"],
        "base_passed": d["base_passed"] if d["base_passed"] is not None else bool(d["passed"]),
        "base_status": d["base_status"] or "",
        "exit_code": -1 if d["exit_code"] is None else int(d["exit_code"]),
        "detail": d["detail"] or "",
        "wall_s": float(d["wall_s"] or 0.0),
        "skipped": skipped,
    }
