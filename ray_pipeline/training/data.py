"""SFT data: read every source with the seed reader, drop rows without a response, mix by ratios.

A source is a run directory of an Instruction Fusion or TaCIE job (its
``sft_messages.jsonl``), a JSON/JSONL/Parquet file or directory, a URL, or a
Hugging Face dataset: the same reader as seed pools (:mod:`ray_pipeline.seeds`),
so the same row shapes work (Alpaca, OpenAI ``messages``, ShareGPT, GSM8K,
``prompt``/``response``). Only the first user turn and the first assistant turn
of a transcript are used: the papers' data is single-turn.

Mixing: a source with ``fraction`` f contributes round(f x rows) rows; f < 1
samples without replacement, f > 1 repeats the source (whole copies, then a
sample), f = 0 leaves it out (the papers' "without fused instructions"
ablation is one such change). ``rows`` asks for an exact count the same way.
An instruction (with its input) found in two sources is kept once, from the
first source listed. Sampling is seeded, so a job always gets the same mix.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ray_pipeline.config import SeedSource, SFTDataSource
from ray_pipeline.determinism import derived_seed
from ray_pipeline.errors import ConfigError, SeedError
from ray_pipeline.seeds import load_seeds

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        pool = load_seeds(seed_sources)
    except SeedError as err:
        raise ConfigError(f"data: {err}") from None
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
        wanted = _wanted(src, len(rows))
        asked = src.rows if src.rows is not None else (1.0 if src.fraction is None else src.fraction)
        if not rows and asked:
            raise ConfigError(
                f"data.sources[{i}] ({src.label}): none of its {seeds_report.rows_kept} rows has a response "
                "(an 'output' field or an assistant turn)"
            )
        taken = _sample(rows, wanted, random.Random(derived_seed(seed, "sft-mix", src.label)))
        mixed.extend(taken)
        report.append(SourceMix(
            label=src.label, location=seed_src.path or f"hf:{seed_src.hf}", rows_read=seeds_report.rows_read,
            duplicates_removed=seeds_report.duplicates_removed, malformed=seeds_report.malformed,
            without_response=missing[src.label], rows_available=len(rows), rows_taken=len(taken),
        ))
    if not mixed:
        raise ConfigError("data: the mix is empty (every source has fraction 0 or rows 0)")
    return mixed, report
