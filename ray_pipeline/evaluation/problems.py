"""What a benchmark problem is, whatever the benchmark.

A :class:`Problem` is what generation needs (the prompt, the stop sequences)
and what identifies a result (benchmark, language, task id). The test data an
executor needs to score a solution (evalplus inputs and expected outputs,
MultiPL-E's ``tests``) stays with that executor, keyed by task id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ray_pipeline.core.languages import LANGUAGE_ALIASES, LANGUAGE_TITLES, MULTIPLE_LANGUAGES  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class Problem:
    benchmark: str  # "humaneval" | "mbpp" | "multiple" | "gsm8k" | "ifeval" | "mt_bench"
    language: str  # "python" or a MULTIPLE_LANGUAGES key
    task_id: str  # "HumanEval/0", "Mbpp/2", "HumanEval_23_strlen"
    prompt: str
    entry_point: str = ""
    stop: tuple[str, ...] = ()
    tests: str = ""  # MultiPL-E's test program; empty for evalplus (its tests live with the executor)
    # what a benchmark checks an answer against, as plain JSON: gsm8k {"answer": "18"}; ifeval {"key",
    # "instruction_id_list", "kwargs"}; mt_bench {"question_id", "category", "turns", "reference"}
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    @property
    def suite(self) -> str:
        """The suite this problem counts towards: humaneval, mbpp, multiple-<lang>, gsm8k, ifeval, mt_bench."""
        return f"multiple-{self.language}" if self.benchmark == "multiple" else self.benchmark

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Problem":
        return cls(**{**d, "stop": tuple(d.get("stop") or ())})


def select_problems(problems: list[Problem], tasks: Sequence[str] | None, limit: int | None, source: str) -> list[Problem]:
    """The problems a benchmark's ``tasks`` (task ids) and ``limit`` keep, in file order: those tasks, then the first
    ``limit``. An unknown task id is a one-line EvaluationError naming ``source``."""
    from ray_pipeline.core.errors import EvaluationError

    if tasks is not None:
        known = {p.task_id for p in problems}
        unknown = [t for t in dict.fromkeys(tasks) if t not in known]
        if unknown:
            more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise EvaluationError(f"{source}: unknown task ids {', '.join(unknown[:5])}{more}")
        wanted = set(tasks)
        problems = [p for p in problems if p.task_id in wanted]
    return problems if limit is None else problems[:limit]
