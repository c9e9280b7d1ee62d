"""Turning teacher answers into instructions and responses, or recorded failures.

The parser never guesses: an answer it cannot read as one new instruction is a
``parse_error`` with a reason, and the fusion loop draws a new pair instead.

How :func:`parse_fusion` reads an answer, in order:

1. an answer that repeats the prompt's own text (``ray_pipeline.prompts.echo``: its
   rules, examples, or the whole template with a word changed) is a
   ``parse_error``, even when the copy contains ``INVALID PROMPT``;
2. a heading the template asks for (``#Fused Prompt#:``, ``**Fused Prompt:**``),
   a one-line lead-in (``Sure! Here's the fused prompt:``) before the
   instruction, and one pair of quotation marks around all of it are not part
   of it and are removed;
3. ``invalid`` when the teacher declined: the first line starts with
   ``INVALID PROMPT``, or a line is just ``INVALID PROMPT`` (quotes, stars and
   full stops aside). An instruction that merely mentions the words (a function
   that returns the string 'invalid prompt') is not a refusal;
4. a code block that is never closed is a ``parse_error`` (the answer was cut
   off); an answer that is one fenced block is unwrapped when it holds prose
   (```` ``` ````, ```` ```text ````, ```` ```markdown ````) and is a
   ``parse_error`` when it is code (```` ```python ````: a solution, not an
   instruction); text after the closing fence of a leading block is a
   ``parse_error``; so is an answer that starts with code (``def``, ``import``,
   ``#include`` ...);
5. the answer ends where a model that continues the prompt's pattern starts a
   new input (``#Given Prompt 1#``, ``#Instruction 2#``);
6. a closing paragraph that explains the answer (``This fused prompt
   combines...``, ``Note: ...``) is a ``parse_error``: where the instruction
   ends cannot be known for sure; so is a line of four or more words written
   ``LOOP_REPEATS`` times outside code (a model caught in a loop), and an
   answer that ends with a colon (what it announces is missing);
7. too short, a copy of a parent, or both parents copied whole with little
   else (fewer than 8 other words, or under a quarter of the answer:
   concatenated, not fused): ``parse_error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

from ray_pipeline.prompts.echo import line_key, normalise_space, template_echo
from ray_pipeline.prompts import PromptTemplate

__all__ = ["INVALID_MARKER", "OUTCOMES", "Outcome", "Parsed", "cut_off", "normalise_space", "parse_fusion", "parse_response"]

Outcome = Literal["ok", "invalid", "parse_error", "api_error"]
OUTCOMES: tuple[str, ...] = ("ok", "invalid", "parse_error", "api_error")

INVALID_MARKER = "INVALID PROMPT"
MIN_INSTRUCTION_CHARS = 15
MIN_INSTRUCTION_WORDS = 3
LOOP_REPEATS = 3  # a line of four or more words this often in a new instruction: the model is looping

# Headings a teacher may put before its answer ("#Fused Prompt#:", "**New Instruction:**", "### Prompt").
_LEADING_HEADING = re.compile(
    r"^\s*(?:[#*>\s]*)(?:(?:fused|new|created|rewritten|final|merged|combined)\s+)?(?:instruction|prompt|task)"
    r"[ \t]*[#*]*[ \t]*(?::|(?=\n)|$)[#*]*[ \t]*\n?",
    re.IGNORECASE,
)
# A lead-in line: "Sure! Here's the new instruction:", "Here is a fused prompt that combines both tasks."
_LEAD_IN = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|absolutely|great|alright)\b[^\n:]{0,20}?[!,.]\s*)?"
    r"(?:(?:here(?:'s|’s| is| are)|below is)\b[^\n:]{0,80}:[ \t]*\n?"
    r"|(?:here(?:'s|’s| is| are)|below is)\b[^\n:]{0,80}?\b(?:prompt|instruction|task)\b[^\n:]{0,80}[.!][ \t]*\n)",
    re.IGNORECASE,
)
# Markers of the prompt itself: a base model that continues the pattern repeats them.
_ECHO_MARKERS = re.compile(
    r"#\s*(?:instruction\s*\d+|fused instruction|given prompt\s*(?:\d+|[ab])?|fused prompt)\s*#"
    r"|\*\*\s*given prompt\s*(?:\d+|[ab])?\s*:?\s*\*\*"
    r"|^[ \t]*#+[ \t]*(?:given|fused)[ \t]*prompt\b",  # "#Fused Prompt:", "#Given Prompt 3:" at a line's start
    re.IGNORECASE | re.MULTILINE,
)
_WHOLE_FENCE = re.compile(r"^```(?P<lang>[\w+#.-]*)[ \t]*\n(?P<body>.*?)\n?```$", re.DOTALL)
_LEADING_FENCE = re.compile(r"^```[\w+#.-]*[ \t]*\n.*?\n```[ \t]*(?:\n|$)", re.DOTALL)
_PROSE_FENCES = {"", "text", "txt", "markdown", "md", "plain", "plaintext", "prompt", "instruction"}
_CODE_START = re.compile(
    r"^(?:def \w+\(|class \w+[:(]|import \w|from [\w.]+ import |#include\b|public (?:static )?(?:class|void|int)\b"
    r"|function \w+\(|package \w|using namespace\b|SELECT\s)"
)
# A paragraph or last line that talks about the answer instead of being part of it.
EXPLANATION = re.compile(
    r"^[(*_#\s]*(?:note|notes|explanation|rationale|reasoning|why\s+this\s+works|justification)\b[*_]*\s*[:：-]"
    r"|^[(*_\s]*(?:this|the)\s+(?:\w+\s+){0,2}(?:prompt|instruction|task|version)\s+"
    r"(?:combines|merges|integrates|fuses|blends|incorporates|keeps|maintains|adds|preserves|balances|unites)\b"
    r"|^[(*_\s]*this\s+(?:combines|merges|integrates|fuses|blends|incorporates)\b"
    r"|^[(*_\s]*(?:by\s+(?:combining|merging|fusing|integrating)|in\s+this\s+(?:fused|new|combined)\s+(?:prompt|instruction))\b"
    r"|^[(*_\s]*(?:the|this)\s+fusion\b"
    r"|^[(*_\s]*(?:these|the\s+above|all)\s+(?:\w+\s+){0,2}(?:prompts|instructions|tasks|objectives)\b"
    r"|^[(*_\s]*(?:i\s+hope|hope\s+this|let\s+me\s+know|feel\s+free|happy\s+coding)\b"
    r"|^[(*_\s]*here(?:'s|’s|\s+is)\s+(?:a|an|the|my|one)?\s*(?:possible|sample|example|simple|complete)?\s*"
    r"(?:solution|answer|implementation|code)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r'^(?P<q>["“])(?P<body>[^"“”]+)["”]$', re.DOTALL)


@dataclass(frozen=True)
class Parsed:
    outcome: Outcome
    text: str  # the instruction or response; "" unless outcome == "ok"
    reason: str = ""


_CLOSING_MARKER = re.compile(r"(?:^|[.!?]\s+)[\"'“‘*`_]*INVALID PROMPT[\"'”’*`_.!]*\s*$")


def declines(text: str) -> bool:
    """The teacher answered ``INVALID PROMPT``: the first line starts with it, a line is just
    that, or the last sentence is the marker in capitals ("These cannot be combined. INVALID PROMPT")."""
    raw = [line for line, code in zip(text.splitlines(), fenced_lines(text.splitlines())) if line.strip() and not code]
    lines = [normalise_space(line).strip(" .!*#`'\"“”‘’:") for line in raw]
    marker = INVALID_MARKER.lower()
    return bool(lines) and (lines[0].startswith(marker) or marker in lines or bool(_CLOSING_MARKER.search(raw[-1])))


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; a fenced block is never split."""
    out: list[list[str]] = [[]]
    lines = text.splitlines()
    for line, code in zip(lines, fenced_lines(lines)):
        if not code and not line.strip():
            if out[-1]:
                out.append([])
            continue
        out[-1].append(line)
    return ["\n".join(p) for p in out if p]


