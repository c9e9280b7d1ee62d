"""Turning teacher answers into instructions and responses, or recorded failures.

The parser never guesses: an answer it cannot read as one fused instruction is a
``parse_error`` with a reason, and the fusion loop draws a new pair instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["ok", "invalid", "parse_error", "api_error"]
OUTCOMES: tuple[str, ...] = ("ok", "invalid", "parse_error", "api_error")

INVALID_MARKER = "INVALID PROMPT"
MIN_INSTRUCTION_CHARS = 15
MIN_INSTRUCTION_WORDS = 3

# Headings a teacher may put before its answer ("#Fused Instruction#:", "**New Instruction:**", ...).
_LEADING_HEADING = re.compile(
    r"^\s*(?:[#*>\s]*)(?:fused|new|created|rewritten|final)\s+(?:instruction|prompt|task)\s*[#*]*\s*:?[#*]*\s*",
    re.IGNORECASE,
)
# Markers of the prompt itself: a base model that continues the pattern repeats them.
_ECHO_MARKERS = re.compile(r"#\s*(?:instruction\s*[12]|fused instruction|given prompt)\s*#", re.IGNORECASE)
_WHOLE_FENCE = re.compile(r"^```[\w+-]*\n(?P<body>.*)\n```$", re.DOTALL)


@dataclass(frozen=True)
class Parsed:
    outcome: Outcome
    text: str  # the instruction or response; "" unless outcome == "ok"
    reason: str = ""


def normalise_space(text: str) -> str:
    """Lowercase, with every run of whitespace made one space."""
    return " ".join(text.lower().split())


def parse_fusion(answer: str | None, parents: tuple[str, ...]) -> Parsed:
    """Read a fusion answer: one new instruction, ``INVALID PROMPT``, or a parse error."""
    if answer is None or not answer.strip():
        return Parsed("parse_error", "", "empty answer")
    text = answer.strip()
    fence = _WHOLE_FENCE.match(text)
    if fence:
        text = fence.group("body").strip()
    text = _LEADING_HEADING.sub("", text, count=1).strip()
    if normalise_space(text).strip(" .!\"'`*").upper() == INVALID_MARKER or text.upper().startswith(INVALID_MARKER):
        return Parsed("invalid", "", "teacher declined the pair")
    echo = _ECHO_MARKERS.search(text)
    if echo:
        text = text[: echo.start()].strip()
    if INVALID_MARKER in text.upper():
        return Parsed("invalid", "", "teacher declined the pair")
    if len(text) < MIN_INSTRUCTION_CHARS or len(text.split()) < MIN_INSTRUCTION_WORDS:
        return Parsed("parse_error", "", f"too short ({len(text)} chars)")
    if any(normalise_space(text) == normalise_space(p) for p in parents):
        return Parsed("parse_error", "", "copies a parent instruction")
    return Parsed("ok", text)


def parse_response(answer: str | None) -> Parsed:
    """A response is kept as the teacher wrote it; only an empty one is an error."""
    if answer is None or not answer.strip():
        return Parsed("parse_error", "", "empty response")
    return Parsed("ok", answer.strip())
