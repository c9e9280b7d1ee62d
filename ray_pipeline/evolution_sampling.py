"""Which items evolve in a TaCIE round: depth candidates and task-fusion pairs.

Source: Yang et al. 2024, "Task-Centred Instruction Evolution" (TaCIE,
arXiv 2410.02795), equations 4-7 and Algorithm 1. Each evolvable item ``i`` of
the pool C(t) carries its uncertainty ``u_i >= 0``, ``n_c,i`` (times it was
already a fusion parent), ``n_obj,i`` (its number of objectives; a fused child
has the union of its parents' objectives) and its root domain ``r_i``;
``n_root,i`` is the number of evolvable items in the pool with root domain
``r_i`` (always recomputed from the pool passed in).

* Eq. 4, depth evolution: ``p_i = u_i / sum_k u_k``; the round's ``k_depth``
  depth candidates are a multinomial draw (with replacement) over ``p``.
* Eq. 5, fusion score: ``s_i = 1 / ((n_c,i + 1) * n_obj,i * n_root,i * u_i)``:
  rare root domains and less-fused, simpler, more certain items are preferred.
* Eq. 6, fusion probability: ``q_i = s_i / sum_k s_k`` over the candidate set
  being drawn from.
* Algorithm 1, one round of ``k_fusion`` pairs: ``k_fusion // 2`` cross-domain
  pairs and the rest in-domain. An in-domain pair draws its first parent ``i``
  by eq. 6 over the items whose root domain has at least two items, then its
  second parent ``j`` by eq. 6 over the other items of root domain ``r_i``. A
  cross-domain pair draws ``i`` over the items whose root domain is not the
  only one present, then ``j`` over the items with ``r_j != r_i``. The child
  takes the first parent's root domain. With a single root domain the
  cross-domain slots become in-domain ones (reported in the result).
* Eq. 7, after a round: each fusion parent's ``n_c`` grows by one per pair it
  was in; children start at ``n_c = 0`` with ``n_obj`` of their own (for a
  fused child, the union of its parents' objectives: :func:`union_objectives`);
  ``n_root`` follows from the new pool.

Guards: ``u`` and ``n_obj`` are floored (at :data:`EPSILON` and 1), so an item
with ``u = 0`` keeps a small chance of depth evolution, an all-zero pool draws
uniformly, and ``s`` stays finite. A negative, nan or infinite ``u`` (or a
negative count) raises :class:`ValueError` naming the item: it is a bug
upstream, not a user error.

No unordered pair is drawn twice in a round, nor any pair in ``exclude``
(pairs of ids fused in earlier rounds). A draw that hits a used pair is
redrawn; this module samples that outcome exactly instead of looping: the
pair is drawn from ``q_i * q_j|i`` restricted to the pairs still free, so a
first parent whose partners are all used can no longer be drawn, and a kind
with no free pair left ends the round short (counted in the result).

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

EPSILON = 1e-6  # floor of u in eq. 4 and eq. 5
# A difference of score sums below this fraction of the sums is recomputed directly.
_CANCELLATION = 1e-9


@dataclass(frozen=True)
class EvolvableItem:
    id: str
    uncertainty: float
    n_fusions: int
    n_objectives: int
    root_domain: str


@dataclass(frozen=True)
class FusionPair:
    """Indices into the item list; ``first`` is the parent drawn first."""

    first: int
    second: int
    cross_domain: bool
    root_domain: str  # the child's: the first parent's root domain


@dataclass(frozen=True)
class FusionDraw:
    """One round's fusion pairs (Algorithm 1) and what could not be drawn."""

    pairs: tuple[FusionPair, ...]
    in_domain_slots: int  # after moving cross-domain slots on a single root domain
    cross_domain_slots: int
    short_in_domain: int  # slots left empty: no free pair of that kind
    short_cross_domain: int
    cross_as_in_domain: int  # cross-domain slots filled in-domain (fewer than two root domains)

    @property
    def shortfall(self) -> int:
        return self.short_in_domain + self.short_cross_domain


def pair_key(a: str, b: str) -> tuple[str, str]:
    """The unordered pair of item ids, as kept in ``exclude``."""
    return (a, b) if a <= b else (b, a)