def fenced_lines(lines: Sequence[str]) -> list[bool]:
    """For each line: is it part of a fenced code block (its fence lines included)?"""
    states, inside = [], False
    for line in lines:
        opens = line.lstrip().startswith(("```", "~~~"))
        states.append(inside or opens)
        inside = inside != opens
    return states


def unclosed_fence(text: str) -> bool:
    return sum(line.lstrip().startswith(("```", "~~~")) for line in text.splitlines()) % 2 == 1


def looping(lines: Sequence[str], fenced: Sequence[bool] | None = None) -> str:
    """Why these lines are a repetition loop, or "": a line of four or more words ``LOOP_REPEATS``
    times, or a shorter one twice as often.

    ``fenced`` marks the lines inside code blocks, which may repeat; by default
    a line starting with three backticks opens or closes a block.
    """
    if fenced is None:
        fenced = fenced_lines(lines)
    seen: dict[str, int] = {}
    for line, in_code in zip(lines, fenced):
        key = line_key(line)
        if in_code or not key:
            continue
        seen[key] = seen.get(key, 0) + 1
        times = LOOP_REPEATS if len(key.split()) >= 4 else 2 * LOOP_REPEATS  # short lines may repeat a little
        if seen[key] == times:
            return f"degenerate output: a line repeated {times} times: {line.strip()[:60]!r}"
    return ""


