"""User-facing errors.

Every failure a user can cause (bad job file, unreadable seeds, unreachable
teacher, ...) is raised as a :class:`FusionError` whose message is one line that
names the cause. The CLI prints it as ``fusion: error: <message>`` and exits 2.
"""

from __future__ import annotations


class FusionError(Exception):
    """An error the user can act on; its message is a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(FusionError):
    """The job file is missing, unreadable or invalid."""


class SeedError(FusionError):
    """A seed source is missing, empty or mostly malformed."""


class TeacherError(FusionError):
    """The teacher cannot be reached or set up."""


class TrainingError(FusionError):
    """Fine-tuning could not start or stopped (a worker failed, the model would not load, ...)."""


class EvaluationError(FusionError):
    """A benchmark cannot be loaded or scored (missing data, malformed rows, no sandbox)."""


#: exit codes of ``fusion``: a ``FusionError``; a run that stopped before its target and kept what it made
EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3
