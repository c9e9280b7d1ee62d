"""Filters on the final pool (beyond the TaCIE paper): near duplicates and benchmark contamination.

Near duplicates: items are visited in a priority order; an item whose embedding
has cosine similarity at least ``threshold`` (within 1e-6, float32 rounding:
``threshold=1.0`` removes exact repeats) to an item already kept is removed
and points at the most similar kept item. Similarities are computed in chunks,
never as one n x n matrix.

Decontamination: the usual word n-gram overlap test (13-grams, as in the
contamination study of the GPT-3 paper). Text is lower-cased and split into
words, identifiers and numbers; an instruction is contaminated by a benchmark
when they share any word n-gram. A benchmark prompt shorter than n words is
one gram of its whole word sequence, which matches where it appears
contiguously in the text. Benchmark prompts come from files or the Hugging Face
hub through ``core.benchmark_data`` (the named benchmarks, their variables and
hub datasets), see :func:`load_benchmark_prompts`.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from ray_pipeline.methods.tacie.config import BenchmarkSource
from ray_pipeline.analysis.diversity import CHUNK_ELEMENTS, nearest, unit_rows
from ray_pipeline.core.benchmark_data import DEFAULT_SPLIT, BenchmarkDataError, load_prompts, named
from ray_pipeline.core.errors import ConfigError

SIMILARITY_TOLERANCE = 1e-6
# Items handled per block of the greedy pass (their block-internal similarities are one small matrix).
_BLOCK = 512
_WORD = re.compile(r"\w+")


# ---------------------------------------------------------------- near duplicates
def near_duplicates(X: np.ndarray, threshold: float, order: Sequence[int] | None = None) -> list[int | None]:
    """Greedy near-duplicate removal in priority ``order`` (default: row order).

    Returns one entry per row: ``None`` for a kept row, else the index of the
    kept row (earlier in ``order``) it is most similar to.
    """
    X = unit_rows(X)
    n = len(X)
    visit = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    if not np.array_equal(np.sort(visit), np.arange(n)):
        raise ValueError("order must be a permutation of the row indices")
    cutoff = threshold - SIMILARITY_TOLERANCE
    result: list[int | None] = [None] * n
    kept = np.empty(n, dtype=np.int64)
    n_kept = 0
    for start in range(0, n, _BLOCK):
        ids = visit[start:start + _BLOCK]
        block = X[ids]
        best = np.full(len(ids), -np.inf)
        best_id = np.full(len(ids), -1, dtype=np.int64)
        step = max(1, CHUNK_ELEMENTS // len(ids))
        for k0 in range(0, n_kept, step):  # earlier blocks' kept rows, in column chunks
            sims, idx = nearest(block, X[kept[k0:min(k0 + step, n_kept)]])
            better = sims > best
            best[better] = sims[better]
            best_id[better] = kept[k0 + idx[better]]
        inner = block @ block.T
        kept_here: list[int] = []
        for j, row in enumerate(ids):
            if kept_here:
                sims = inner[j, kept_here]
                a = int(np.argmax(sims))
                if sims[a] > best[j]:
                    best[j], best_id[j] = sims[a], ids[kept_here[a]]
            if best[j] >= cutoff:
                result[row] = int(best_id[j])
            else:
                kept_here.append(j)
        kept[n_kept:n_kept + len(kept_here)] = ids[kept_here]
        n_kept += len(kept_here)
    return result


# ---------------------------------------------------------------- decontamination
def normalise_words(text: str) -> list[str]:
    """Lower-cased words, identifiers and numbers of ``text`` (punctuation and spacing dropped)."""
    return _WORD.findall(text.lower())


def _grams(words: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i:i + n]) for i in range(len(words) - n + 1))


class Decontaminator:
    """Finds the benchmark (first in ``benchmarks`` order) sharing a word n-gram with a text."""

    def __init__(self, benchmarks: Mapping[str, Sequence[str]], n: int):
        if n < 1:
            raise ValueError("n must be positive")
        self.n = n
        self.names = list(benchmarks)
        # gram -> position of the first benchmark holding it, one table per gram length
        # (n, and the lengths of benchmark prompts shorter than n words).
        self._grams: dict[int, dict[tuple[str, ...], int]] = {}
        for position, prompts in enumerate(benchmarks.values()):
            for prompt in prompts:
                words = normalise_words(prompt)
                if not words:
                    continue
                size = min(n, len(words))
                table = self._grams.setdefault(size, {})
                for gram in _grams(words, size):
                    table.setdefault(gram, position)

    def match(self, text: str) -> str | None:
        """Name of the first benchmark that shares a gram with ``text``, or None."""
        words = normalise_words(text)
        found = len(self.names)
        for size, table in self._grams.items():
            for gram in _grams(words, size):
                position = table.get(gram)
                if position is not None and position < found:
                    found = position
                    if found == 0:
                        return self.names[0]
        return self.names[found] if found < len(self.names) else None

    def match_all(self, texts: Iterable[str]) -> list[str | None]:
        return [self.match(text) for text in texts]

    def counts(self, matches: Iterable[str | None]) -> dict[str, int]:
        """Contaminated texts per benchmark, every benchmark listed (zeros included)."""
        counts = dict.fromkeys(self.names, 0)
        for name in matches:
            if name is not None:
                counts[name] += 1
        return counts


# ---------------------------------------------------------------- benchmark prompts
def load_benchmark_prompts(src: BenchmarkSource) -> list[str]:
    """Prompts of one benchmark to decontaminate against, from the first of: ``path``; ``hf`` (with
    ``hf_config``); for a named benchmark, the file in its variable, then its hub dataset (the table and
    the reading are ``core.benchmark_data``'s). The text is ``field``, else the first of the named
    benchmark's fields (prompt, question, text) a row has. ConfigError (one line) when they cannot be loaded."""
    # BenchmarkSource.split defaults to "test": for a named benchmark that means the split of its table row.
    split = None if src.split == DEFAULT_SPLIT else src.split
    try:
        return load_prompts(src.name, path=src.path, hf=src.hf, hf_config=src.hf_config, split=split, field=src.field)
    except BenchmarkDataError as err:
        bench = named(src.name)
        env = bench.env if bench is not None else None
        hint = f"filters.decontaminate[].path or {env}" if env else "filters.decontaminate[].path"
        raise ConfigError(f"decontamination benchmark '{src.name}': {err}; set {hint}, or remove it") from None
