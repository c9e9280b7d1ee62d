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

* given the template the prompt was rendered from, an answer that repeats the
  template's own text is a parse error (a weak model echoing its prompt): a run
  of ``ECHO_NGRAM`` words of its rules, or a line (four words or more) of its
  few-shot examples, which makes a seed that equals an example unusable; the
  lines that introduce the template's inputs (``Its elements:``, ``Task 2:``)
  end the answer.

Evolution answers (depth evolution, task fusion) are ``Rewritten Prompt:``
followed by the updated sections (the templates ask for the prompt first: a
small model that loops in the sections has written it already), or the other
order. The rewritten
prompt ends at a ``Background`` header (the pattern starting over), at a
section header followed by N/A, or at an input marker; ``Constraints:`` with a
list under it may be part of a prompt and stays. An evolved item without its
sections is a ``parse_error``: every item of the pool must carry components to
be evolved again, so a rewritten prompt alone is not kept. A new instruction
(rewritten prompt, diversified entry) in which one line of four or more words
appears ``LOOP_REPEATS`` times is a degenerate loop and is not kept; a
repeated section item is kept once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from ray_pipeline.parsing import INVALID_MARKER, Outcome, normalise_space, parse_fusion
from ray_pipeline.prompts import PromptTemplate

SECTIONS: tuple[str, ...] = ("background", "objectives", "constraints")
SECTION_TITLES: dict[str, str] = {
    "background": "Background Settings",
    "objectives": "Objectives",
    "constraints": "Constraints",
}
EMPTY = "N/A"
REWRITTEN_TITLE = "Rewritten Prompt"
LOOP_REPEATS = 3  # a line of four or more words this often in a new instruction: the model is looping
ECHO_NGRAM = 8  # this many words in a row from the template's rules or examples: a new instruction copies them


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
_OPEN = r"^\s*(?:(?:#+|>)\s*)*(?P<num>\d+[.)]\s+)?(?:\*\*|__)?\s*"
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
_INPUT_START = re.compile(r"^\s*[#>*_\s]*input\s*[#*_]*\s*(?:[:：]|$)", re.I)
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
    """A header needs a colon, closing decoration, or nothing after its name; prose does not count."""
    m = pattern.match(line)
    if not m or (m["num"] and m["rest"]):  # "1. Objectives: ..." is an item, "1. Objectives:" a header
        return None
    return m if (m["colon"] or m["close"] or not m["rest"]) else None


def _section_of(name: str) -> str:
    return next(s for s, p in _NAME_TO_SECTION if p.match(" ".join(name.split())))


def _cut_turns(text: str) -> str:
    m = _TURN_TOKEN.search(text)
    return text[: m.start()] if m else text


def _is_na(item: str) -> bool:
    return bool(_NA.match(item))


def _line_key(line: str) -> str:
    marker = _MARKER.match(line)
    return normalise_space((marker["text"] or "") if marker else line)


def _opens_fence(line: str) -> bool:
    marker = _MARKER.match(line)
    return bool(_FENCE.match(line) or (marker and marker["text"] and _FENCE.match(marker["text"])))


def _fence_states(lines: list[str]) -> list[bool]:
    """For each line: is it inside a fenced block (its closing line included)?"""
    states, inside = [], False
    for line in lines:
        states.append(inside)
        if (inside and _FENCE.match(line)) or (not inside and _opens_fence(line)):
            inside = not inside
    return states


@dataclass(frozen=True)
class _Echo:
    """What a template's own text tells about answers that merely repeat the prompt."""

    rule_ngrams: frozenset[tuple[str, ...]]  # word n-grams of the system message (rules, format)
    examples: frozenset[str]  # lines of the few-shot turns
    example_ngrams: frozenset[tuple[str, ...]]
    markers: frozenset[str]  # lines that introduce the inputs ("Instruction:", "Task 1 elements:")

    def why(self, lines: Sequence[str], strict: bool = False) -> str:
        """Why these answer lines are an echo of the prompt, or "".

        Any run of ``ECHO_NGRAM`` words of the rules is an echo, and so is a
        line that starts with a line of the examples (a looping model often runs
        on without a line break). ``strict`` is for text that must be new (a new
        instruction): a run of ``ECHO_NGRAM`` words of the examples is an echo too.
        """
        words = _ngrams("\n".join(lines))
        shared = words & self.rule_ngrams
        if shared:
            return f"repeats the prompt's rules: {' '.join(min(shared))!r}"
        for line in lines:
            key = _line_key(line)
            if any(key.startswith(e) for e in self.examples):
                return f"repeats the prompt's examples: {line.strip()[:60]!r}"
        shared = words & self.example_ngrams if strict else set()
        if shared:
            return f"repeats the prompt's examples: {' '.join(min(shared))!r}"
        return ""

    def starts_input(self, line: str) -> bool:
        return normalise_space(line) in self.markers


