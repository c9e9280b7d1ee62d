"""Versioned prompt templates.

Each template is a YAML data file in this folder named ``<name>.v<version>.yaml``
and is referred to as ``name@vN`` (``if_fusion@v1``). Placeholders are
``{{variable}}``; values are inserted verbatim, so code with braces or dollar
signs in an instruction is safe. The SHA-256 of the file's bytes is recorded on
every output row, so a row always says exactly which prompt produced it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ray_pipeline.errors import ConfigError

_DIR = Path(__file__).resolve().parent
_REF = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)@v(?P<version>\d+)$")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    variables: tuple[str, ...]
    messages: tuple[tuple[str, str], ...]  # (role, content with {{placeholders}})
    sha256: str

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def render(self, **values: str) -> list[dict[str, str]]:
        missing = set(self.variables) - set(values)
        if missing:
            raise KeyError(f"{self.ref}: missing template variables {sorted(missing)}")

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)

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
        if data["name"] != m["name"] or int(data["version"]) != int(m["version"]):
            raise ValueError("name/version inside the file do not match its file name")
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"template file {path.name} is malformed: {err}") from None
    used = {v for _, c in messages for v in _PLACEHOLDER.findall(c)}
    if used != set(variables):
        raise ConfigError(f"template file {path.name}: placeholders {sorted(used)} != variables {sorted(variables)}")
    return PromptTemplate(
        name=m["name"],
        version=int(m["version"]),
        variables=variables,
        messages=messages,
        sha256=hashlib.sha256(raw).hexdigest(),
    )