def unwrap_prose_fence(text: str) -> str:
    """The body of an answer that is one fenced block of prose (```` ```markdown ````), else the answer."""
    fence = _WHOLE_FENCE.match(text.strip())
    return fence["body"].strip() if fence and fence["lang"].lower() in _PROSE_FENCES else text


def _strip_lead(text: str) -> str:
    for _ in range(2):  # "Sure! Here's the fused prompt:\n**Fused Prompt:**\n..."
        text = _LEAD_IN.sub("", text, count=1).strip()
        text = _LEADING_HEADING.sub("", text, count=1).strip() if _LEADING_HEADING.match(text) else text
    return text


def parse_fusion(
    answer: str | None, parents: tuple[str, ...], template: PromptTemplate | None = None
) -> Parsed:
    """Read a fusion answer: one new instruction, ``INVALID PROMPT``, or a parse error with its reason.

    ``template`` is the template the prompt was rendered from: with it, an
    answer that repeats the prompt's own text is recognised (step 1 above).
    """
    if answer is None or not answer.strip():
        return Parsed("parse_error", "", "empty answer")
    text = answer.strip()
    why = template_echo(template).why(text.splitlines(), inputs=parents, strict=True)
    if why:
        return Parsed("parse_error", "", why)
    text = _strip_lead(text)
    quoted = _QUOTED.match(text)
    if quoted:  # the whole instruction in one pair of quotation marks
        text = quoted["body"].strip()
    if declines(text):
        return Parsed("invalid", "", "teacher declined the pair")
    if unclosed_fence(text):
        return Parsed("parse_error", "", "unclosed code block (answer cut off?)")
    fence = _WHOLE_FENCE.match(text)
    if fence:
        if fence["lang"].lower() not in _PROSE_FENCES:
            return Parsed("parse_error", "", f"a {fence['lang']} code block, not an instruction")
        text = _strip_lead(fence["body"].strip())
    elif _LEADING_FENCE.match(text):
        rest = text[_LEADING_FENCE.match(text).end():].strip()  # type: ignore[union-attr]
        return Parsed("parse_error", "", f"text after the code block: {rest[:60]!r}")
    echo = _ECHO_MARKERS.search(text)
    if echo:
        text = text[: echo.start()].strip()
    paragraphs = _paragraphs(text)
    for part in paragraphs[1:]:
        if EXPLANATION.match(part):
            return Parsed("parse_error", "", f"an explanation or remark after the instruction: {part.strip()[:60]!r}")
    outside = [line for line, code in zip(text.splitlines(), fenced_lines(text.splitlines())) if not code and line.strip()]
    if len(outside) > 1 and EXPLANATION.match(outside[-1]):
        return Parsed("parse_error", "", f"an explanation or remark after the instruction: {outside[-1].strip()[:60]!r}")
    if _CODE_START.match(text):
        return Parsed("parse_error", "", "starts with code, not an instruction")
    why = looping(text.splitlines())
    if why:
        return Parsed("parse_error", "", why)
    if text.rstrip(" *_").endswith((":", "：")):
        return Parsed("parse_error", "", f"ends with a colon: what it announces is missing ({text.splitlines()[-1][-60:]!r})")
    if len(text) < MIN_INSTRUCTION_CHARS or len(text.split()) < MIN_INSTRUCTION_WORDS:
        return Parsed("parse_error", "", f"too short ({len(text)} chars)")
    norm = normalise_space(text)
    if any(norm == normalise_space(p) for p in parents):
        return Parsed("parse_error", "", "copies a parent instruction")
    if len(parents) > 1 and all(normalise_space(p) in norm for p in parents):
        rest = norm
        for p in parents:
            rest = rest.replace(normalise_space(p), " ", 1)
        if len(rest.split()) < max(8, len(norm.split()) // 4):
            return Parsed("parse_error", "", "both parent instructions copied whole (concatenated, not fused)")
    return Parsed("ok", text)


def cut_off(answer: str, finish_reason: str, last_piece: str) -> bool:
    """Whether ``last_piece`` runs to the very end of an answer that stopped at max_tokens (it is incomplete)."""
    if finish_reason != "length" or not last_piece.strip():
        return False
    tail = " ".join(last_piece.split())[-40:]
    return " ".join(answer.split()).endswith(tail)


def parse_response(answer: str | None) -> Parsed:
    """A response is kept as the teacher wrote it; only an empty one is an error."""
    if answer is None or not answer.strip():
        return Parsed("parse_error", "", "empty response")
    return Parsed("ok", answer.strip())
