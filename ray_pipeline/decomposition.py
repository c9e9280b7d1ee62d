"""Task decomposition (TaCIE): an instruction as background settings, objectives and constraints.

TaCIE (Yang et al. 2024, arXiv 2410.02795, section 3) evolves tasks, not strings:
the teacher decomposes every instruction into three element lists, T = (B, O, C),
with background settings B (context, given data, code), objectives O (what must
be done) and constraints C (requirements the answer must meet). Depth evolution
adds one element (a constraint to C, or a background fact to B); task fusion
takes the union of two tasks' elements; each step ends with the teacher writing
the updated sections and the new instruction they describe.

This module is the one home of that representation: :class:`Components`, the
text put into prompts (:func:`format_components`), and the parsers of the
teacher's answers (:func:`parse_decomposition`, :func:`parse_evolution`,
:func:`parse_diversified`). Like :mod:`ray_pipeline.parsing`, the parsers never
guess: what they cannot read is a ``parse_error`` with a reason.

Reading rules, shared by the parsers:

* a section starts at a header line, matched case-insensitively with optional
  markdown decoration (``#``, ``**``) and an optional trailing colon:
  ``[Extract|Extracted|Updated|New ...] Background [Settings|Information]``,
  ``Objective(s)`` / ``Goal(s)``, ``Constraint(s)`` / ``Constrains`` /
  ``Requirement(s)``; sections may come in any order; text on the header line
  after the colon is the first item;
* an item starts at a list marker (``1.``, ``1)``, ``(1)``, ``-``, ``*``, ``•``);
  lines after a marker continue its item until a blank line or the next marker;
  an unmarked line outside a marked item is an item of its own;
* a fenced code block is one item, kept verbatim (lines inside it are never
  headers, markers or echo markers); it joins the item whose marker opens it
  (``2. ```python``, or ``2.`` alone on the line before); an unclosed fence is
  a parse error (the answer was cut off);
* ``N/A``, ``None``, ``Not applicable``, ``No constraints`` ... as a section's
  item means an empty list;
* the answer ends where a model that echoes the few-shot pattern starts a new
  example (an ``Instruction:``, ``Input:``, ``Example 2`` ... line after a
  section header, a repeated section header, or a chat turn token).

Evolution answers (depth evolution, task fusion) are the updated sections
followed by ``Rewritten Prompt:``. An evolved item without its sections is a
``parse_error``: every item of the pool must carry components to be evolved
again, so a rewritten prompt alone is not kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ray_pipeline.parsing import INVALID_MARKER, Outcome, _norm, parse_fusion

SECTIONS: tuple[str, ...] = ("background", "objectives", "constraints")
SECTION_TITLES: dict[str, str] = {
    "background": "Background Settings",
    "objectives": "Objectives",
    "constraints": "Constraints",
}
EMPTY = "N/A"
REWRITTEN_TITLE = "Rewritten Prompt"


@dataclass(frozen=True)
class Components:
    """The elements of one task; an empty tuple is a section the teacher marked N/A."""

    background: tuple[str, ...] = ()
    objectives: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()

    @classmethod
    def from_lists(
        cls, background: Iterable[str] = (), objectives: Iterable[str] = (), constraints: Iterable[str] = ()
    ) -> "Components":
        """From list-like columns (lists, numpy arrays read back from Parquet)."""
        return cls(tuple(map(str, background)), tuple(map(str, objectives)), tuple(map(str, constraints)))

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(getattr(self, s)) for s in SECTIONS}

    def as_columns(self) -> dict[str, list[str]]:
        """The items table's ``background``, ``objectives`` and ``constraints`` columns."""
        return {s: list(getattr(self, s)) for s in SECTIONS}


@dataclass(frozen=True)
class ParsedComponents:
    outcome: Outcome  # "ok" or "parse_error"
    components: Components | None
    reason: str = ""


@dataclass(frozen=True)
class ParsedEvolution:
    outcome: Outcome  # "ok", "invalid" or "parse_error"
    instruction: str  # the rewritten prompt; "" unless ok
    components: Components | None
    reason: str = ""


