"""Where a named benchmark's data is, and how its rows are read: one table for every job that reads benchmarks.

:data:`NAMED_BENCHMARKS` holds, per benchmark, the environment variable that
names its local data, its Hugging Face dataset (config, split, pinned revision)
and the fields its prompt text is in; adding a benchmark is one row there.
:func:`locate` finds a benchmark's data, first of: a path the job gives (for a
benchmark with one data set per language, a directory holding the language's
file); a hub dataset the job gives; the path in the benchmark's variable, read
at call time; the benchmark's own hub dataset. :func:`read_rows` reads what it
found: a ``.json`` / ``.jsonl`` file, optionally gzipped, or the hub.

Who reads what: the TaCIE decontamination filter takes prompts through
:func:`load_prompts` (``methods.tacie.filters``); the evaluation takes the
HumanEval+/MBPP+ file from :func:`local_path` (``evaluation.evalplus_data``,
which falls back on evalplus's own download, not the hub) and MultiPL-E's file
or hub config from :func:`locate` (``evaluation.multiple_data``, which checks
MultiPL-E's row format itself).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ray_pipeline.core.errors import first_line

#: where a row's prompt text is, unless a benchmark or the job says otherwise: the first of these fields it has
PROMPT_FIELDS = ("prompt", "question", "text")
#: the placeholder that makes a benchmark one data set per language (in ``hub_config`` and ``file``)
LANGUAGE = "{language}"
DEFAULT_SPLIT = "test"


class BenchmarkDataError(ValueError):
    """A benchmark's data cannot be found or read; the message is one line naming the cause."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class NamedBenchmark:
    """One row of the table: where a benchmark's data is when a job names it and gives no path."""

    name: str
    env: str | None = None  # the variable naming its local data: a file, or a directory of per-language files
    hub: str | None = None  # its Hugging Face dataset
    hub_config: str | None = None  # that dataset's config; with {language}: one config per language
    split: str = DEFAULT_SPLIT
    fields: tuple[str, ...] = PROMPT_FIELDS  # the prompt text: the first of these fields a row has
    revision: str | None = None  # the hub revision read (None: the newest)
    file: str | None = None  # per language: the language's file in the variable's (or a given) directory

    @property
    def per_language(self) -> bool:
        return LANGUAGE in (self.hub_config or "") or LANGUAGE in (self.file or "")

    def config_for(self, language: str | None = None) -> str | None:
        return self.hub_config.replace(LANGUAGE, language or "") if self.hub_config else None

    def file_for(self, language: str) -> str:
        if not self.file:
            raise ValueError(f"benchmark {self.name!r} has no per-language file")
        return self.file.replace(LANGUAGE, language)


NAMED_BENCHMARKS: dict[str, NamedBenchmark] = {b.name: b for b in (
    # The variables are evalplus's own (its HumanEval+ / MBPP+ release files, whose rows hold ``prompt``);
    # the hub datasets are the original benchmarks (what decontamination reads when no variable is set).
    NamedBenchmark("humaneval", env="HUMANEVAL_OVERRIDE_PATH", hub="openai/openai_humaneval"),
    NamedBenchmark("mbpp", env="MBPP_OVERRIDE_PATH", hub="google-research-datasets/mbpp"),
    # GSM8K's test split (1,319 problems: ``question``, ``answer`` ending in "#### N")
    NamedBenchmark("gsm8k", env="FUSION_GSM8K_PATH", hub="openai/gsm8k", hub_config="main"),
    # IFEval's 541 prompts (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``): google-research's input_data.jsonl
    NamedBenchmark("ifeval", env="FUSION_IFEVAL_PATH", hub="google/IFEval", split="train"),
    # MT-Bench's 80 two-turn questions (FastChat's question.jsonl: ``question_id``, ``category``, ``turns``); the
    # hub copy holds the GPT-4 reference answers in the same rows (``prompt``, ``reference``)
    NamedBenchmark("mt_bench", env="FUSION_MT_BENCH_PATH", hub="HuggingFaceH4/mt_bench_prompts", split="train"),
    # MultiPL-E's "reworded" HumanEval per language, at the revision bigcode-evaluation-harness pins (2025-07);
    # the evaluation image bakes the files into the directory in $FUSION_MULTIPLE_PATH.
    NamedBenchmark("multiple", env="FUSION_MULTIPLE_PATH", hub="nuprl/MultiPL-E", hub_config="humaneval-{language}",
                   file="humaneval-{language}-reworded.jsonl", revision="28441b6024e71d4a1c1c0f6bf171c935cd5a43f2"),
)}


@dataclass(frozen=True)
class Location:
    """Where rows are read: a local file (``path``, with the variable that named it, if any) or a hub dataset."""

    path: str | None = None
    env: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str = DEFAULT_SPLIT
    revision: str | None = None


def named(name: str, language: str | None = None) -> NamedBenchmark | None:
    """The table's row for ``name``; None for a name not in it, or a per-language benchmark asked without a language."""
    bench = NAMED_BENCHMARKS.get(name)
    if bench is None or (bench.per_language and language is None):
        return None
    if language is not None and not bench.per_language:
        raise ValueError(f"benchmark {name!r} is one data set, not one per language")
    return bench


