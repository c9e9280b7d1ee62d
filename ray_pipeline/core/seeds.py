"""Seed pools: the one way to read seed instructions.

:func:`load_seeds` reads every configured :class:`~ray_pipeline.core.config.SeedSource`
(JSON, JSONL, Parquet, a directory of those, an http(s) URL, or a Hugging Face
dataset), recognises the row shape of each row (Alpaca, OpenAI ``messages``,
ShareGPT ``conversations``, GSM8K ``question``/``answer``, MATH
``problem``/``solution``, plain ``prompt``), and returns normalised records,
all with the string fields of :data:`RECORD_FIELDS`::

    id           first 16 hex chars of sha256(instruction + "\\x1f" + input)
    source       SeedSource.label
    domain       "code", "math" or "general"
    language     canonical programming language ("python", "cpp", ...) or ""
    instruction  the task, stripped
    input        its input ("" if none)
    output       a reference answer ("" if none)
    origin       "<file>:<line or row number>" the row came from

Rows that cannot be read are skipped, counted and reported; a source that is
mostly such rows is an error. Exact duplicates (same ``id``) are kept once,
the first time they are seen.

Per source, in this order: a language filter (``languages`` keeps, or
``exclude_languages`` drops, rows by their detected or forced language; those
rows are counted as ``filtered_language``), de-duplication, then ``limit``:
the first N rows, or with ``sample: random`` a uniformly random N of all the
source's remaining rows (reservoir sampling, seeded by the job seed and the
source label, kept in file order). Each source's declared ``domain`` is in
:attr:`SeedPool.source_domains` (TaCIE's root domains).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ray_pipeline.core.config import SeedSource
from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.core.errors import SeedError, first_line
from ray_pipeline.core.languages import canonical_language, detect_domain, detect_language

log = logging.getLogger("ray_pipeline.core.seeds")

RECORD_FIELDS: tuple[str, ...] = ("id", "source", "domain", "language", "instruction", "input", "output", "origin")
SEED_SCHEMA = pa.schema([(name, pa.string()) for name in RECORD_FIELDS])
MAX_MALFORMED_EXAMPLES = 5

EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
# Keys under which a JSON object may hold its list of rows (the source's split is tried first).
JSON_LIST_KEYS = ("data", "rows", "train", "examples", "records", "items", "instances")
USER_ROLES = frozenset({"user", "human", "prompter"})
ASSISTANT_ROLES = frozenset({"assistant", "gpt", "bot", "model", "chatgpt"})


# ------------------------------------------------------------------ results
@dataclass
class SourceReport:
    """What loading one source did."""

    label: str
    location: str
    domain: str = "auto"  # the source's declared domain (SeedSource.domain)
    rows_read: int = 0
    rows_kept: int = 0
    malformed: int = 0
    malformed_examples: list[tuple[str, str]] = field(default_factory=list)
    duplicates_removed: int = 0
    filtered_language: int = 0  # valid rows dropped by languages / exclude_languages
    sampled_from: int | None = None  # sample: random: the valid, non-duplicate rows the `limit` rows were drawn from

    def add_malformed(self, origin: str, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < MAX_MALFORMED_EXAMPLES:
            self.malformed_examples.append((origin, reason))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["malformed_examples"] = [{"origin": o, "reason": r} for o, r in self.malformed_examples]
        return data


@dataclass
class SeedPool:
    """Normalised seeds (sources in order, rows in file order) and how each source went."""

    records: list[dict[str, str]]
    reports: list[SourceReport]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def duplicates_removed(self) -> int:
        return sum(r.duplicates_removed for r in self.reports)

    @property
    def source_domains(self) -> dict[str, str]:
        """Each source label's declared ``domain`` ("auto" when not declared): TaCIE's root domain of its seeds."""
        return {r.label: r.domain for r in self.reports}

    def summary(self) -> dict[str, Any]:
        """Counts for a JSON manifest."""
        languages = Counter(r["language"] or "none" for r in self.records)
        return {
            "seeds": len(self.records),
            "duplicates_removed": self.duplicates_removed,
            "malformed": sum(r.malformed for r in self.reports),
            "filtered_language": sum(r.filtered_language for r in self.reports),
            "source_domains": self.source_domains,
            "domains": dict(sorted(Counter(r["domain"] for r in self.records).items())),
            "languages": dict(languages.most_common()),
            "sources": [r.to_dict() for r in self.reports],
        }


def seed_id(instruction: str, input: str = "") -> str:
    """Stable content id of a seed: sha256 over the stripped instruction and input."""
    text = f"{instruction.strip()}\x1f{input.strip()}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def pool_to_arrow(records: Sequence[Mapping[str, str]]) -> pa.Table:
    """Seed records as an Arrow table with the fixed :data:`SEED_SCHEMA` (also when empty)."""
    return pa.Table.from_pylist(list(records), schema=SEED_SCHEMA)


# ------------------------------------------------------------------ loading
def load_seeds(sources: Sequence[SeedSource], seed: int = 0) -> SeedPool:
    """Read, normalise, filter and de-duplicate all sources, in order.

    ``limit`` counts the rows a source adds to the pool (valid, of a wanted
    language and not duplicates). ``seed`` (the job seed) seeds ``sample:
    random``; each source draws from its own stream (job seed and label), so
    its rows do not depend on the other sources' files.
    Raises :class:`SeedError` for a missing, unreadable, empty or mostly malformed
    source, a source whose every valid row the language filter drops, two
    sources with one label but different domains, and when no source yields any seed.
    """
    declared: dict[str, str] = {}
    for source in sources:
        other = declared.setdefault(source.label, source.domain)
        if other != source.domain:
            raise SeedError(
                f"two seed sources are labelled {source.label!r} but declare domains {other!r} and "
                f"{source.domain!r}; give them distinct names"
            )
    records: list[dict[str, str]] = []
    seen: set[str] = set()
    reports = [_load_source(source, seen, records, seed) for source in sources]
    if not records:
        raise SeedError("no seeds in any source")
    return SeedPool(records, reports)


class _Row(NamedTuple):
    """One raw row: where it is (file and 1-based line or row number) and its parsed JSON."""

    file: str
    number: int
    data: Any
    error: str = ""  # set when the raw row is not even valid JSON
    unit: str = "row"

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.number}"


class _Seed(NamedTuple):
    instruction: str
    input: str
    output: str
    domain: str | None  # implied by the row shape (GSM8K is math), else None


class _Malformed(Exception):
    """A row that is not a usable seed; the message is the reason."""


def _load_source(source: SeedSource, seen: set[str], out: list[dict[str, str]], seed: int = 0) -> SourceReport:
    """Append the new seeds of one source to ``out``; return its report."""
    location = source.path or f"hf:{source.hf}"
    report = SourceReport(label=source.label, location=location, domain=source.domain)
    single_file = Path(source.path or source.hf or "").name
    first_bad = ""
    filtered: Counter[str] = Counter()
    sample = None
    if source.sample == "random":
        sample = _Reservoir(source.limit, derived_seed(seed, "seed-sample", source.label))
    candidates: set[str] = set()  # sample: random: ids of this source's rows so far (`seen` grows at the end)
    with closing(_source_rows(source)) as rows:
        for row in rows:
            report.rows_read += 1
            try:
                record = _to_record(_parse_row(row), source, row.origin)
            except _Malformed as bad:
                report.add_malformed(row.origin, str(bad))
                where = f"{row.unit} {row.number}" if row.file == single_file else f"{row.file} {row.unit} {row.number}"
                first_bad = first_bad or f"{where}: {bad}"
                continue
            if not _language_wanted(record["language"], source):
                filtered[record["language"] or "none"] += 1
                continue
            if record["id"] in seen or record["id"] in candidates:
                report.duplicates_removed += 1
                continue
            if sample is not None:
                candidates.add(record["id"])
                sample.offer(record)
                continue
            seen.add(record["id"])
            out.append(record)
            report.rows_kept += 1
            if source.limit is not None and report.rows_kept >= source.limit:
                break
    if sample is not None:
        chosen = sample.rows()
        seen.update(r["id"] for r in chosen)
        out.extend(chosen)
        report.rows_kept, report.sampled_from = len(chosen), sample.offered
    report.filtered_language = sum(filtered.values())
    _check_source(report, source, first_bad, filtered)
    return report


def _language_wanted(language: str, source: SeedSource) -> bool:
    """Whether a row of this (canonical, maybe empty) language passes the source's language filter."""
    if source.languages is not None:
        return language in source.languages
    if source.exclude_languages is not None:
        return language not in source.exclude_languages
    return True


