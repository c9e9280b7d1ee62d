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


# ------------------------------------------------ one line of an error, for a one-line message
def first_line(err: BaseException) -> str:
    """The first line of an error's text (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def joined_lines(err: BaseException) -> str:
    """Every line of an error's text on one line, joined by "; " (list bullets dropped)."""
    return "; ".join(line.strip(" -") for line in str(err).splitlines() if line.strip())


def typed_line(err: BaseException, limit: int = 300) -> str:
    """``Type: text`` with all whitespace collapsed, at most ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:limit]