@dataclass(frozen=True)
class ParsedDiversified:
    outcome: Outcome  # "ok" when at least one new instruction was read
    instructions: tuple[str, ...]
    dropped: tuple[str, ...]  # one reason per list entry that was not kept
    reason: str = ""


def format_components(c: Components) -> str:
    """The sections as they appear in prompts: numbered items, ``N/A`` for an empty section.

    Parsing the result gives ``c`` back when no item has a blank line or a list
    marker at the start of a line outside a code block, and no text before a code block.
    """
    parts = []
    for section in SECTIONS:
        items = getattr(c, section)
        body = "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1)) if items else EMPTY
        parts.append(f"{SECTION_TITLES[section]}:\n{body}")
    return "\n".join(parts)


# ------------------------------------------------------------------ patterns
_SECTION_NAMES = {
    "background": r"background(?:\s+(?:settings?|information|info|context))?",
    "objectives": r"objectives?|goals?",
    "constraints": r"constraints?|constrains?|requirements?",
}
_NAME_TO_SECTION = [(s, re.compile(rf"^(?:{p})$", re.I)) for s, p in _SECTION_NAMES.items()]
_OPEN = r"^\s*(?:(?:#+|>)\s*)*(?:\d+[.)]\s+)?(?P<open>\*\*|__)?\s*"
_CLOSE = r"\s*(?:\(s\))?\s*(?P<close>\*\*|__|#+)?\s*(?P<colon>[:：])?\s*(?:\*\*|__)?\s*(?P<rest>.*?)\s*$"
_HEADER = re.compile(
    _OPEN
    + r"(?:(?:extract(?:ed)?|evolved|updated|revised|new|fused|combined|final|the)\s+)*"
    + rf"(?P<name>{'|'.join(_SECTION_NAMES.values())})"
    + _CLOSE,
    re.I,
)
_REWRITTEN = re.compile(
    _OPEN
    + r"(?P<name>(?:rewritten|new|evolved|fused|combined|final|updated|revised)\s+(?:prompt|instruction|task))"
    + _CLOSE,
    re.I,
)
# A line where an echoed few-shot pattern starts a new example.
_EXAMPLE_START = re.compile(
    r"^\s*[#>*_\s]*(?:example(?:\s*\d+)?|(?:given\s+|original\s+|seed\s+|next\s+)?(?:instruction|prompt)(?:\s*\d+)?)"
    r"\s*[#*_]*\s*(?:[:：]|$)",
    re.I,
)
_INPUT_START = re.compile(r"^\s*[#>*_\s]*(?:input|question)\s*[#*_]*\s*(?:[:：]|$)", re.I)
_TURN_TOKEN = re.compile(r"<(?:start_of_turn|end_of_turn|eos|\|im_start\||\|im_end\||\|endoftext\|)>")
_MARKER = re.compile(r"^\s*(?:\d+[.)]|\(\d+\)|[-*•+])(?:\s+(?P<text>.*?))?\s*$")
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_RULE = re.compile(r"^\s*[-*_=#]{3,}\s*$")  # a horizontal rule or underline, not an item
_NA = re.compile(
    r"^[\s*_`'\"(\[]*(?:n/?a|none|nil|nothing|not\s+applicable|no\s+(?:explicit\s+|specific\s+|additional\s+|particular\s+)?"
    r"(?:background(?:\s+settings?)?|objectives?|constraints?|requirements?|context))"
    r"(?:\s+(?:given|specified|provided|stated|mentioned|required))?[\s.*_`'\")\]]*(?:\(.*\))?\s*$",
    re.I,
)
# Top-level entries of a diversification answer: "1.", "1)", "(1)", "**1.**", "Instruction 1:".
_ENTRY = re.compile(
    r"^(?P<indent>\s*)(?:\*\*|__)?\s*(?:(?:new\s+)?instruction\s+)?\(?(?P<num>\d+)\s*[.):]\s*(?:\*\*|__)?(?:\s+|$)(?P<rest>.*?)\s*$",
    re.I,
)