class _Reservoir:
    """A uniformly random ``size`` of the rows offered (Algorithm R), returned in the order offered.

    Holds ``size`` rows at a time, so a source of any length is sampled in bounded memory.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.offered = 0
        self._rng = random.Random(seed)
        self._kept: list[tuple[int, dict[str, str]]] = []

    def offer(self, record: dict[str, str]) -> None:
        if self.offered < self.size:
            self._kept.append((self.offered, record))
        else:
            slot = self._rng.randrange(self.offered + 1)
            if slot < self.size:
                self._kept[slot] = (self.offered, record)
        self.offered += 1

    def rows(self) -> list[dict[str, str]]:
        return [record for _, record in sorted(self._kept, key=lambda kept: kept[0])]


def _check_source(report: SourceReport, source: SeedSource, first_bad: str, filtered: Counter[str]) -> None:
    """Raise for an empty, mostly malformed or wholly filtered source; log what was skipped."""
    where = source.path or source.hf
    if report.rows_read == 0:
        raise SeedError(f"{where}: no rows in seed source")
    if report.malformed / report.rows_read > source.max_malformed_fraction:
        raise SeedError(
            f"{where}: {report.malformed} of {report.rows_read} rows malformed (first: {first_bad}); not a seed file?"
        )
    if report.malformed == report.rows_read:
        raise SeedError(f"{where}: no valid seed rows (first: {first_bad})")
    if report.malformed:
        examples = "; ".join(f"{o}: {r}" for o, r in report.malformed_examples)
        more = ", ..." if report.malformed > len(report.malformed_examples) else ""
        log.warning(
            "%s: skipped %d malformed of %d rows (%s%s)", where, report.malformed, report.rows_read, examples, more
        )
    valid = report.rows_read - report.malformed
    if filtered and sum(filtered.values()) == valid:
        if source.languages is not None:
            rule = f"languages {source.languages}"
        else:
            rule = f"exclude_languages {source.exclude_languages}"
        found = ", ".join(f"{lang} {n}" for lang, n in filtered.most_common(5))
        raise SeedError(f"{where}: {rule} keeps none of the {valid} valid rows (their languages: {found})")
    if filtered:
        log.info("%s: %d rows dropped by the language filter (%s)", where, sum(filtered.values()), dict(filtered))
    if report.sampled_from is not None:
        log.info("%s: a random %d of %d rows kept (sample: random)", where, report.rows_kept, report.sampled_from)
    log.info(
        "%s: %d seeds kept of %d rows (%d duplicates removed)",
        where, report.rows_kept, report.rows_read, report.duplicates_removed,
    )


def _to_record(seed: _Seed, source: SeedSource, origin: str) -> dict[str, str]:
    """Normalise one parsed seed; forced domain/language from the source win over detection."""
    domain = seed.domain if source.domain == "auto" else source.domain
    if source.language is not None:
        language = canonical_language(source.language)
    elif domain == "math":
        language = ""
    else:
        language = detect_language(seed.instruction, seed.input, seed.output)
    if domain is None:
        domain = detect_domain(seed.instruction, seed.input, seed.output, language=language)
    return {
        "id": seed_id(seed.instruction, seed.input),
        "source": source.label,
        "domain": domain,
        "language": language,
        "instruction": seed.instruction,
        "input": seed.input,
        "output": seed.output,
        "origin": origin,
    }


# --------------------------------------------------------------- row shapes
def _parse_row(row: _Row) -> _Seed:
    """Recognise the shape of one row (first matching key of :data:`_SHAPES`)."""
    if row.error:
        raise _Malformed(row.error)
    data = row.data
    if not isinstance(data, dict):
        raise _Malformed(f"not a JSON object ({type(data).__name__})")
    for key, parse in _SHAPES:
        if key in data:
            seed = parse(data)
            if not seed.instruction:
                raise _Malformed("empty instruction")
            return seed
    keys = ", ".join(sorted(map(str, data))[:8]) or "none"
    raise _Malformed(f"no instruction field (keys: {keys})")


def _text(data: Mapping[str, Any], *keys: str) -> str:
    """The first non-empty string among ``keys``, stripped; ``""`` if none. Non-strings are malformed."""
    for key in keys:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _Malformed(f"field '{key}' is not a string")
        if value.strip():
            return value.strip()
    return ""


def _alpaca(data: Mapping[str, Any]) -> _Seed:
    """``{instruction, input?, output? | response?}``; self-instruct ``instances`` give input/output."""
    instances = data.get("instances") or [{}]
    example = instances[0] if isinstance(instances, list) and isinstance(instances[0], dict) else {}
    return _Seed(
        _text(data, "instruction"),
        _text(data, "input") or _text(example, "input"),
        _text(data, "output", "response") or _text(example, "output"),
        None,
    )


def _chat(key: str) -> Callable[[Mapping[str, Any]], _Seed]:
    """Parser for a chat transcript under ``key``: OpenAI ``{role, content}`` or ShareGPT ``{from, value}``."""

    def parse(data: Mapping[str, Any]) -> _Seed:
        turns = data[key]
        if not isinstance(turns, list):
            raise _Malformed(f"'{key}' is not a list")
        instruction = output = None
        roles: list[str] = []
        for turn in turns:
            if not isinstance(turn, dict):
                raise _Malformed(f"a turn in '{key}' is not an object")
            role = str(turn.get("role", turn.get("from", ""))).lower()
            roles.append(role or "?")
            content = turn.get("content", turn.get("value"))
            if instruction is None and role in USER_ROLES:
                instruction = _text({"content": content}, "content")
            elif instruction is not None and role in ASSISTANT_ROLES:
                output = _text({"content": content}, "content")
                break
        if instruction is None:
            seen_roles = ", ".join(dict.fromkeys(roles)) or "none: the list is empty"
            raise _Malformed(f"no user turn in '{key}' (roles: {seen_roles})")
        return _Seed(instruction, "", output or "", None)

    return parse


def _gsm8k(data: Mapping[str, Any]) -> _Seed:
    return _Seed(_text(data, "question"), "", _text(data, "answer"), "math")


def _math(data: Mapping[str, Any]) -> _Seed:
    """MATH (Hendrycks et al.): ``{problem, solution, level?, type?}``, a math seed (``level``/``type`` unused)."""
    return _Seed(_text(data, "problem"), "", _text(data, "solution"), "math")


def _prompt(data: Mapping[str, Any]) -> _Seed:
    output = _text(data, "response", "completion", "output")
    return _Seed(_text(data, "prompt"), _text(data, "input"), output, None)


_SHAPES = (
    ("messages", _chat("messages")),
    ("conversations", _chat("conversations")),
    ("instruction", _alpaca),
    ("question", _gsm8k),
    ("problem", _math),
    ("prompt", _prompt),
)


# ---------------------------------------------------------------- row sources
def _source_rows(source: SeedSource) -> Iterator[_Row]:
    """All raw rows of a source, in order."""
    if source.hf is not None:
        yield from _dataset_rows(source.hf, source.hf_config, source.split)
    elif urllib.parse.urlparse(source.path).scheme in ("http", "https"):
        with _download(source.path) as local:
            yield from _file_rows(local, _file_format(local, source.format), local.name, source.split)
    else:
        yield from _path_rows(Path(source.path), source.format, source.split)


def _path_rows(path: Path, fmt: str, split: str) -> Iterator[_Row]:
    """Rows of a local file, a directory of seed files, or a directory saved by ``datasets``."""
    if not path.exists():
        raise SeedError(f"{path}: seed file not found")
    if not path.is_dir():
        yield from _file_rows(path, _file_format(path, fmt), path.name, split)
    elif (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        yield from _dataset_rows(str(path), None, split)
    else:
        files = _seed_files(path, fmt)
        if not files:
            raise SeedError(f"{path}: no .json, .jsonl or .parquet files in seed directory")
        for file in files:
            yield from _file_rows(file, _file_format(file, "auto"), file.relative_to(path).as_posix(), split)


def _seed_files(directory: Path, fmt: str) -> list[Path]:
    """Supported (or, with a forced format, matching) non-hidden files under a directory, sorted."""
    found = []
    for file in directory.rglob("*"):
        kind = EXTENSIONS.get(_extension(file))
        hidden = any(part.startswith(".") for part in file.relative_to(directory).parts)
        if kind and fmt in ("auto", kind) and not hidden and file.is_file():
            found.append(file)
    return sorted(found, key=lambda f: f.relative_to(directory).as_posix())


def _extension(path: Path) -> str:
    """Lower-case extension, looking through a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _file_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    ext = _extension(path)
    if ext not in EXTENSIONS:
        raise SeedError(
            f"{path}: unsupported seed file type '{ext or path.name}' (use .json, .jsonl or .parquet, or set format)"
        )
    return EXTENSIONS[ext]