_NO_ECHO = _Echo(frozenset(), frozenset(), frozenset(), frozenset())


def _ngrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + ECHO_NGRAM]) for i in range(len(words) - ECHO_NGRAM + 1)}


@lru_cache(maxsize=64)
def _echo_of(template: PromptTemplate | None) -> _Echo:
    """What an answer has no reason to repeat from ``template``: its rules (the
    system message), its few-shot lines of at least four words, and the lines
    that introduce its inputs."""
    if template is None:
        return _NO_ECHO
    examples: set[str] = set()
    markers: set[str] = set()
    for _, content in template.messages[1:]:
        lines = content.splitlines()
        for line, after in zip(lines, [*lines[1:], ""]):
            if "{{" in after and line.strip().endswith(":"):
                markers.add(normalise_space(line))
            if "{{" in line or _header(line, _HEADER) or _header(line, _REWRITTEN) or _EXAMPLE_START.match(line):
                continue
            key = _line_key(line)
            if len(key.split()) >= 4:
                examples.add(key)
    system = template.messages[0][1] if template.messages[0][0] == "system" else ""
    return _Echo(
        frozenset(_ngrams(system)),
        frozenset(examples),
        frozenset(_ngrams("\n".join(examples))),
        frozenset(markers),
    )


def _looping(lines: Sequence[str]) -> str:
    """Why these lines are a repetition loop (a line of four or more words three times), or ""."""
    seen: dict[str, int] = {}
    for line, fenced in zip(lines, _fence_states(list(lines))):
        key = _line_key(line)
        if not fenced and len(key.split()) >= 4:
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == LOOP_REPEATS:
                return f"degenerate output: a line repeated {LOOP_REPEATS} times: {line.strip()[:60]!r}"
    return ""


# ------------------------------------------------------------------ sections
class _SectionReader:
    """Collects the items of headed sections, line by line."""

    def __init__(self) -> None:
        self.sections: dict[str, list[str]] = {}
        self.current: str | None = None
        self._item: list[str] | None = None  # lines of the open item
        self._marked = False  # the open item was opened by a list marker
        self.in_fence = False
        self.preamble_fence = False

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
        if self.current is None:  # text before the first header; only its code blocks matter
            if _FENCE.match(line):
                self.preamble_fence = not self.preamble_fence
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
            if self._item == [""] and self._marked:  # "2." alone on the line before the block
                self._item = []
            else:
                self._close()
                self._item, self._marked = [], False
            self._item.append(line.strip())
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
            items = self.sections[self.current]
            if item and not _is_na(item) and item not in items:  # a looping model repeats items
                items.append(item)
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


def _read_sections(lines: list[str], echo: _Echo) -> tuple[Components | None, str]:
    reader = _SectionReader()
    end = len(lines)
    for i, line in enumerate(lines):
        if not (reader.in_fence or reader.preamble_fence):
            m = _header(line, _HEADER)
            if m:
                if not reader.header(_section_of(m["name"]), m["rest"]):
                    end = i
                    break
                continue
            if reader.seen and (_EXAMPLE_START.match(line) or _INPUT_START.match(line) or echo.starts_input(line)):
                end = i
                break
        reader.line(line)
    why = echo.why(lines[:end])
    if why:
        return None, why
    return reader.finish()


def parse_decomposition(text: str | None, template: PromptTemplate | None = None) -> ParsedComponents:
    """Read a decomposition answer into :class:`Components`, or a parse error with its reason.

    With ``template`` (the template the prompt was rendered from), an answer
    that repeats ``ECHO_NGRAM`` words in a row of its rules, or a line of its
    examples, is a parse error: a weak model echoing its prompt, not a
    decomposition. The lines that introduce the template's inputs
    (``Instruction:``) also end the answer.
    """
    if text is None or not text.strip():
        return ParsedComponents("parse_error", None, "empty answer")
    components, reason = _read_sections(_cut_turns(text).splitlines(), _echo_of(template))
    if components is None:
        return ParsedComponents("parse_error", None, reason)
    return ParsedComponents("ok", components)


# ------------------------------------------------------------------ evolution
def _declines(lines: list[str]) -> bool:
    """``INVALID PROMPT`` opens or closes the answer (inside it, it may be an echo of the rules)."""
    text = [normalise_space(line).strip(" .!*#`'\"") for line in lines if line.strip()]
    marker = INVALID_MARKER.lower()
    return bool(text) and (text[0].startswith(marker) or text[-1].endswith(marker))


def _next_text(lines: list[str], i: int) -> str:
    """The first non-blank line after line ``i``."""
    return next((line for line in lines[i + 1 :] if line.strip()), "")


