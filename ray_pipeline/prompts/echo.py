"""Answers that repeat the prompt they were given.

A weak teacher (a small base model) often answers by copying its prompt: the
rules, the few-shot examples, or the whole template with a word changed. Such an
answer is not a new instruction or a decomposition, and every parser in this
project turns it into a ``parse_error`` instead of keeping it. This module is the
one home of that check, built from the template the prompt was rendered from:

* **rules**: runs of ``ECHO_NGRAM`` words of the template's fixed text (the
  system message and the message holding the inputs, placeholders cut out;
  for the papers' one-message templates that is the whole template, examples
  included). Any such run in an answer is an echo.
* **examples**: lines of four words or more of the few-shot turns (the messages
  between the system message and the last one). An answer line that starts
  with one is an echo; for text that must be new (``strict``), so is a run of
  ``ECHO_NGRAM`` of their words.
* **input markers**: the lines that introduce an input (``#Given Prompt 1#:``,
  ``Task 2 elements:``); a model that writes one has started a new example,
  so the parsers end the answer there.

Text the inputs themselves contain is never an echo, and when an input shares
a run of ``ECHO_NGRAM`` words with the template (GSM8K's "At 30, Anika is 4/3
the age of Maddie" is one of TaCIE's examples) the check is off for that
answer: the right decomposition of an example is the example's answer, and no
check can tell copying it from answering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from ray_pipeline.prompts import PLACEHOLDER, PromptTemplate

ECHO_NGRAM = 8  # this many words in a row from the template's text: the answer copies it
_WORD = re.compile(r"[a-z0-9']+")
_MARKER_ITEM = re.compile(r"^\s*(?:\d+[.)]|\(\d+\)|[-*•+])\s*")
# An input marker that is also a heading of the answer (B.3's **Prompt:**) does not end it.
_ANSWER_HEADING = re.compile(r"^[#*_\s]*prompt[#*_\s]*:?[#*_\s]*$", re.I)


def normalise_space(text: str) -> str:
    """Lowercase, with every run of whitespace made one space."""
    return " ".join(text.lower().split())


# Lines that only lay out an answer (a heading, N/A, a fence): an answer must write them too.
_LAYOUT = re.compile(
    r"^\s*(?:[#>*_\s]*[\w’' ]{0,60}?[#*_]*\s*[:：]\s*[*_]*|[#>]+[^\n]{0,60}|\*\*[^*\n]{0,60}\*\*\s*[:：]?"
    r"|[\s*_'\"’‘]*n/?a[\s*_'\"’‘.]*|```\w*)\s*$",
    re.I,
)


def content(text: str) -> str:
    """The text without layout lines and list markers: what an echo check compares."""
    return "\n".join(_MARKER_ITEM.sub("", line, count=1) for line in text.splitlines() if not _LAYOUT.match(line))


def ngrams(text: str, n: int = ECHO_NGRAM) -> set[tuple[str, ...]]:
    """Word n-grams of ``text``'s content (layout lines and list markers left out)."""
    words = _WORD.findall(content(text).lower().replace("’", "'"))
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def line_key(line: str) -> str:
    """A line without its list marker, lowercased, whitespace collapsed."""
    return normalise_space(_MARKER_ITEM.sub("", line, count=1))


@dataclass(frozen=True)
class TemplateEcho:
    """What a template's own text tells about answers that merely repeat the prompt."""

    rule_ngrams: frozenset[tuple[str, ...]]
    examples: frozenset[str]
    example_ngrams: frozenset[tuple[str, ...]]
    markers: frozenset[str]

    def why(self, lines: Sequence[str], inputs: Iterable[str] = (), strict: bool = False) -> str:
        """Why these answer lines are an echo of the prompt, or "".

        ``inputs`` are the values the prompt was rendered with; what they
        contain is not an echo. ``strict`` is for text that must be new (a new
        instruction): a run of the examples' words is an echo too.
        """
        if not lines or not (self.rule_ngrams or self.examples):
            return ""
        given = list(inputs)
        given_ngrams = set().union(*(ngrams(v) for v in given)) if given else set()
        if given_ngrams & (self.rule_ngrams | self.example_ngrams):
            return ""  # the input quotes the template (a seed that is one of its examples): copying is answering
        given_text = normalise_space("\n".join(given))
        words = ngrams("\n".join(lines))
        shared = (words & self.rule_ngrams) - given_ngrams
        if shared:
            return f"repeats the prompt's text: {' '.join(min(shared))!r}"
        for line in lines:
            key = line_key(line)
            if any(key.startswith(e) and e not in given_text for e in self.examples):
                return f"repeats the prompt's examples: {line.strip()[:60]!r}"
        shared = (words & self.example_ngrams) - given_ngrams if strict else set()
        if shared:
            return f"repeats the prompt's examples: {' '.join(min(shared))!r}"
        return ""

    def starts_input(self, line: str) -> bool:
        return normalise_space(line) in self.markers


NO_ECHO = TemplateEcho(frozenset(), frozenset(), frozenset(), frozenset())


def _fixed_ngrams(content: str) -> set[tuple[str, ...]]:
    """Word n-grams of a message's fixed text; none spans a placeholder."""
    return set().union(*(ngrams(part) for part in PLACEHOLDER.split(content)[::2]))


@lru_cache(maxsize=64)
def template_echo(template: PromptTemplate | None) -> TemplateEcho:
    if template is None:
        return NO_ECHO
    messages = list(template.messages)
    rules: set[tuple[str, ...]] = set()
    if messages and messages[0][0] == "system":
        rules |= _fixed_ngrams(messages.pop(0)[1])
    if messages:
        rules |= _fixed_ngrams(messages[-1][1])
    examples: set[str] = set()
    markers: set[str] = set()
    for _, content in template.messages[1:] if template.messages[0][0] == "system" else template.messages:
        lines = content.splitlines()
        for line, after in zip(lines, [*lines[1:], ""]):
            if PLACEHOLDER.search(after) and line.strip().endswith(":") and not _ANSWER_HEADING.match(line):
                markers.add(normalise_space(line))
    for _, content in messages[:-1]:  # the few-shot turns
        for line in content.splitlines():
            key = line_key(line)
            if len(key.split()) >= 4 and not PLACEHOLDER.search(line):
                examples.add(key)
    return TemplateEcho(
        frozenset(rules),
        frozenset(examples),
        frozenset(set().union(*(ngrams(e) for e in examples)) if examples else set()),
        frozenset(markers),
    )