def _file_rows(path: Path, fmt: str, name: str, split: str) -> Iterator[_Row]:
    """Rows of one file in a known format; I/O and decoding failures become SeedError."""
    try:
        if fmt == "parquet":
            yield from _parquet_rows(path, name)
        elif fmt == "jsonl":
            with _open_text(path) as fh:
                yield from _jsonl_rows(fh, name)
        else:
            yield from _json_rows(path, name, split)
    except UnicodeDecodeError as err:
        raise SeedError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (OSError, EOFError) as err:
        raise SeedError(f"{path}: cannot read seed file: {err}") from None


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def _jsonl_rows(lines: Iterable[str], name: str) -> Iterator[_Row]:
    """One row per non-blank line; invalid JSON yields a row carrying the error."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield _Row(name, number, json.loads(line), unit="line")
        except json.JSONDecodeError as err:
            yield _Row(name, number, None, f"invalid JSON: {err.msg}", unit="line")


def _json_rows(path: Path, name: str, split: str) -> Iterator[_Row]:
    """A JSON array, an object holding a list of rows, a single row -- or JSONL in a .json file."""
    with _open_text(path) as fh:
        text = fh.read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("["):
            raise SeedError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
        yield from _jsonl_rows(text.splitlines(), name)
        return
    for number, item in enumerate(_json_list(document, path, split), 1):
        yield _Row(name, number, item)


def _json_list(document: Any, path: Path, split: str) -> list[Any]:
    """The list of rows in a parsed JSON document."""
    if isinstance(document, list):
        return document
    if not isinstance(document, dict):
        raise SeedError(f"{path}: top-level JSON value is a {type(document).__name__}, not a list of rows")
    for key in (split, *JSON_LIST_KEYS):
        if isinstance(document.get(key), list):
            return document[key]
    lists = [value for value in document.values() if isinstance(value, list)]
    if len(lists) == 1 and all(isinstance(item, dict) for item in lists[0]):
        return lists[0]
    if any(key in document for key, _ in _SHAPES):
        return [document]
    keys = ", ".join(sorted(document)[:8])
    raise SeedError(f"{path}: JSON object holds no list of rows (keys: {keys})")


def _parquet_rows(path: Path, name: str) -> Iterator[_Row]:
    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise SeedError(f"{path}: cannot read Parquet file: {first_line(err)}") from None
    number = 0
    for batch in table.iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            number += 1
            yield _Row(name, number, item)


def _dataset_rows(ref: str, config: str | None, split: str) -> Iterator[_Row]:
    """Rows of a Hugging Face dataset: a directory saved with ``save_to_disk`` or a hub id."""
    local = Path(ref).exists()
    try:
        import datasets

        if local:
            dataset = datasets.load_from_disk(ref)
        else:
            dataset = datasets.load_dataset(ref, config, split=split)
    except Exception as err:  # datasets raises many unrelated types; all mean "cannot load"
        raise SeedError(f"{ref}: cannot load Hugging Face dataset: {first_line(err)}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise SeedError(f"{ref}: no split '{split}' (have: {', '.join(dataset)})")
        dataset = dataset[split]
    name = Path(ref).name if local else ref
    for number, item in enumerate(dataset, 1):
        yield _Row(name, number, item)


@contextmanager
def _download(url: str) -> Iterator[Path]:
    """Fetch a URL into a temporary file named like the URL's last path segment."""
    name = Path(urllib.parse.urlparse(url).path).name or "seeds.json"
    with tempfile.TemporaryDirectory(prefix="seeds-") as tmp:
        local = Path(tmp) / name
        try:
            with urllib.request.urlopen(url, timeout=60) as response, local.open("wb") as fh:
                shutil.copyfileobj(response, fh)
        except (OSError, ValueError) as err:
            raise SeedError(f"{url}: download failed: {first_line(err)}") from None
        yield local


def seed_prompt(seed: dict[str, str]) -> str:
    """The text a seed contributes to a prompt: its instruction, and its input when it has one."""
    if seed["input"]:
        return f"{seed['instruction']}\n\n{seed['input']}"
    return seed["instruction"]