def parse_evolution(
    text: str | None, parents: tuple[str, ...], template: PromptTemplate | None = None
) -> ParsedEvolution:
    """Read a depth-evolution or fusion answer: ``Rewritten Prompt:`` and the updated sections (either order).

    ``invalid`` when the teacher answered ``INVALID PROMPT``; ``parse_error`` when
    the rewritten prompt is missing, empty, too short or a copy of a parent, when
    its sections are missing or have no objectives, or when the answer repeats
    the template's own text (see :func:`parse_decomposition`).
    """
    if text is None or not text.strip():
        return ParsedEvolution("parse_error", "", None, "empty answer")
    echo = _echo_of(template)
    lines = _cut_turns(text).splitlines()
    fenced = _fence_states(lines)
    start = next((i for i, line in enumerate(lines) if not fenced[i] and _header(line, _REWRITTEN)), None)
    if start is None:
        if _declines(lines):
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
            if m and (_section_of(m["name"]) == "background" or _is_na(m["rest"] or _next_text(lines, i))):
                break  # the pattern starts over; "Constraints:" with a list can belong to a prompt
            if echo.starts_input(line) or (any(p.strip() for p in prompt) and _EXAMPLE_START.match(line)):
                break
        prompt.append(line)
    if not "".join(prompt).strip():
        return ParsedEvolution("parse_error", "", None, "rewritten prompt: empty")
    parsed = parse_fusion("\n".join(prompt), parents)
    if parsed.outcome == "invalid":
        return ParsedEvolution("invalid", "", None, f"rewritten prompt: {parsed.reason}")
    why = echo.why(head) or echo.why(prompt, strict=True) or _looping(prompt)
    if why:
        return ParsedEvolution("parse_error", "", None, why)
    if parsed.outcome != "ok":
        return ParsedEvolution("parse_error", "", None, f"rewritten prompt: {parsed.reason}")
    components, reason = _read_sections(head if head_has_sections else sections_after, echo)
    if components is None:
        return ParsedEvolution("parse_error", "", None, f"sections: {reason}")
    return ParsedEvolution("ok", parsed.text, components)


# ------------------------------------------------------------ diversification
def parse_diversified(
    text: str | None, parent: str, template: PromptTemplate | None = None, n: int | None = None
) -> ParsedDiversified:
    """Read a numbered list of new instructions written from ``parent``.

    Entries are the top-level items ``1.``, ``2.``, ... numbered in sequence (a
    nested list inside an entry, indented or restarting at 1, stays part of it);
    with ``n`` (the number asked for) the list ends after entry ``n``. Each
    entry passes the checks of a fused instruction
    (:func:`ray_pipeline.parsing.parse_fusion`); an entry that fails them,
    repeats an earlier one, copies a line of the template's examples or rules,
    or loops, is dropped with its reason. An answer whose text before the list
    repeats the template's own text is a parse error (see :func:`parse_decomposition`).
    """
    if text is None or not text.strip():
        return ParsedDiversified("parse_error", (), (), "empty answer")
    echo = _echo_of(template)
    lines = _cut_turns(text).splitlines()
    fenced = _fence_states(lines)
    entries: list[list[str]] = []
    base_indent = 0
    preamble = lines
    for i, line in enumerate(lines):
        if not fenced[i]:
            m = _ENTRY.match(line)
            if m and n is not None and int(m["num"]) == n + 1 == len(entries) + 1 and len(m["indent"]) <= base_indent:
                break
            if m and int(m["num"]) == len(entries) + 1 and (not entries or len(m["indent"]) <= base_indent):
                if not entries:
                    base_indent = len(m["indent"])
                    preamble = lines[:i]
                entries.append([m["rest"]])
                continue
            if entries and (_EXAMPLE_START.match(line) or echo.starts_input(line)):
                break
        if entries:
            entries[-1].append(line)
    why = echo.why(preamble)
    if why:
        return ParsedDiversified("parse_error", (), (), why)
    if not entries:
        return ParsedDiversified("parse_error", (), (), "no numbered list")
    kept: list[str] = []
    dropped: list[str] = []
    outcomes = []
    for k, entry in enumerate(entries, 1):
        parsed = parse_fusion("\n".join(entry), (parent,))
        outcomes.append(parsed.outcome)
        why = echo.why(entry, strict=True) or _looping(entry)
        if why:
            dropped.append(f"entry {k}: {why}")
        elif parsed.outcome != "ok":
            dropped.append(f"entry {k}: {parsed.reason}")
        elif any(normalise_space(parsed.text) == normalise_space(x) for x in kept):
            dropped.append(f"entry {k}: repeats an earlier entry")
        else:
            kept.append(parsed.text)
    if kept:
        return ParsedDiversified("ok", tuple(kept), tuple(dropped))
    outcome: Outcome = "invalid" if all(o == "invalid" for o in outcomes) else "parse_error"
    return ParsedDiversified(outcome, (), tuple(dropped), "; ".join(dropped))
