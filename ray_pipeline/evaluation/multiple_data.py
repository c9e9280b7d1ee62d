"""Load MultiPL-E's HumanEval problems of one language as :class:`Problem` rows.

Sources, in the order tried:

- a local directory holding ``humaneval-<lang>-reworded.jsonl`` (the layout of
  ``../shared/data/bench/multipl-e``), or one ``.jsonl`` file (a row per line),
  or one ``.json`` file (a JSON array, MultiPL-E's ``prompts/*.json``);
- with no path, the directory in ``$FUSION_MULTIPLE_PATH`` when it is set (the
  evaluation image bakes the data there, as ``$HUMANEVAL_OVERRIDE_PATH`` for evalplus);
- otherwise the Hugging Face dataset ``nuprl/MultiPL-E``, config
  ``humaneval-<lang>`` (the "reworded" prompts), split ``test``, at the revision
  bigcode-evaluation-harness pins. Today it is stored as parquet, no loading script.

Where the data is (the variable, the file name, the hub dataset, config and
revision) is the ``multiple`` row of ``core.benchmark_data``'s table, found by
its ``locate``; reading and checking MultiPL-E's rows is this module's.

Each row needs ``name``, ``prompt``, ``tests`` and ``stop_tokens``; ``language``,
when present, must be the language asked for. Any problem with the input is an
:class:`EvaluationError` naming the file and the cause.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ray_pipeline.core.benchmark_data import NAMED_BENCHMARKS, Location, hub_rows, locate
from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation.problems import LANGUAGE_ALIASES, MULTIPLE_LANGUAGES, Problem

MULTIPLE = NAMED_BENCHMARKS["multiple"]  # where the data is: core.benchmark_data's table
HF_DATASET = MULTIPLE.hub
#: the revision bigcode-evaluation-harness pins at its HEAD (2025-07)
HF_REVISION = MULTIPLE.revision
REQUIRED_FIELDS = ("name", "prompt", "tests", "stop_tokens")
#: a directory of humaneval-<lang>-reworded.jsonl used when a benchmark gives no path
PATH_ENV = MULTIPLE.env
_FUNCTION_NAME = re.compile(r"(\w+)\s*\(")


def multiple_language(language: str) -> str:
    """The MultiPL-E key (``java``, ``js``, ``cpp``, ``php``, ``swift``, ``rs``) of a language name or alias."""
    key = LANGUAGE_ALIASES.get(language.strip().lower())
    if key not in MULTIPLE_LANGUAGES:
        raise EvaluationError(f"unknown MultiPL-E language {language!r}: "
                              f"expected one of {', '.join(MULTIPLE_LANGUAGES)}")
    return key


def data_file_name(language: str) -> str:
    return MULTIPLE.file_for(multiple_language(language))


def load_multiple(language: str, path: str | Path | None = None, limit: int | None = None) -> list[Problem]:
    """The problems of ``language``, in file order; the first ``limit`` of them when given."""
    lang = multiple_language(language)
    if limit is not None and limit < 0:
        raise EvaluationError(f"MultiPL-E {lang}: limit must be >= 0, got {limit}")
    found = locate("multiple", path=path, language=lang)
    assert found is not None  # the table names a hub dataset
    if found.path is None:
        source = f"{found.hub} {found.config}@{(found.revision or '')[:8]}"
        rows = [(f"row {i + 1}", row) for i, row in enumerate(_hub_rows(found))]
    else:
        source = found.path
        rows = _file_rows(Path(found.path))
    problems = [_problem(row, lang, source, where) for where, row in rows]
    seen: set[str] = set()
    for problem in problems:
        if problem.task_id in seen:
            raise EvaluationError(f"{source}: problem {problem.task_id} appears twice")
        seen.add(problem.task_id)
    if not problems:
        raise EvaluationError(f"{source}: no MultiPL-E problems in it")
    return problems if limit is None else problems[:limit]


def _file_rows(file: Path) -> list[tuple[str, Any]]:
    if not file.is_file():
        raise EvaluationError(f"MultiPL-E data file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read MultiPL-E data file {file}: {exc}") from exc
    if file.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{file}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
        if not isinstance(data, list):
            raise EvaluationError(f"{file}: expected a JSON array of problems, got {type(data).__name__}")
        return [(f"item {i + 1}", row) for i, row in enumerate(data)]
    rows: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{file}: line {number} is not valid JSON: {exc.msg}") from exc
    return rows


def _hub_rows(found: Location) -> list[dict[str, Any]]:
    try:
        import datasets  # noqa: F401 - only to name the missing package
    except ImportError as exc:
        raise EvaluationError("loading MultiPL-E from the Hugging Face hub needs the 'datasets' package; "
                              "or give a local path to the data") from exc
    try:
        dataset = hub_rows(found.hub or "", found.config, found.split, found.revision)
    except Exception as exc:  # the hub, the network or the cache: all reported as one line
        raise EvaluationError(f"cannot load {found.hub} config {found.config} at revision {found.revision}: "
                              f"{type(exc).__name__}: {exc}") from exc
    return [dict(row) for row in dataset]


def _problem(row: Any, lang: str, source: str, where: str) -> Problem:
    if not isinstance(row, dict):
        raise EvaluationError(f"{source}: {where} is not a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise EvaluationError(f"{source}: {where} lacks field(s) {', '.join(missing)}")
    for name in ("name", "prompt", "tests"):
        if not isinstance(row[name], str) or not row[name]:
            raise EvaluationError(f"{source}: {where} field {name!r} must be a non-empty string")
    stop = row["stop_tokens"]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise EvaluationError(f"{source}: {where} field 'stop_tokens' must be a list of non-empty strings")
    if row.get("language", lang) != lang:
        raise EvaluationError(f"{source}: {where} ({row['name']}) is a {row['language']!r} problem, not {lang!r}")
    return Problem(benchmark="multiple", language=lang, task_id=row["name"], prompt=row["prompt"],
                   entry_point=_entry_point(row["prompt"]), stop=tuple(stop), tests=row["tests"])


def _entry_point(prompt: str) -> str:
    """The function the prompt opens: the first ``name(`` on its last non-blank line."""
    lines = [line for line in prompt.splitlines() if line.strip()]
    match = _FUNCTION_NAME.search(lines[-1]) if lines else None
    return match.group(1) if match else ""
