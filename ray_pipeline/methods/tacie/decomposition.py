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
:func:`parse_diversified`). Like :mod:`ray_pipeline.prompts.parsing`, the parsers never
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
from typing import Iterable, Sequence

from ray_pipeline.prompts.echo import ECHO_NGRAM, TemplateEcho, normalise_space, template_echo  # noqa: F401 (ECHO_NGRAM: documented above)
from ray_pipeline.prompts.parsing import EXPLANATION, LOOP_REPEATS, Outcome, declines, looping, parse_fusion, unwrap_prose_fence
from ray_pipeline.prompts import PromptTemplate

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


def format_components(c: Components, style: str = "plain") -> str:
    """The sections as they appear in prompts: numbered items, ``N/A`` for an empty section.

    ``style`` is the template's ``elements_format``: ``plain`` (``Background
    Settings:`` and ``1. item``, one block) or ``appendix_b`` (the layout of
    TaCIE's Appendix B: ``**Background Settings:**``, ``1.item``, a blank line
    between sections). Parsing the result gives ``c`` back when no item has a
    blank line or a list marker at the start of a line outside a code block.
    """
    if style not in ("plain", "appendix_b"):
        raise ValueError(f"unknown elements format {style!r}")
    paper = style == "appendix_b"
    parts = []
    for section in SECTIONS:
        items = getattr(c, section)
        sep = "." if paper else ". "
        body = "\n".join(f"{i}{sep}{item}" for i, item in enumerate(items, 1)) if items else EMPTY
        title = f"**{SECTION_TITLES[section]}:**" if paper else f"{SECTION_TITLES[section]}:"
        parts.append(f"{title}\n{body}")
    return ("\n\n" if paper else "\n").join(parts)


# ------------------------------------------------------------------ patterns
_SECTION_NAMES = {
    "background": r"backgrounds?(?:\s+(?:settings?|information|info|context))?",
    "objectives": r"objectives?|goals?",
    "constraints": r"constraints?|constrains?|requirements?",
}
_NAME_TO_SECTION = [(s, re.compile(rf"^(?:{p})$", re.I)) for s, p in _SECTION_NAMES.items()]
_OPEN = r"^\s*(?:(?:#+|>)\s*)*(?P<num>\d+[.)]\s*)?(?:\*\*|__)?\s*"
_CLOSE = r"\s*(?:\(s\))?\s*(?P<close>\*\*|__|#+)?\s*(?P<colon>[:：])?\s*(?:\*\*|__)?\s*(?P<rest>.*?)\s*$"
_HEADER = re.compile(
    _OPEN
    + r"(?:(?:extract(?:ed)?|evolved|updated|revised|new|fused|combined|merged|integrated|final|the)\s+)*"
    + rf"(?P<name>{'|'.join(_SECTION_NAMES.values())})"
    + _CLOSE,
    re.I,
)
_REWRITTEN = re.compile(
    _OPEN
    + r"(?P<name>(?:rewritten|new|evolved|fused|combined|final|updated|revised|merged)\s+(?:prompt|instruction|task)|prompt)"
    + _CLOSE,
    re.I,
)
# A line where an echoed few-shot pattern starts a new example.
_EXAMPLE_START = re.compile(
    r"^\s*[#>*_\s]*(?:example(?:\s*\d+)?|(?:example\s+)?(?:given\s+|original\s+|seed\s+|next\s+)?(?:instruction|prompt)"
    r"(?:\s*(?:\d+|[ab]\b))?|original|rewritten)\s*[#*_]*\s*(?:[:：]|$)",
    re.I,
)
_INPUT_START = re.compile(r"^\s*[#>*_\s]*input\s*[#*_]*\s*(?:[:：]|$)", re.I)
_TURN_TOKEN = re.compile(r"<(?:start_of_turn|end_of_turn|eos|\|im_start\||\|im_end\||\|endoftext\|)>")
# "1. item", "1.item" (Appendix B writes no space), "1) item", "(1) item", "- item"; "1.5 cups" is not one.
_MARKER = re.compile(
    r"^\s*(?:\d+[.)](?:\s+|(?=[^\d\s]))|\d+[.)]$|\(\d+\)(?:\s+|$)|[-*•+](?:\s+|$)|[-•](?=[A-Za-z]))(?P<text>.*?)\s*$"
)
# A heading of a section this parser does not know ("**Context:**", "### Notes", "Context:").
_OTHER_HEADER = re.compile(
    r"^\s*(?:#+\s*(?P<h1>[^#\n]{1,40}?)\s*#*\s*[:：]?|(?:\*\*|__)(?P<h2>[^*_\n]{1,40}?)\s*(?:[:：]\s*(?:\*\*|__)|(?:\*\*|__)\s*[:：]?)"
    r"|(?P<h3>context|notes?|assumptions?|tasks?|inputs?|outputs?|examples?|answer|solution|explanation|summary|decomposition)\s*[:：])\s*$",
    re.I,
)
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_RULE = re.compile(r"^\s*[-*_=#]{3,}\s*$")  # a horizontal rule or underline, not an item
_NA = re.compile(
    r"^[\s*_`'\"(\[’‘“”]*(?:n/?a|none|nil|nothing|not\s+applicable|no\s+(?:explicit\s+|specific\s+|additional\s+|particular\s+)?"
    r"(?:background(?:\s+settings?)?|objectives?|constraints?|requirements?|context))"
    r"(?:\s+(?:given|specified|provided|stated|mentioned|required))?[\s.*_`'\")\]’‘“”]*(?:\(.*\))?\s*$",
    re.I,
)
# Top-level entries of a diversification answer: "1.", "1)", "(1)", "**1.**", "Instruction 1:".
_ENTRY = re.compile(
    r"^(?P<indent>\s*)(?:\*\*|__)?\s*(?:(?:new\s+)?instruction\s+)?\(?(?P<num>\d+)\s*[.):]\s*(?:\*\*|__)?(?:\s+|$)(?P<rest>.*?)\s*$",
    re.I,
)