def _header(line: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """A header needs a colon, decoration, or nothing after its name; prose does not count."""
    m = pattern.match(line)
    if m and (m["colon"] or m["close"] or m["open"] or not m["rest"]):
        return m
    return None


def _section_of(name: str) -> str:
    return next(s for s, p in _NAME_TO_SECTION if p.match(" ".join(name.split())))


def _cut_turns(text: str) -> str:
    m = _TURN_TOKEN.search(text)
    return text[: m.start()] if m else text


def _is_na(item: str) -> bool:
    return bool(_NA.match(item))


# ------------------------------------------------------------------ sections
class _SectionReader:
    """Collects the items of headed sections, line by line."""

    def __init__(self) -> None:
        self.sections: dict[str, list[str]] = {}
        self.current: str | None = None
        self._item: list[str] | None = None  # lines of the open item
        self._marked = False  # the open item was opened by a list marker
        self.in_fence = False

    @property
    def seen(self) -> bool:
        return bool(self.sections)

    def header(self, section: str, rest: str) -> bool:
        """Start a section; False when it was seen before (an echoed example starts)."""
        self._close()
        if section in self.sections:
            if section == self.current and not self.sections[section]:
                return True  # the same header twice in a row
            return False
        self.sections[section] = []
        self.current = section
        if rest:
            self.line(rest)
        return True

    def line(self, line: str) -> None:
        if self.current is None:
            return
        if self.in_fence:
            assert self._item is not None
            self._item.append(line.rstrip())
            if _FENCE.match(line):
                self.in_fence = False
                self._close()
            return
        if not line.strip():
            self._close()
            return
        if _RULE.match(line):
            return
        if _FENCE.match(line):
            if not (self._item is not None and self._marked and self._item == [""]):
                self._close()
                self._item = []
            self._item = [*(x for x in self._item if x), line.strip()]
            self.in_fence = True
            return
        marker = _MARKER.match(line)
        if marker:
            self._close()
            text = marker["text"] or ""
            self._item, self._marked = [text], True
            if _FENCE.match(text):
                self.in_fence = True
            return
        if self._item is not None and self._marked:
            self._item.append(line.strip())
        else:
            self._close()
            self._item, self._marked = [line.strip()], False

    def _close(self) -> None:
        if self._item is not None and self.current is not None:
            item = "\n".join(self._item).strip()
            if item and not _is_na(item):
                self.sections[self.current].append(item)
        self._item, self._marked = None, False

    def finish(self) -> tuple[Components | None, str]:
        if self.in_fence:
            return None, "unclosed code block (answer cut off?)"
        self._close()
        if not self.sections:
            return None, "no section header (Background Settings / Objectives / Constraints)"
        c = Components(*(tuple(self.sections.get(s, ())) for s in SECTIONS))
        if not c.objectives:
            return None, "no objectives"
        return c, ""


def _read_sections(lines: list[str]) -> tuple[Components | None, str]:
    reader = _SectionReader()
    for line in lines:
        if not reader.in_fence:
            m = _header(line, _HEADER)
            if m:
                if not reader.header(_section_of(m["name"]), m["rest"]):
                    break
                continue
            if reader.seen and (_EXAMPLE_START.match(line) or _INPUT_START.match(line)):
                break
        reader.line(line)
    return reader.finish()


def parse_decomposition(text: str | None) -> ParsedComponents:
    """Read a decomposition answer into :class:`Components`, or a parse error with its reason."""
    if text is None or not text.strip():
        return ParsedComponents("parse_error", None, "empty answer")
    components, reason = _read_sections(_cut_turns(text).splitlines())
    if components is None:
        return ParsedComponents("parse_error", None, reason)
    return ParsedComponents("ok", components)


# ------------------------------------------------------------------ evolution
def _fence_states(lines: list[str]) -> list[bool]:
    """For each line: is it inside (or the closing line of) a fenced block?"""
    states, inside = [], False
    for line in lines:
        opens = _FENCE.match(line) or _FENCE.match((_MARKER.match(line) or {"text": ""})["text"] or "")
        states.append(inside)
        if opens:
            inside = not inside
    return states


def parse_evolution(text: str | None, parents: tuple[str, ...]) -> ParsedEvolution:
    """Read a depth-evolution or fusion answer: updated sections, then ``Rewritten Prompt:``.

    ``invalid`` when the teacher answered ``INVALID PROMPT``; ``parse_error`` when
    the rewritten prompt is missing, empty, too short or a copy of a parent, or
    when its sections are missing or have no objectives.
    """
    if text is None or not text.strip():
        return ParsedEvolution("parse_error", "", None, "empty answer")
    lines = _cut_turns(text).splitlines()
    fenced = _fence_states(lines)
    start = next((i for i, line in enumerate(lines) if not fenced[i] and _header(line, _REWRITTEN)), None)
    if start is None:
        if INVALID_MARKER in text.upper():
            return ParsedEvolution("invalid", "", None, "teacher declined")
        return ParsedEvolution("parse_error", "", None, f"no '{REWRITTEN_TITLE}:' section")
    head = lines[:start]
    first = _header(lines[start], _REWRITTEN)
    assert first is not None
    prompt: list[str] = [first["rest"]] if first["rest"] else []
    sections_after: list[str] = []
    head_has_sections = any(not fenced[i] and _header(line, _HEADER) for i, line in enumerate(head))
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if not fenced[i]:
            m = _header(line, _HEADER)
            if m and not head_has_sections:
                sections_after = lines[i:]
                break
            if m and _section_of(m["name"]) == "background":
                break  # the pattern starts over
            if any(p.strip() for p in prompt) and _EXAMPLE_START.match(line):
                break
        prompt.append(line)
    parsed = parse_fusion("\n".join(prompt), parents)
    if parsed.outcome != "ok":
        return ParsedEvolution(parsed.outcome, "", None, f"rewritten prompt: {parsed.reason}")
    components, reason = _read_sections(head if head_has_sections else sections_after)
    if components is None:
        return ParsedEvolution("parse_error", "", None, f"sections: {reason}")
    return ParsedEvolution("ok", parsed.text, components)


# ------------------------------------------------------------ diversification
def parse_diversified(text: str | None, parent: str) -> ParsedDiversified:
    """Read a numbered list of new instructions written from ``parent``.

    Entries are the top-level items ``1.``, ``2.``, ... numbered in sequence (a
    nested list inside an entry, indented or restarting at 1, stays part of it).
    Each entry passes the checks of a fused instruction
    (:func:`ray_pipeline.parsing.parse_fusion`); an entry that fails them, or
    repeats an earlier one, is dropped with its reason.
    """
    if text is None or not text.strip():
        return ParsedDiversified("parse_error", (), (), "empty answer")
    lines = _cut_turns(text).splitlines()
    fenced = _fence_states(lines)
    entries: list[list[str]] = []
    base_indent = 0
    for i, line in enumerate(lines):
        if not fenced[i]:
            m = _ENTRY.match(line)
            if m and int(m["num"]) == len(entries) + 1 and (not entries or len(m["indent"]) <= base_indent):
                if not entries:
                    base_indent = len(m["indent"])
                entries.append([m["rest"]])
                continue
            if entries and _EXAMPLE_START.match(line):
                break
        if entries:
            entries[-1].append(line)
    if not entries:
        return ParsedDiversified("parse_error", (), (), "no numbered list")
    kept: list[str] = []
    dropped: list[str] = []
    outcomes = []
    for k, entry in enumerate(entries, 1):
        parsed = parse_fusion("\n".join(entry), (parent,))
        outcomes.append(parsed.outcome)
        if parsed.outcome != "ok":
            dropped.append(f"entry {k}: {parsed.reason}")
        elif any(_norm(parsed.text) == _norm(x) for x in kept):
            dropped.append(f"entry {k}: repeats an earlier entry")
        else:
            kept.append(parsed.text)
    if kept:
        return ParsedDiversified("ok", tuple(kept), tuple(dropped))
    outcome: Outcome = "invalid" if all(o == "invalid" for o in outcomes) else "parse_error"
    return ParsedDiversified(outcome, (), tuple(dropped), "; ".join(dropped))
