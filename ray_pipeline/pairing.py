"""Random pairs of distinct seeds for Instruction Fusion.

Pairs are drawn uniformly among the allowed unordered pairs, never the same pair
twice in either order; the order inside a pair (which instruction is "1") is
random. With ``cross_language=False`` only seeds of the same programming
language are paired; a seed that names no language pairs with any seed. The
sequence of draws depends only on the seed pool and the random seed, which is
what makes a resumed run draw exactly the pairs the interrupted one drew.
"""

from __future__ import annotations

import random
from typing import Sequence

# Rejection sampling is fast while most pairs are still free; after this many
# rejections in a row the sampler enumerates what is left instead.
_MAX_REJECTIONS = 256
_MAX_ENUMERATED = 5_000_000


def is_cross_language(lang_a: str, lang_b: str) -> bool:
    return bool(lang_a) and bool(lang_b) and lang_a != lang_b


class PairSampler:
    """Draws index pairs ``(i, j)`` into a list of seed languages."""

    def __init__(self, languages: Sequence[str], seed: int, cross_language: bool = True):
        self._langs = list(languages)
        self._cross = cross_language
        self._rng = random.Random(seed)
        self._used: set[tuple[int, int]] = set()
        self._remaining: list[tuple[int, int]] | None = None  # set once enumerated
        self.total = self._count_allowed()

    def _allowed(self, i: int, j: int) -> bool:
        return i != j and (self._cross or not is_cross_language(self._langs[i], self._langs[j]))

    def _count_allowed(self) -> int:
        n = len(self._langs)
        if self._cross:
            return n * (n - 1) // 2
        counts: dict[str, int] = {}
        for lang in self._langs:
            counts[lang] = counts.get(lang, 0) + 1
        unnamed = counts.pop("", 0)
        within = sum(c * (c - 1) // 2 for c in counts.values())
        return within + unnamed * (unnamed - 1) // 2 + unnamed * (n - unnamed)

    @property
    def drawn(self) -> int:
        return len(self._used)

    @property
    def exhausted(self) -> bool:
        return self.drawn >= self.total

    def draw(self) -> tuple[int, int] | None:
        """The next pair, or None when every allowed pair has been drawn."""
        if self.exhausted:
            return None
        if self._remaining is None:
            n = len(self._langs)
            for _ in range(_MAX_REJECTIONS):
                i, j = self._rng.randrange(n), self._rng.randrange(n)
                key = (min(i, j), max(i, j))
                if self._allowed(i, j) and key not in self._used:
                    self._used.add(key)
                    return i, j
            self._enumerate_remaining()
        assert self._remaining is not None
        if not self._remaining:
            return None
        i, j = self._remaining.pop()
        self._used.add((min(i, j), max(i, j)))
        return (i, j) if self._rng.random() < 0.5 else (j, i)

    def _enumerate_remaining(self) -> None:
        n = len(self._langs)
        left = self.total - self.drawn
        if left > _MAX_ENUMERATED:  # cannot happen unless rejection keeps failing on a huge pool
            raise RuntimeError(f"pair sampler: {left} pairs left but rejection sampling keeps failing")
        rest = [
            (i, j)
            for i in range(n)
            for j in range(i + 1, n)
            if (i, j) not in self._used and self._allowed(i, j)
        ]
        self._rng.shuffle(rest)
        self._remaining = rest

    def draw_many(self, k: int) -> list[tuple[int, int]]:
        out = []
        for _ in range(k):
            pair = self.draw()
            if pair is None:
                break
            out.append(pair)
        return out