_BOLD_NUMBERED = re.compile(r"^\s*\d+[.)]\s*(?:\*\*|__)")


def _header(line: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """A header needs a colon, closing decoration, or nothing after its name; prose does not count."""
    m = pattern.match(line)
    # "1. Objectives: ..." is an item; "1. Objectives:" and "1.**Objectives:** ..." are headers
    if not m or (m["num"] and m["rest"] and not _BOLD_NUMBERED.match(line)):
        return None
    return m if (m["colon"] or m["close"] or not m["rest"]) else None


def _section_of(name: str) -> str:
    return next(s for s, p in _NAME_TO_SECTION if p.match(" ".join(name.split())))


def _cut_turns(text: str) -> str:
    m = _TURN_TOKEN.search(text)
    return text[: m.start()] if m else text


def _is_na(item: str) -> bool:
    return bool(_NA.match(item))


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


def _looping(lines: Sequence[str]) -> str:
    return looping(lines, _fence_states(list(lines)))


# ------------------------------------------------------------------ sections
class _SectionReader:
    """Collects the items of headed sections, line by line."""

    def __init__(self) -> None:
        self.sections: dict[str, list[str]] = {}
        self.current: str | None = None
        self._item: list[str] | None = None  # lines of the open item
        self._marked = False  # the open item was opened by a list marker
        self._indent = 0  # indentation of the open item's marker
        self.listed: set[str] = set()  # sections with a list marker or N/A: later unmarked text is not an item
        self.error = ""
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
            if self._item is not None and self._marked:  # "1.Code to debug:" or "2." alone on the line before
                if self._item == [""]:
                    self._item = []
            else:
                self._close()
                self._item, self._marked = [], False
            self._item.append(line.strip())
            self.in_fence = True
            return
        marker = _MARKER.match(line)
        indent = len(line) - len(line.lstrip())
        if marker and self._item is not None and self._marked and indent > self._indent:
            self._item.append(line.rstrip())  # a nested list stays part of its item
            return
        if marker:
            self._close()
            text = marker["text"] or ""
            self._item, self._marked, self._indent = [text], True, indent
            self.listed.add(self.current)
            if _FENCE.match(text):
                self.in_fence = True
            return
        if self._item is not None and self._marked and not EXPLANATION.match(line):
            self._item.append(line.strip())
            return
        after_na = self._item is not None and not self._marked and _is_na("\n".join(self._item))
        if not self.error and (self.current in self.listed or after_na or EXPLANATION.match(line)):
            self.error = f"text after the {SECTION_TITLES[self.current]} list: {line.strip()[:60]!r}"
        self._close()
        self._item, self._marked = [line.strip()], False

    def _close(self) -> None:
        if self._item is not None and self.current is not None:
            item = "\n".join(self._item).strip()
            items = self.sections[self.current]
            if item and _is_na(item):
                self.listed.add(self.current)
            elif item and item not in items:  # a looping model repeats items
                items.append(item)
        self._item, self._marked = None, False

    def finish(self, inherit: Components | None = None) -> tuple[Components | None, str]:
        """The sections read; a section with no header at all is ``inherit``'s (or empty)."""
        if self.in_fence:
            return None, "unclosed code block (answer cut off?)"
        if self.error:
            return None, self.error
        self._close()
        if not self.sections:
            return None, "no section header (Background Settings / Objectives / Constraints)"
        c = Components(*(
            tuple(self.sections[s]) if s in self.sections else (getattr(inherit, s) if inherit else ()) for s in SECTIONS
        ))
        if not c.objectives:
            return None, "no objectives"
        return c, ""


def _other_header(line: str) -> str:
    """The name of a section heading this parser does not know, or ""."""
    m = _OTHER_HEADER.match(line)
    if not m or _EXAMPLE_START.match(line) or _header(line, _REWRITTEN) or _header(line, _HEADER):
        return ""
    return (m["h1"] or m["h2"] or m["h3"] or "").strip(" *_:：")


def _read_sections(
    lines: list[str], echo: TemplateEcho, inputs: Sequence[str] = (), inherit: Components | None = None
) -> tuple[Components | None, str]:
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
            other = _other_header(line)
            if other:
                why = echo.why(lines[:i], inputs)
                return None, why or f"a section this parser does not know: {other!r}"
        reader.line(line)
    why = echo.why(lines[:end], inputs)
    if why:
        return None, why
    return reader.finish(inherit)


def parse_decomposition(
    text: str | None, template: PromptTemplate | None = None, inputs: Sequence[str] = ()
) -> ParsedComponents:
    """Read a decomposition answer into :class:`Components`, or a parse error with its reason.

    With ``template`` (the template the prompt was rendered from), an answer
    that repeats its text is a parse error (:mod:`ray_pipeline.prompts.echo`); ``inputs``
    (the instruction decomposed) may be copied freely. The lines that introduce
    the template's inputs (``**Given Prompt:**``) end the answer.
    """
    if text is None or not text.strip():
        return ParsedComponents("parse_error", None, "empty answer")
    components, reason = _read_sections(unwrap_prose_fence(_cut_turns(text)).splitlines(), template_echo(template), inputs)
    if components is None:
        return ParsedComponents("parse_error", None, reason)
    return ParsedComponents("ok", components)


# ------------------------------------------------------------------ evolution
_REWRITTEN_EXAMPLE = re.compile(r"^[#*_\s]*rewritten[#*_:\s]*$", re.I)
def _next_text(lines: list[str], i: int) -> str:
    """The first non-blank line after line ``i``."""
    return next((line for line in lines[i + 1 :] if line.strip()), "")


def parse_evolution(
    text: str | None,
    parents: tuple[str, ...],
    template: PromptTemplate | None = None,
    inputs: Sequence[str] = (),
    inherit: Components | None = None,
) -> ParsedEvolution:
    """Read a depth-evolution or fusion answer: the new prompt and its sections, in either order.

    The prompt's heading is ``**Prompt:**`` (Appendix B.3), ``**Fused Prompt:**``
    (B.4, after the fused sections) or ``Rewritten Prompt:`` (the v1
    templates); section headings may carry ``Fused``/``Merged``/``Updated``.
    ``invalid`` when the teacher answered ``INVALID PROMPT``; ``parse_error``
    when the prompt is missing, empty, too short, a copy of a parent, or not
    an instruction (:func:`ray_pipeline.prompts.parsing.parse_fusion`), when the
    sections are missing or have no objectives, or when the answer repeats the
    template's own text. ``inputs`` are the other values the prompt was rendered
    with (the parents' elements), which the answer may copy. ``inherit`` fills
    a section the answer leaves out entirely (B.3's second example has no
    **Objectives:**, which the template forbids changing): the parent's.
    """
    if text is None or not text.strip():
        return ParsedEvolution("parse_error", "", None, "empty answer")
    echo = template_echo(template)
    given = (*parents, *inputs)
    lines = unwrap_prose_fence(_cut_turns(text)).splitlines()
    fenced = _fence_states(lines)
    rewritten = [i for i, line in enumerate(lines) if not fenced[i] and _REWRITTEN_EXAMPLE.match(line)]
    if rewritten:  # B.3's "### Rewritten": what comes before restates the original
        lines, fenced = lines[rewritten[-1] + 1 :], fenced[rewritten[-1] + 1 :]
    start = next((i for i, line in enumerate(lines) if not fenced[i] and _header(line, _REWRITTEN)), None)
    if start is None:
        why = echo.why(lines, given)
        if why:
            return ParsedEvolution("parse_error", "", None, why)
        if declines("\n".join(lines)):
            return ParsedEvolution("invalid", "", None, "teacher declined")
        return ParsedEvolution("parse_error", "", None, "no 'Prompt:' section")
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
        return ParsedEvolution("parse_error", "", None, "prompt: empty")
    parsed = parse_fusion("\n".join(prompt), parents)
    if parsed.outcome == "invalid":  # "Prompt: INVALID PROMPT", whatever the reasons before it
        return ParsedEvolution("invalid", "", None, f"prompt: {parsed.reason}")
    why = echo.why(head, given) or echo.why(prompt, given, strict=True) or _looping(prompt)
    if why:
        return ParsedEvolution("parse_error", "", None, why)
    if parsed.outcome != "ok":
        return ParsedEvolution("parse_error", "", None, f"prompt: {parsed.reason}")
    components, reason = _read_sections(head if head_has_sections else sections_after, echo, given, inherit)
    if components is None:
        return ParsedEvolution("parse_error", "", None, f"sections: {reason}")
    return ParsedEvolution("ok", parsed.text, components)


# ------------------------------------------------------------ diversification
# Appendix B.2's entries: "**New Objective 1:**" (read past) and "**New Prompt 1:** the prompt".
_NEW_PROMPT = re.compile(r"^\s*[#>*_\s]*new\s+prompt\s*(?P<num>\d+)\s*[#*_]*\s*[:：]?\s*[*_]*\s*(?P<rest>.*?)\s*$", re.I)
_NEW_OBJECTIVE = re.compile(r"^\s*[#>*_\s]*new\s+objective\s*(?P<num>\d+)\s*[#*_]*\s*[:：]?", re.I)


def _b2_entries(lines: list[str], fenced: list[bool], echo: TemplateEcho) -> tuple[list[list[str]], list[str]]:
    """Appendix B.2's ``**New Prompt k:**`` entries, and the text before the first."""
    entries: list[list[str]] = []
    preamble = lines
    current: list[str] | None = None
    for i, line in enumerate(lines):
        if not fenced[i]:
            m = _NEW_PROMPT.match(line)
            if m:
                if int(m["num"]) != len(entries) + 1:
                    break  # the numbering starts over: a new example
                if not entries:
                    preamble = lines[:i]
                current = [m["rest"]]
                entries.append(current)
                continue
            if _NEW_OBJECTIVE.match(line):
                current = None
                continue
            if entries and (_EXAMPLE_START.match(line) or echo.starts_input(line)):
                break
        if current is not None:
            current.append(line)
    return entries, preamble


def _list_entries(lines: list[str], fenced: list[bool], echo: TemplateEcho, n: int | None) -> tuple[list[list[str]], list[str]]:
    """Top-level entries of a numbered list, and the text before the first."""
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
    return entries, preamble


_PROMPT_LABEL = re.compile(r"^\s*(?:\*\*|__)?\s*new\s+prompt\s*(?:\d+\s*)?[:：]\s*(?:\*\*|__)?\s*(?P<rest>.*)$", re.I)


def _prompt_part(entry: list[str]) -> list[str]:
    """An entry written ``**New Objective:** ... **New Prompt:** ...``: the prompt only."""
    fenced = _fence_states(entry)
    for i, line in enumerate(entry):
        m = None if fenced[i] else _PROMPT_LABEL.match(line)
        if m:
            return [m["rest"], *entry[i + 1 :]]
    return entry


def _has_sections(entry: list[str]) -> str:
    fenced = _fence_states(entry)
    if any(not fenced[i] and _header(line, _HEADER) for i, line in enumerate(entry)):
        return "gives Background Settings / Objectives / Constraints sections, which B.2 asks not to"
    return ""


def parse_diversified(
    text: str | None,
    parent: str,
    template: PromptTemplate | None = None,
    n: int | None = None,
    inputs: Sequence[str] = (),
) -> ParsedDiversified:
    """Read the new instructions written from ``parent``.

    Two layouts: Appendix B.2's ``**New Objective k:**`` / ``**New Prompt k:**``
    pairs (the prompts are kept, the objectives read past), or a numbered list
    ``1.``, ``2.``, ... (the v1 template; a nested list inside an entry,
    indented or restarting at 1, stays part of it; with ``n``, the number asked
    for, the list ends after entry ``n``). Entries are numbered in sequence; a
    number out of sequence starts a new example and ends the answer. Each entry
    passes the checks of a fused instruction
    (:func:`ray_pipeline.prompts.parsing.parse_fusion`); an entry that fails them,
    repeats an earlier one, copies the template's own text, or loops, is
    dropped with its reason. An answer whose text before the entries repeats
    the template's own text is a parse error.
    """
    if text is None or not text.strip():
        return ParsedDiversified("parse_error", (), (), "empty answer")
    echo = template_echo(template)
    given = (parent, *inputs)
    lines = unwrap_prose_fence(_cut_turns(text)).splitlines()
    fenced = _fence_states(lines)
    if any(not fenced[i] and _NEW_PROMPT.match(line) for i, line in enumerate(lines)):
        entries, preamble = _b2_entries(lines, fenced, echo)
    else:
        entries, preamble = _list_entries(lines, fenced, echo, n)
    why = echo.why(preamble, given)
    if why:
        return ParsedDiversified("parse_error", (), (), why)
    if not entries:
        return ParsedDiversified("parse_error", (), (), "no numbered list or **New Prompt 1:**")
    kept: list[str] = []
    dropped: list[str] = []
    outcomes = []
    for k, entry in enumerate(entries, 1):
        entry = _prompt_part(entry)
        parsed = parse_fusion("\n".join(entry), (parent,))
        outcomes.append(parsed.outcome)
        why = echo.why(entry, given, strict=True) or _looping(entry) or _has_sections(entry)
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