def local_path(name: str, path: str | os.PathLike | None = None, language: str | None = None) -> str | None:
    """The local data: ``path``, else the file in the benchmark's variable (read now); None when neither.

    For a per-language benchmark a directory stands for the language's file in it.
    """
    bench = named(name, language)
    if path is None or str(path) == "":
        path = os.environ.get(bench.env) if bench is not None and bench.env else None
        if not path:
            return None
    if bench is not None and bench.per_language:
        file = Path(path)
        return str(file / bench.file_for(language or "") if file.is_dir() else file)
    return str(path)


def locate(name: str, *, path: str | os.PathLike | None = None, hf: str | None = None, hf_config: str | None = None,
           split: str | None = None, language: str | None = None) -> Location | None:
    """Where ``name``'s rows are: ``path``; ``hf`` (with ``hf_config``); the benchmark's variable; its hub dataset.

    ``split`` (default: the benchmark's own, else ``test``) is the hub split, and in a JSON file holding an
    object, the key of its list. None when nothing names the data (a name not in the table, given no path or hf).
    """
    bench = named(name, language)
    split = split or (bench.split if bench is not None else DEFAULT_SPLIT)
    if path is not None and str(path) != "":
        return Location(path=local_path(name, path, language), split=split)
    if hf:
        return Location(hub=hf, config=hf_config, split=split)
    if bench is None:
        return None
    found = local_path(name, None, language)
    if found is not None:
        return Location(path=found, env=bench.env, split=split)
    if bench.hub:
        return Location(hub=bench.hub, config=bench.config_for(language), split=split, revision=bench.revision)
    return None


def read_rows(where: Location) -> Iterable[Any]:
    """The rows at ``where``: :func:`file_rows` of its file, or :func:`hub_rows` of its dataset."""
    if where.path is not None:
        return file_rows(Path(where.path), where.split)
    return hub_rows(where.hub or "", where.config, where.split, where.revision)


def file_rows(path: Path, split: str = DEFAULT_SPLIT) -> list[Any]:
    """Rows of a .json / .jsonl file (optionally gzipped): a list, an object holding one, or JSON lines.

    An object's list is the first under ``split``, ``data`` or ``rows``; a ``.json`` file that is not one
    JSON document is read as JSON lines. A missing file, an object without such a list or a line that is
    not JSON raises :class:`BenchmarkDataError`; OS and decoding errors (a broken gzip) pass through.
    """
    if not path.is_file():
        raise BenchmarkDataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        text = fh.read()
    if path.name.removesuffix(".gz").endswith(".json"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            pass  # JSON lines in a .json file
        else:
            if isinstance(document, dict):
                lists = [document[k] for k in (split, "data", "rows") if isinstance(document.get(k), list)]
                if not lists:
                    raise BenchmarkDataError(f"{path}: JSON object holds no list under '{split}', 'data' or 'rows'")
                return lists[0]
            return document if isinstance(document, list) else [document]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchmarkDataError(f"{path}: line {number}: invalid JSON: {err.msg}") from None
    return rows


def hub_rows(ref: str, config: str | None, split: str = DEFAULT_SPLIT, revision: str | None = None) -> Iterable[Any]:
    """A Hugging Face dataset's split (``datasets.load_dataset``; its errors, and an ImportError, pass through)."""
    import datasets

    if revision is None:
        return datasets.load_dataset(ref, config, split=split)
    return datasets.load_dataset(ref, config, split=split, revision=revision)


def prompt_texts(rows: Iterable[Any], fields: Iterable[str] = PROMPT_FIELDS) -> list[str]:
    """Each row's text: the first of ``fields`` holding a string; BenchmarkDataError for a row with none, or no rows."""
    fields = tuple(fields)
    prompts = []
    for number, row in enumerate(rows, 1):
        text = next((row[f] for f in fields if isinstance(row, Mapping) and isinstance(row.get(f), str)), None)
        if text is None:
            raise BenchmarkDataError(f"row {number} has no text field ({', '.join(fields)})")
        prompts.append(text)
    if not prompts:
        raise BenchmarkDataError("no prompts found")
    return prompts


def load_prompts(name: str, *, path: str | None = None, hf: str | None = None, hf_config: str | None = None,
                 split: str | None = None, field: str | None = None) -> list[str]:
    """The prompts of a benchmark, from where :func:`locate` finds it; ``field`` (default: the benchmark's fields,
    else :data:`PROMPT_FIELDS`) holds the text. Any failure (file, JSON, the hub) is a one-line
    :class:`BenchmarkDataError` naming the cause."""
    try:
        where = locate(name, path=path, hf=hf, hf_config=hf_config, split=split)
        if where is None:
            raise BenchmarkDataError("no path or hf dataset given")
        bench = named(name)
        fields = (field,) if field else (bench.fields if bench is not None else PROMPT_FIELDS)
        return prompt_texts(read_rows(where), fields)
    except Exception as err:  # file, JSON and datasets errors all mean "cannot load"
        raise BenchmarkDataError(first_line(err)) from None
