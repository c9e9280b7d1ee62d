"""Versioned prompt templates.

Each template is a YAML data file in this folder named ``<name>.v<version>.yaml``
and is referred to as ``name@vN`` (``if_fusion@v1``). Placeholders are
``{{variable}}`` (or ``{{ variable }}``, as the papers write them); values are
inserted verbatim, so code with braces or dollar signs in an instruction is safe.
A template that takes an instruction's elements (TaCIE) names the layout they
are written in: ``elements_format: plain`` (``Background Settings:`` and
``1. item``, the v1 templates) or ``appendix_b`` (``**Background Settings:**``
and ``1.item``, as in the paper's Appendix B). ``source:`` says where the text
is from: ``paper`` (word for word; ``tests/prompts/test_paper_prompts.py`` compares it
with ``../shared/papers``), ``authors_code`` (the papers' authors' public code,
where the paper gives no prompt), ``benchmark`` (a benchmark's own release, word
for word: MT-Bench's judge prompts from FastChat's ``judge_prompts.jsonl``, which
``tests/evaluation/test_mt_bench.py`` compares them with) or ``project`` (this
project's wording, the default). ``fusion validate`` and every manifest name the
templates a job uses and their source, and a run logs a warning for each that is
not the papers'.
The SHA-256 of the file's bytes is recorded on every output row, so a row
always says exactly which prompt produced it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ray_pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)
_DIR = Path(__file__).resolve().parent
_REF = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)@v(?P<version>\d+)$")
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
ELEMENTS_FORMATS = ("plain", "appendix_b")
#: where a template's text comes from: a paper (word for word), the papers' authors' public code, a benchmark's
#: own release (word for word), or this project
SOURCES = ("paper", "authors_code", "benchmark", "project")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    variables: tuple[str, ...]
    messages: tuple[tuple[str, str], ...]  # (role, content with {{placeholders}})
    sha256: str
    elements_format: str = "plain"  # how {{ components }} / {{ extracted }} is laid out (decomposition.format_components)
    source: str = "project"  # one of SOURCES; a file without `source:` is this project's wording

    @property
    def from_paper(self) -> bool:
        return self.source == "paper"

    def record(self) -> dict[str, str]:
        """What a manifest says about the template: its name, the hash of its file, and where its text is from."""
        return {"ref": self.ref, "sha256": self.sha256, "source": self.source}

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def render(self, **values: str) -> list[dict[str, str]]:
        missing = set(self.variables) - set(values)
        if missing:
            raise KeyError(f"{self.ref}: missing template variables {sorted(missing)}")

        def fill(text: str) -> str:
            return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)

        return [{"role": role, "content": fill(content)} for role, content in self.messages]


def available() -> list[str]:
    return sorted(f"{p.name.split('.v')[0]}@v{p.name.split('.v')[1].split('.')[0]}" for p in _DIR.glob("*.v*.yaml"))


@lru_cache(maxsize=None)
def load_template(ref: str) -> PromptTemplate:
    """Load ``name@vN`` from this folder; ConfigError if unknown or malformed."""
    m = _REF.match(ref)
    if not m:
        raise ConfigError(f"template {ref!r}: expected the form name@vN, e.g. if_fusion@v1")
    path = _DIR / f"{m['name']}.v{m['version']}.yaml"
    if not path.is_file():
        raise ConfigError(f"template {ref!r} not found (available: {', '.join(available())})")
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    try:
        messages = tuple((str(msg["role"]), str(msg["content"])) for msg in data["messages"])
        variables = tuple(data.get("variables") or ())
        elements_format = str(data.get("elements_format", "plain"))
        if elements_format not in ELEMENTS_FORMATS:
            raise ValueError(f"elements_format {elements_format!r} is not one of {ELEMENTS_FORMATS}")
        source = str(data.get("source", "project"))
        if source not in SOURCES:
            raise ValueError(f"source {source!r} is not one of {SOURCES}")
        if data["name"] != m["name"] or int(data["version"]) != int(m["version"]):
            raise ValueError("name/version inside the file do not match its file name")
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"template file {path.name} is malformed: {err}") from None
    used = {v for _, c in messages for v in PLACEHOLDER.findall(c)}
    if used != set(variables):
        raise ConfigError(f"template file {path.name}: placeholders {sorted(used)} != variables {sorted(variables)}")
    return PromptTemplate(
        name=m["name"],
        version=int(m["version"]),
        variables=variables,
        messages=messages,
        sha256=hashlib.sha256(raw).hexdigest(),
        elements_format=elements_format,
        source=source,
    )


def not_from_papers(templates: dict[str, PromptTemplate]) -> dict[str, str]:
    """The templates (by role) whose text is not a paper's, with their source."""
    return {role: f"{t.ref} ({t.source})" for role, t in templates.items() if not t.from_paper}


def warn_not_from_papers(templates: dict[str, PromptTemplate]) -> None:
    """Log one warning naming the templates (for roles the papers give a prompt for) that are not the papers' text."""
    other = not_from_papers(templates)
    if other:
        log.warning(
            "templates that are not the papers' text: %s (docs/fidelity.md)",
            ", ".join(f"{role}={what}" for role, what in other.items()),
        )


def job_templates(job: Any) -> dict[str, PromptTemplate]:
    """Every prompt template a job names (``*template`` fields holding ``name@version``), loaded, by field path."""
    found: dict[str, PromptTemplate] = {}

    def walk(data: Any, where: str) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                here = f"{where}.{key}" if where else key
                if key.endswith("template") and isinstance(value, str) and "@" in value and "/" not in value:
                    found[here] = load_template(value)
                else:
                    walk(value, here)
        elif isinstance(data, list):
            for n, value in enumerate(data):
                walk(value, f"{where}[{n}]")

    walk(job.model_dump(), "")
    return found


def template_report(job: Any) -> dict[str, Any]:
    """``fusion validate``'s template lines: each named template's ref, and those that are not the papers' text."""
    templates = job_templates(job)
    return {"templates": {k: t.ref for k, t in templates.items()}, "templates_not_from_papers": not_from_papers(templates)}
