"""What a run's teacher calls cost, and when they mean the teacher is down.

``CallTally`` counts every answered row (tokens, calls, retries, cache hits):
the one count a manifest reports. ``Breaker`` stops a run whose teacher fails
``DEAD_TEACHER_STREAK`` calls in a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ray_pipeline.core.errors import TeacherError
from ray_pipeline.teachers.rows import Answer

# This many teacher calls failing in a row (after their retries) means the
# teacher is down, not that some prompts are bad: stop instead of spending the
# seed pairs, and let a rerun resume from the cache.
DEAD_TEACHER_STREAK = 16


class Breaker:
    """Counts teacher calls failing in a row; trips at DEAD_TEACHER_STREAK."""

    def __init__(self, cache_dir: object):
        self.cache_dir = cache_dir
        self.streak = 0

    def observe(self, error: str) -> None:
        self.streak = self.streak + 1 if error else 0
        if self.streak >= DEAD_TEACHER_STREAK:
            raise TeacherError(
                f"the teacher failed {self.streak} calls in a row (last: {error}); finished calls are cached "
                f"in {self.cache_dir}: fix the teacher and run the same command again to resume"
            )


@dataclass
class CallTally:
    """Tokens of every answered row, and what this process actually spent (cache hits excluded)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    spent_prompt: int = 0
    spent_completion: int = 0
    by_prefix: dict[str, int] = field(default_factory=dict)

    def add(self, row: Mapping[str, Any], prefix: str) -> None:
        """Count the answer in ``row``'s ``<prefix>_*`` columns."""
        self.count(Answer.read(row, prefix), prefix)

    def count(self, answer: Answer, prefix: str) -> None:
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens
        self.by_prefix[prefix] = self.by_prefix.get(prefix, 0) + 1
        if answer.cached:
            self.cache_hits += 1
        else:
            self.calls += 1
            self.retries += max(0, answer.attempts - 1)
            self.spent_prompt += answer.prompt_tokens
            self.spent_completion += answer.completion_tokens

    def tokens(self) -> dict[str, int]:
        """Tokens of every answered row: ``{prompt, completion}``."""
        return {"prompt": self.prompt_tokens, "completion": self.completion_tokens}

    def this_run(self) -> dict[str, int]:
        """What this process spent: ``{prompt, completion, calls, retries, cache_hits}``."""
        return {"prompt": self.spent_prompt, "completion": self.spent_completion, "calls": self.calls,
                "retries": self.retries, "cache_hits": self.cache_hits}
