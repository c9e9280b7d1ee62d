"""SFT data: read every source with the seed reader, drop rows without a response, mix by ratios.

A source is a run directory of an Instruction Fusion or TaCIE job (its
``sft_messages.jsonl``), a JSON/JSONL/Parquet file or directory, a URL, or a
Hugging Face dataset: the same reader as seed pools (:mod:`ray_pipeline.core.seeds`),
so the same row shapes work (Alpaca, OpenAI ``messages``, ShareGPT, GSM8K,
``prompt``/``response``). Only the first user turn and the first assistant turn
of a transcript are used: the papers' data is single-turn.

Mixing: a source with ``fraction`` f contributes round(f x rows) rows; f < 1
samples without replacement, f > 1 repeats the source (whole copies, then a
sample), f = 0 leaves it out (the papers' "without fused instructions"
ablation is one such change). ``rows`` asks for an exact count the same way.
An instruction (with its input) found in two sources is kept once, from the
first source listed. Sampling is seeded, so a job always gets the same mix.

Selection by lineage (``select`` on a run source, :class:`~ray_pipeline.core.config.SFTSelect`):
the run's item table (``<name>.parquet``: TaCIE's items with ``operation``,
``round``, ``parent_ids``, ``source``, ``root_domain``, ``kept``; IF's fusion
attempts with their seeds' sources and domains) says which of its SFT rows come
from which operation and round, and each item's ancestors (via ``parent_ids``)
say whether its history stays in one domain or a set of sources. The selected
items' rows are then sampled by ``fraction``/``rows`` as any source; the report
counts them per operation, round and root domain.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ray_pipeline.core.config import SeedSource
from ray_pipeline.training.config import SFTDataSource, SFTSelect
from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.core.errors import ConfigError, SeedError
from ray_pipeline.core.seeds import load_seeds, seed_id

RUN_SFT_FILE = "sft_messages.jsonl"


@dataclass
class SourceMix:
    """What one source gave to the mix."""

    label: str
    location: str
    rows_read: int
    duplicates_removed: int
    malformed: int
    without_response: int
    rows_available: int
    rows_taken: int
    selection: dict[str, Any] | None = None  # what ``select`` kept, counted (run sources with select only)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["selection"] is None:
            del d["selection"]
        return d


@dataclass
class RunItem:
    """One item of an IF or TaCIE run, as selection sees it."""

    id: str
    operation: str
    round: int
    kept: bool
    source: str
    root_domain: str
    instruction: str
    parent_ids: list[str] = field(default_factory=list)
    # an IF item's seeds are not items of its table: their sources and domains ride on the item
    seed_sources: list[str] = field(default_factory=list)
    seed_domains: list[str] = field(default_factory=list)


_TACIE_COLUMNS = ("id", "round", "operation", "parent_ids", "source", "root_domain", "kept", "instruction")
_IF_COLUMNS = ("id", "outcome", "parent_ids", "parent_sources", "parent_domains", "instruction")


def run_table_path(run: Path, where: str) -> Path:
    """The item table of a run directory: ``<name>.parquet`` of its job.yaml (else its manifest's outputs)."""
    names: list[str] = []
    try:
        job = yaml.safe_load((run / "job.yaml").read_text(encoding="utf-8"))
        if isinstance(job, dict) and job.get("name"):
            names.append(f"{job['name']}.parquet")
    except (OSError, yaml.YAMLError):
        pass
    try:
        outputs = json.loads((run / "manifest.json").read_text(encoding="utf-8")).get("outputs") or {}
        names += [outputs[k] for k in ("items", "parquet") if isinstance(outputs.get(k), str)]
    except (OSError, ValueError, AttributeError):
        pass
    for name in names:
        if (run / name).is_file():
            return run / name
    raise ConfigError(
        f"{where}: select needs the run's item table, but {run} has no job.yaml or manifest.json naming an existing "
        "<name>.parquet (not a finished instruction_fusion or tacie run)"
    )


def read_run_items(run: Path, where: str) -> list[RunItem]:
    """Every item of a run's table (kept or not: ancestors of kept items may have been filtered out)."""
    import pyarrow.parquet as pq

    path = run_table_path(run, where)
    try:
        columns = set(pq.read_schema(path).names)
        if set(_TACIE_COLUMNS) <= columns:
            rows = pq.read_table(path, columns=list(_TACIE_COLUMNS)).to_pylist()
            return [RunItem(id=r["id"], operation=r["operation"], round=int(r["round"]), kept=bool(r["kept"]),
                            source=r["source"] or "", root_domain=r["root_domain"] or "",
                            instruction=r["instruction"] or "", parent_ids=list(r["parent_ids"] or []))
                    for r in rows]
        if set(_IF_COLUMNS) <= columns:
            rows = pq.read_table(path, columns=list(_IF_COLUMNS)).to_pylist()
            # every fused instruction is one fusion of two seeds: round 1 (the table's own `round`
            # counts retry batches of the sampler, not generations)
            return [RunItem(id=r["id"], operation="fusion", round=1, kept=r["outcome"] == "ok",
                            source=(r["parent_sources"] or [""])[0], root_domain=(r["parent_domains"] or [""])[0],
                            instruction=r["instruction"] or "", parent_ids=list(r["parent_ids"] or []),
                            seed_sources=list(r["parent_sources"] or []), seed_domains=list(r["parent_domains"] or []))
                    for r in rows]
    except (OSError, ValueError) as err:
        raise ConfigError(f"{where}: cannot read {path}: {type(err).__name__}: {err}") from None
    raise ConfigError(
        f"{where}: {path} is neither a TaCIE item table (columns {', '.join(_TACIE_COLUMNS)}) nor an IF one "
        f"(columns {', '.join(_IF_COLUMNS)})"
    )


class _Lineage:
    """The sources and root domains of an item and all its ancestors (memoised walk over ``parent_ids``)."""

    def __init__(self, items: list[RunItem], where: str):
        self.by_id = {it.id: it for it in items}
        self.where = where
        self.memo: dict[str, tuple[frozenset[str], frozenset[str]]] = {}

    def of(self, item: RunItem) -> tuple[frozenset[str], frozenset[str]]:
        """(sources, root domains) over the item's whole history."""
        if item.id in self.memo:
            return self.memo[item.id]
        sources, domains = {item.source, *item.seed_sources}, {item.root_domain, *item.seed_domains}
        if not item.seed_sources:  # a TaCIE item: its parents are items of the same table
            stack, seen = list(item.parent_ids), {item.id}
            while stack:
                pid = stack.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                parent = self.by_id.get(pid)
                if parent is None:
                    raise ConfigError(
                        f"{self.where}: item {item.id} names parent {pid}, which is not in the run's item table "
                        "(an incomplete run?); its history cannot be checked"
                    )
                if parent.id in self.memo:
                    s, d = self.memo[parent.id]
                    sources |= s
                    domains |= d
                    continue
                sources.add(parent.source)
                domains.add(parent.root_domain)
                stack.extend(parent.parent_ids)
        self.memo[item.id] = (frozenset(sources), frozenset(domains))
        return self.memo[item.id]


def select_items(items: list[RunItem], select: SFTSelect, where: str) -> list[RunItem]:
    """The kept items that meet every criterion of ``select``."""
    ops = select.operation_names()
    rounds = set(select.rounds) if select.rounds is not None else None
    sources = set(select.sources) if select.sources is not None else None
    domains = set(select.root_domains) if select.root_domains is not None else None
    lineage = _Lineage(items, where)
    chosen = []
    for it in items:
        if not it.kept:
            continue
        if ops is not None and it.operation not in ops:
            continue
        if rounds is not None and it.round not in rounds:
            continue
        if domains is not None and it.root_domain not in domains:
            continue
        if sources is not None or select.single_domain:
            history_sources, history_domains = lineage.of(it)
            if sources is not None and not history_sources <= sources:
                continue
            if select.single_domain and len(history_domains) != 1:
                continue
        chosen.append(it)
    return chosen


def _counts(items: Sequence[RunItem]) -> dict[str, Any]:
    return {
        "by_operation": dict(sorted(Counter(it.operation for it in items).items())),
        "by_round": {str(k): v for k, v in sorted(Counter(it.round for it in items).items())},
        "by_root_domain": dict(sorted(Counter(it.root_domain for it in items).items())),
    }


def _selection(index: int, src: SFTDataSource) -> tuple[dict[str, RunItem], dict[str, Any]]:
    """{SFT record id: item} of the selected items, and the report's record of the selection."""
    assert src.select is not None and src.run is not None
    where = f"data.sources[{index}] ({src.label})"
    items = read_run_items(Path(src.run).expanduser(), where)
    chosen = select_items(items, src.select, where)
    kept = sum(it.kept for it in items)
    by_record = {seed_id(it.instruction): it for it in chosen}
    report = {"criteria": src.select.model_dump(exclude_none=True), "items": len(items), "items_kept": kept,
              "items_selected": len(chosen), **_counts(chosen)}
    return by_record, report


def _seed_source(index: int, src: SFTDataSource) -> SeedSource:
    """The seed-reader view of one SFT source (a run directory is its SFT file)."""
    if src.run is not None:
        run = Path(src.run).expanduser()
        if not run.is_dir():
            raise ConfigError(f"data.sources[{index}]: run directory {src.run} not found")
        if not (run / RUN_SFT_FILE).is_file():
            raise ConfigError(
                f"data.sources[{index}]: {src.run} has no {RUN_SFT_FILE} (not a finished instruction_fusion or tacie run)"
            )
        return SeedSource(**{**src.location(), "path": str(run / RUN_SFT_FILE), "format": "jsonl"}, name=src.label)
    return SeedSource(**src.location(), name=src.label)


def _criteria(select: SFTSelect | None) -> str:
    return json.dumps(select.model_dump(exclude_none=True) if select else {}, separators=(", ", ": "))


def _wanted(src: SFTDataSource, available: int) -> int:
    if src.rows is not None:
        return src.rows
    return int(round((1.0 if src.fraction is None else src.fraction) * available))


def _sample(rows: list[dict[str, str]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """n rows: whole copies of ``rows``, then a sample without replacement of the rest."""
    copies, rest = divmod(n, len(rows)) if rows else (0, 0)
    return rows * copies + rng.sample(rows, rest)


def load_sft_rows(sources: Sequence[SFTDataSource], seed: int) -> tuple[list[dict[str, str]], list[SourceMix]]:
    """The mixed SFT rows (seed records with a non-empty ``output``) and a report per source."""
    labels = [s.label for s in sources]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ConfigError(f"data.sources: more than one source is labelled {twice[0]!r}; give each a distinct name")
    seed_sources = [_seed_source(i, s) for i, s in enumerate(sources)]
    try:
        pool = load_seeds(seed_sources, seed)
    except SeedError as err:
        raise ConfigError(f"data: {err}") from None
    # lineage selection reads each run's item table once, before any row is mixed
    selections = {i: _selection(i, s) for i, s in enumerate(sources) if s.select is not None}
    by_label: dict[str, list[dict[str, str]]] = {label: [] for label in labels}
    missing: dict[str, int] = {label: 0 for label in labels}
    for record in pool.records:
        if record["output"]:
            by_label[record["source"]].append(record)
        else:
            missing[record["source"]] += 1
    mixed: list[dict[str, str]] = []
    report: list[SourceMix] = []
    for i, (src, seed_src, seeds_report) in enumerate(zip(sources, seed_sources, pool.reports)):
        rows = by_label[src.label]
        asked = src.rows if src.rows is not None else (1.0 if src.fraction is None else src.fraction)
        selection = None
        if i in selections:
            chosen, selection = selections[i]
            rows = [r for r in rows if r["id"] in chosen]
            if not rows and asked:
                found = (f"matched none of the run's {selection['items_kept']} kept items" if not chosen else
                         f"matched {len(chosen)} items, but none of their rows is left (duplicates of an earlier source?)")
                raise ConfigError(f"data.sources[{i}] ({src.label}): select {_criteria(src.select)} {found}")
        wanted = _wanted(src, len(rows))
        if not rows and asked:
            raise ConfigError(
                f"data.sources[{i}] ({src.label}): none of its {seeds_report.rows_kept} rows has a response "
                "(an 'output' field or an assistant turn)"
            )
        taken = _sample(rows, wanted, random.Random(derived_seed(seed, "sft-mix", src.label)))
        if selection is not None:
            selection["taken"] = _counts([chosen[r["id"]] for r in taken])
        mixed.extend(taken)
        report.append(SourceMix(
            label=src.label, location=seed_src.path or f"hf:{seed_src.hf}", rows_read=seeds_report.rows_read,
            duplicates_removed=seeds_report.duplicates_removed, malformed=seeds_report.malformed,
            without_response=missing[src.label], rows_available=len(rows), rows_taken=len(taken),
            selection=selection,
        ))
    if not mixed:
        raise ConfigError("data: the mix is empty (every source has fraction 0 or rows 0)")
    return mixed, report