def union_objectives(first: Sequence[str], second: Sequence[str]) -> list[str]:
    """A fused child's objectives (eq. 7): both parents', in order, without repeats
    (compared case- and whitespace-insensitively)."""
    seen: set[str] = set()
    out: list[str] = []
    for objective in [*first, *second]:
        key = " ".join(objective.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(objective)
    return out


def _floored_uncertainty(u: ArrayLike, names: Sequence[str] | None = None) -> np.ndarray:
    arr = np.asarray(u, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"uncertainties must be a 1-d sequence, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        name = names[k] if names is not None else f"#{k}"
        raise ValueError(f"item {name}: uncertainty must be a finite number >= 0, got {arr[k]!r}")
    return np.maximum(arr, EPSILON)


def depth_probabilities(u: ArrayLike, names: Sequence[str] | None = None) -> np.ndarray:
    """Eq. 4: ``p_i = u_i / sum_k u_k`` with ``u`` floored at :data:`EPSILON`."""
    floored = _floored_uncertainty(u, names)
    return floored / floored.sum()


def root_counts(items: Sequence[EvolvableItem]) -> dict[str, int]:
    """``n_root`` of every root domain in the pool."""
    return dict(Counter(item.root_domain for item in items))


def _counts(items: Sequence[EvolvableItem], field: str) -> np.ndarray:
    values = [getattr(item, field) for item in items]
    for item, value in zip(items, values):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"item {item.id}: {field} must be an integer >= 0, got {value!r}")
    return np.asarray(values, dtype=float)


def fusion_scores(items: Sequence[EvolvableItem]) -> np.ndarray:
    """Eq. 5: ``s_i = 1 / ((n_c,i + 1) * n_obj,i * n_root,i * u_i)``, ``n_obj`` floored
    at 1 and ``u`` at :data:`EPSILON`; ``n_root`` counted over ``items``."""
    u = _floored_uncertainty([item.uncertainty for item in items], [item.id for item in items])
    n_c = _counts(items, "n_fusions")
    n_obj = np.maximum(_counts(items, "n_objectives"), 1.0)
    roots = root_counts(items)
    n_root = np.asarray([roots[item.root_domain] for item in items], dtype=float)
    return 1.0 / ((n_c + 1.0) * n_obj * n_root * u)


def fusion_probabilities(scores: ArrayLike, candidates: ArrayLike) -> np.ndarray:
    """Eq. 6: ``q_i = s_i / sum s`` over the candidates (a boolean mask); 0 elsewhere."""
    s = np.asarray(scores, dtype=float)
    weights = np.where(np.asarray(candidates, dtype=bool), s, 0.0)
    total = weights.sum()
    if total <= 0:
        raise ValueError("no fusion candidates")
    return weights / total


def sample_depth(items: Sequence[EvolvableItem], k: int, rng: np.random.Generator) -> list[int]:
    """Eq. 4: indices of ``k`` depth-evolution candidates, drawn with replacement."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0:
        return []
    if not items:
        raise ValueError("no evolvable items to draw depth candidates from")
    p = depth_probabilities([item.uncertainty for item in items], [item.id for item in items])
    return [int(i) for i in rng.choice(len(items), size=k, replace=True, p=p)]


def _pick(weights: np.ndarray, rng: np.random.Generator) -> int:
    """One index drawn with probability proportional to ``weights`` (some > 0)."""
    cumulative = np.cumsum(weights)
    n = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    # Rounding can land on the end; step back to the last index with weight.
    return n if n < len(weights) else int(np.flatnonzero(weights)[-1])


class _PairKind:
    """Draws of one kind of pair (in- or cross-domain) from the pairs still free.

    For first parent ``i`` the partners' total score ``mass[i]`` (eq. 6's
    denominator for the second parent) and count are fixed; ``used_mass`` and
    ``used_count`` track the partners already paired with ``i``. The first
    parent is drawn with weight ``s_i * free_mass_i / mass_i`` = ``q_i`` times the
    probability that its partner draw lands on a free pair, which is exactly
    the law of "redraw the pair until it is free".
    """

    def __init__(self, s: np.ndarray, dom: np.ndarray, cross: bool, partners: dict[int, set[int]]):
        self.s, self.dom, self.cross, self.partners = s, dom, cross, partners
        dom_mass = np.bincount(dom, weights=s, minlength=int(dom.max(initial=-1)) + 1)
        dom_n = np.bincount(dom, minlength=len(dom_mass))
        if cross:
            self.scale = np.full(len(s), s.sum())
            self.mass = self.scale - dom_mass[dom]
            self.count = len(s) - dom_n[dom]
        else:
            self.scale = dom_mass[dom]
            self.mass = self.scale - s
            self.count = dom_n[dom] - 1
        # Where the item's own score dwarfs the rest, the difference has lost its
        # precision: sum the partners directly.
        for i in np.flatnonzero((self.count > 0) & (self.mass <= _CANCELLATION * self.scale)):
            self.mass[i] = self._partner_weights(int(i), free_only=False).sum()
        self.used_mass = np.zeros(len(s))
        self.used_count = np.zeros(len(s), dtype=np.int64)
        for i, js in partners.items():
            for j in js:
                self._add(i, j)

    def _allows(self, i: int, j: int) -> bool:
        return i != j and (self.dom[i] != self.dom[j]) == self.cross

    def _add(self, i: int, j: int) -> None:
        if self._allows(i, j):
            self.used_mass[i] += self.s[j]
            self.used_count[i] += 1

    def record(self, i: int, j: int) -> None:
        self._add(i, j)
        self._add(j, i)

    def _partner_weights(self, i: int, free_only: bool = True) -> np.ndarray:
        mask = (self.dom != self.dom[i]) if self.cross else (self.dom == self.dom[i])
        mask[i] = False
        if free_only:
            mask[list(self.partners.get(i, ()))] = False
        return np.where(mask, self.s, 0.0)

    def draw(self, rng: np.random.Generator) -> tuple[int, int] | None:
        free = self.count > self.used_count
        if not free.any():
            return None
        free_mass = self.mass - self.used_mass
        # Where most of the partners' mass is used, likewise sum the free ones.
        for i in np.flatnonzero(free & (free_mass <= _CANCELLATION * self.mass)):
            free_mass[i] = self._partner_weights(int(i)).sum()
        weights = np.zeros(len(self.s))
        np.divide(self.s * free_mass, self.mass, out=weights, where=free)
        i = _pick(weights, rng)
        return i, _pick(self._partner_weights(i), rng)


def _check_unique_ids(items: Sequence[EvolvableItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"item {item.id}: id appears twice in the pool")
        seen.add(item.id)


def sample_fusion_pairs(
    items: Sequence[EvolvableItem],
    k: int,
    rng: np.random.Generator,
    exclude: Iterable[tuple[str, str]] = frozenset(),
) -> FusionDraw:
    """Algorithm 1: ``k`` fusion pairs for one round (eqs. 5-6), ``k - k // 2``
    in-domain then ``k // 2`` cross-domain; ``exclude`` holds id pairs (either
    order) that must not be drawn again."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    _check_unique_ids(items)
    s = fusion_scores(items)
    domains = sorted(root_counts(items))
    code = {domain: n for n, domain in enumerate(domains)}
    dom = np.asarray([code[item.root_domain] for item in items], dtype=np.int64)

    index = {item.id: n for n, item in enumerate(items)}
    partners: dict[int, set[int]] = {}
    for a, b in exclude:
        if a != b and a in index and b in index:
            partners.setdefault(index[a], set()).add(index[b])
            partners.setdefault(index[b], set()).add(index[a])

    k_cross = k // 2
    k_in = k - k_cross
    moved = k_cross if len(domains) < 2 else 0
    k_in, k_cross = k_in + moved, k_cross - moved

    kinds = {False: _PairKind(s, dom, False, partners), True: _PairKind(s, dom, True, partners)}
    pairs: list[FusionPair] = []
    short = {False: 0, True: 0}
    for cross, slots in ((False, k_in), (True, k_cross)):
        for _ in range(slots):
            drawn = kinds[cross].draw(rng)
            if drawn is None:
                short[cross] = slots - sum(p.cross_domain == cross for p in pairs)
                break
            i, j = drawn
            partners.setdefault(i, set()).add(j)
            partners.setdefault(j, set()).add(i)
            for kind in kinds.values():
                kind.record(i, j)
            pairs.append(FusionPair(i, j, cross, items[i].root_domain))
    return FusionDraw(
        pairs=tuple(pairs),
        in_domain_slots=k_in,
        cross_domain_slots=k_cross,
        short_in_domain=short[False],
        short_cross_domain=short[True],
        cross_as_in_domain=moved,
    )


def update_after_round(
    items: Sequence[EvolvableItem],
    pairs: Sequence[FusionPair],
    children: Sequence[EvolvableItem],
) -> list[EvolvableItem]:
    """Eq. 7: the next pool, a new list (inputs untouched). Each parent's
    ``n_fusions`` grows by the number of ``pairs`` it is in; ``children`` (all
    items the round created, depth and fusion) follow with ``n_fusions = 0`` and
    their own ``n_objectives``. ``n_root`` is recounted from the returned pool by
    every later call. Drop items that stopped being evolvable before the next
    draw."""
    times: Counter[int] = Counter()
    for pair in pairs:
        for n in (pair.first, pair.second):
            if not 0 <= n < len(items):
                raise ValueError(f"fusion pair {pair} points outside the pool of {len(items)} items")
            times[n] += 1
    pool = [replace(item, n_fusions=item.n_fusions + times[n]) if times[n] else item for n, item in enumerate(items)]
    pool += [replace(child, n_fusions=0) for child in children]
    _check_unique_ids(pool)
    return pool

