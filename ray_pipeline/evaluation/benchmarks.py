"""From a job's ``benchmarks`` to suites of problems, and from a suite to its executor.

A suite is what one summary column group is computed from: ``humaneval`` and
``mbpp`` (evalplus data; base and plus tests), ``multiple-<lang>`` (one
MultiPL-E language), ``gsm8k``, ``ifeval`` and ``mt_bench``. The driver loads
the problems (prompts, stop sequences, and for the text benchmarks what an
answer is checked against, in ``Problem.meta``) for generation. A code suite is
scored by running programs: each scoring actor builds the suite's executor from
the same spec (a plain dict, so it travels to Ray actors), loading the test data
there. GSM8K and IFEval are checked by rule (``evaluation.checks``), MT-Bench by
a judge model (``evaluation.judging``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from ray_pipeline.evaluation.config import CODE_BENCHMARKS, TEXT_BENCHMARKS, EvalBenchmarkConfig
from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation.executors.base import Executor
from ray_pipeline.evaluation.problems import Problem


@dataclass
class Suite:
    name: str  # "humaneval", "mbpp", "multiple-java"
    benchmark: str
    language: str
    path: str | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def runs_programs(self) -> bool:
        """A code suite: scored by running programs in the sandbox."""
        return self.benchmark in CODE_BENCHMARKS

    def spec(self) -> dict[str, Any]:
        """What a scoring actor needs to build this suite's executor."""
        return {"name": self.name, "benchmark": self.benchmark, "language": self.language, "path": self.path,
                "task_ids": [p.task_id for p in self.problems]}


def load_suites(benchmarks: list[EvalBenchmarkConfig]) -> list[Suite]:
    """Every suite of the job with its problems; EvaluationError (one line) for missing or malformed data."""
    suites = []
    for bench in benchmarks:
        if bench.name in ("humaneval", "mbpp"):
            from ray_pipeline.evaluation.evalplus_data import load_evalplus

            data = load_evalplus(bench.name, bench.path, limit=bench.limit, task_ids=bench.tasks)
            suites.append(Suite(bench.name, bench.name, "python", bench.path, data.as_problems()))
        elif bench.name in TEXT_BENCHMARKS:
            module = importlib.import_module(f"ray_pipeline.evaluation.{bench.name}")
            extra = {"references": bench.references} if bench.name == "mt_bench" else {}
            problems = module.load_problems(bench.path, limit=bench.limit, tasks=bench.tasks, **extra)
            suites.append(Suite(bench.name, bench.name, "", bench.path, problems))
        else:
            from ray_pipeline.evaluation.multiple_data import load_multiple

            for lang in bench.languages:
                problems = load_multiple(lang, bench.path, limit=None if bench.tasks else bench.limit)
                if bench.tasks:
                    wanted = set(bench.tasks)
                    problems = [p for p in problems if p.task_id in wanted or _humaneval_id(p.task_id) in wanted]
                    problems = problems[: bench.limit] if bench.limit else problems
                suites.append(Suite(f"multiple-{lang}", "multiple", lang, bench.path, problems))
    for suite in suites:
        if not suite.problems:
            raise EvaluationError(f"{suite.name}: no problems selected (check limit and tasks)")
    return suites


def _humaneval_id(name: str) -> str:
    """MultiPL-E's ``HumanEval_23_strlen`` is HumanEval/23, so ``tasks: [HumanEval/23]`` selects it in every language."""
    parts = name.split("_")
    return f"HumanEval/{parts[1]}" if len(parts) > 2 and parts[0] == "HumanEval" and parts[1].isdigit() else name


def make_executor(spec: dict[str, Any], sandbox_cfg: dict[str, Any]) -> Executor:
    """The executor of one suite (built where the scoring happens, from plain data)."""
    from ray_pipeline.evaluation.sandbox import Sandbox

    isolation = sandbox_cfg.get("isolation")  # $FUSION_SANDBOX_ISOLATION on this node overrides it
    if spec["benchmark"] in ("humaneval", "mbpp"):
        from ray_pipeline.evaluation.evalplus_data import load_evalplus
        from ray_pipeline.evaluation.executors.evalplus import EvalPlusExecutor

        data = load_evalplus(spec["benchmark"], spec["path"], task_ids=spec["task_ids"])
        return EvalPlusExecutor(
            spec["benchmark"], data, Sandbox(isolation=isolation),
            min_time_limit=sandbox_cfg["min_time_limit"], gt_time_limit_factor=sandbox_cfg["gt_time_limit_factor"],
            memory_mb=sandbox_cfg["memory_mb"], nproc=sandbox_cfg.get("nproc"), output_mb=sandbox_cfg.get("output_mb"),
            find_zero=sandbox_cfg.get("find_zero", "fixed"),
        )
    from ray_pipeline.evaluation.executors.languages import multiple_executor

    timeout = sandbox_cfg.get("timeout_s")
    return multiple_executor(spec["language"], Sandbox(isolation=isolation), build_timeout_s=timeout,
                             run_timeout_s=timeout, memory_mb=sandbox_cfg.get("multiple_memory_mb"),
                             nproc=sandbox_cfg.get("nproc"), output_mb=sandbox_cfg.get("output_mb"))


def check_scoring(executor: Executor, suite: str) -> None:
    """The suite's scoring path passes a known-correct and fails a known-wrong solution, or EvaluationError."""
    try:
        executor.self_check()
    except EvaluationError as err:
        raise EvaluationError(f"cannot score {suite}: the scoring self-check failed: {err}") from None
