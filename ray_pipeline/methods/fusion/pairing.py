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
from typing import Callable, Sequence

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
        self._strata = self._build_strata()
        self.total = sum(weight for weight, _ in self._strata)

    # Allowed pairs are split into strata that are easy to sample uniformly:
    # with cross-language pairs allowed, one stratum of all pairs; without,
    # one per language (pairs inside it) plus one for pairs with a seed that
    # names no language. A stratum is chosen with probability proportional to
    # its number of pairs, then a pair inside it uniformly: uniform overall.
    def _build_strata(self) -> list[tuple[int, Callable[[], tuple[int, int]]]]:
        n = len(self._langs)
        if self._cross:
            return [(n * (n - 1) // 2, lambda: self._two_of(range(n)))] if n > 1 else []
        groups: dict[str, list[int]] = {}
        for i, lang in enumerate(self._langs):
            groups.setdefault(lang, []).append(i)
        unnamed = groups.pop("", [])
        strata: list[tuple[int, Callable[[], tuple[int, int]]]] = []
        for members in groups.values():
            if len(members) > 1:
                strata.append((len(members) * (len(members) - 1) // 2, lambda m=members: self._two_of(m)))
        u = len(unnamed)
        with_unnamed = u * (u - 1) // 2 + u * (n - u)
        if with_unnamed:
            strata.append((with_unnamed, lambda: self._with_unnamed(unnamed, n)))
        return strata

    def _two_of(self, members: Sequence[int]) -> tuple[int, int]:
        i, j = self._rng.sample(range(len(members)), 2)
        return members[i], members[j]

    def _with_unnamed(self, unnamed: list[int], n: int) -> tuple[int, int]:
        # Uniform over pairs with at least one unnamed seed: draw (unnamed, any other)
        # and accept a pair of two unnamed seeds half the time (it is drawn both ways).
        while True:
            i = unnamed[self._rng.randrange(len(unnamed))]
            j = self._rng.randrange(n - 1)
            j += j >= i
            if self._langs[j] or self._rng.random() < 0.5:
                return i, j

    def _allowed(self, i: int, j: int) -> bool:
        return i != j and (self._cross or not is_cross_language(self._langs[i], self._langs[j]))

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
            weights = [w for w, _ in self._strata]
            for _ in range(_MAX_REJECTIONS):
                _, sample = self._rng.choices(self._strata, weights=weights)[0]
                i, j = sample()
                key = (min(i, j), max(i, j))
                if key not in self._used:
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
        # Reached only when almost every allowed pair is used, i.e. on small pools.
        n = len(self._langs)
        left = self.total - self.drawn
        if left > _MAX_ENUMERATED:
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
