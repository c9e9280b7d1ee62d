"""Which items evolve in a TaCIE round: depth candidates (eq. 4-5) and task-fusion pairs (eq. 6-7, Algorithm 1).

Source: Yang et al. 2024, "Task-Centred Instruction Evolution" (TaCIE, arXiv
2410.02795), section 2.3, equation numbers as printed (../shared/papers/tacie.txt
lines 100-150). Each evolvable item ``i`` of the round's pool C^t carries its
uncertainty ``u_i >= 0`` (eq. 2), ``n_c,i`` (how many fusions it has seeded),
``n_obj,i`` (its number of objectives) and its root domain; ``n_root,i`` is the
number of evolvable items of the pool in ``i``'s root domain, recounted from the
pool passed in.

* Eq. 4, depth weights: ``p_i^depth = u_i / sum_k u_k``.
* Eq. 5, depth candidates: ``C^depth ~ Multinomial(M_d, p^depth)`` (the paper
  writes ``M_e`` there and ``M_d`` later); drawn as ``M_d`` ordered draws with
  replacement, whose counts are that multinomial.
* Eq. 6, fusion weights: ``p_i^fuse = s_i / sum_k s_k``.
* Eq. 7, punished uncertainty: ``s_i = 1 / ((n_c,i + 1) * n_obj,i * n_root,i * u_i)``.
* Algorithm 1, task fusion sampling (:func:`sample_fusion_pairs`): ``C_a`` is
  ``M_f`` ordered draws from ``p^fuse``, drawn once. Then, while either half is
  short, ``remain = M_f - |pairs|`` candidates ``C_b`` are drawn from
  ``p^fuse``; each ``c_b`` is set against ``c_a = C_a[idx]``: the same root
  domain makes an in-domain pair if the in-domain half is not full, another
  root domain a cross-domain pair if that half is not full; otherwise ``c_b`` is
  passed over. A pair made moves ``idx`` on. The child's root domain is
  ``c_a``'s. So a root domain's share of the in-domain pairs made while both
  halves are open goes with the square of its mass under ``p^fuse``.

Where the printed algorithm is silent or cannot end, this module decides (each
choice is listed in docs/fidelity.md):

* Halves: ``M_f // 2`` in-domain and the rest (``M_f - M_f // 2``) cross-domain,
  as the authors' ``sample_fuse`` does; the printed test ``< M_f / 2`` cannot
  stop at ``M_f`` pairs when ``M_f`` is odd.
* Pairs are a set, as printed (``pairs_in U {(c_a, c_b)}``) and as the authors
  keep them: ``c_b == c_a`` and a pair already made this round are passed over.
* A pool with one root domain cannot make a cross-domain pair: its cross-domain
  half becomes in-domain (``cross_as_in_domain``); a pool whose root domains all
  hold one item cannot make an in-domain pair: that half becomes cross-domain
  (``in_as_cross_domain``).
* Stall: a ``c_a`` for which no ``c_b`` can make a pair (its domain holds no
  other item, or every partner is used, and the other half is full) would hold
  the loop forever. It is replaced by a fresh draw from ``p^fuse`` restricted to
  the items that can still make a pair (``replaced_first``); when none can, the
  round ends short (``short``).
* Long waits: after :data:`REDRAW_LIMIT` passed-over ``c_b`` in a row for the
  same ``c_a``, its partner is drawn directly from ``p^fuse`` restricted to the
  ``c_b`` that would make a pair, the exact law of redrawing until one does.
* Pairs fused in earlier rounds (``exclude``) are allowed by the paper; the
  pipeline passes them only with ``evolution.exclude_used_pairs`` (off by
  default). Excluded pairs are passed over like pairs of this round.

Guards: ``u`` is floored at :data:`EPSILON` and ``n_obj`` at 1, so an item
with ``u = 0`` keeps a small chance of depth evolution, an all-zero pool draws
uniformly, and ``s`` stays finite. A negative, nan or infinite ``u`` (or a
negative count) raises :class:`ValueError` naming the item: it is a bug
upstream, not a user error. All randomness comes from the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

EPSILON = 1e-6  # floor of u in eq. 4 and eq. 7
#: passed-over c_b in a row for one c_a before its partner is drawn directly (the same law, sooner)
REDRAW_LIMIT = 1000
#: the paper's ratio of per-round evolutions to the round-0 pool: 8,000 depth + 8,000 fusion per round
#: (the authors' code) from 48,000 round-0 instructions (tacie.txt section 2.4)
DEFAULT_ROUND_FRACTION = 1 / 6


@dataclass(frozen=True)
class EvolvableItem:
    id: str
    uncertainty: float
    n_fusions: int  # n_c
    n_objectives: int  # n_obj
    root_domain: str


@dataclass(frozen=True)
class FusionPair:
    """Indices into the item list: ``first`` is c_a, ``second`` c_b."""

    first: int
    second: int
    cross_domain: bool
    root_domain: str  # the child's: c_a's root domain


@dataclass(frozen=True)
class FusionDraw:
    """One round's fusion pairs (Algorithm 1) and how they were drawn."""

    pairs: tuple[FusionPair, ...]
    in_domain_slots: int  # the in-domain half, after moving slots no pool could fill
    cross_domain_slots: int
    short_in_domain: int  # slots left empty: no item could make a pair of that kind
    short_cross_domain: int
    cross_as_in_domain: int  # cross-domain slots made in-domain (a single root domain)
    in_as_cross_domain: int  # in-domain slots made cross-domain (no root domain holds two items)
    replaced_first: int  # c_a that could make no pair, replaced by a fresh draw
    direct_partners: int  # partners drawn directly after REDRAW_LIMIT passes
    draws: int  # c_b drawn in all

    @property
    def shortfall(self) -> int:
        return self.short_in_domain + self.short_cross_domain


def pair_key(a: str, b: str) -> tuple[str, str]:
    """The unordered pair of item ids, as kept in ``exclude``."""
    return (a, b) if a <= b else (b, a)


def round_amount(configured: int | None, round0_pool: int) -> int:
    """M_d or M_f of a round: the configured number, else :data:`DEFAULT_ROUND_FRACTION` of
    the round-0 pool (at least 1): the paper's 8,000 of 48,000."""
    if configured is not None:
        return configured
    return max(1, math.ceil(round0_pool * DEFAULT_ROUND_FRACTION))


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
    """Eq. 4: ``p_i^depth = u_i / sum_k u_k`` with ``u`` floored at :data:`EPSILON`."""
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
    """Eq. 7: ``s_i = 1 / ((n_c,i + 1) * n_obj,i * n_root,i * u_i)``, ``n_obj`` floored
    at 1 and ``u`` at :data:`EPSILON`; ``n_root`` counted over ``items``."""
    u = _floored_uncertainty([item.uncertainty for item in items], [item.id for item in items])
    n_c = _counts(items, "n_fusions")
    n_obj = np.maximum(_counts(items, "n_objectives"), 1.0)
    roots = root_counts(items)
    n_root = np.asarray([roots[item.root_domain] for item in items], dtype=float)
    return 1.0 / ((n_c + 1.0) * n_obj * n_root * u)


def fusion_probabilities(items: Sequence[EvolvableItem]) -> np.ndarray:
    """Eq. 6: ``p_i^fuse = s_i / sum_k s_k`` over the pool."""
    s = fusion_scores(items)
    return s / s.sum()


def sample_depth(items: Sequence[EvolvableItem], m_d: int, rng: np.random.Generator) -> list[int]:
    """Eq. 5: ``C^depth ~ Multinomial(M_d, p^depth)``, as ``M_d`` ordered draws with replacement."""
    if m_d < 0:
        raise ValueError(f"M_d must be >= 0, got {m_d}")
    if m_d == 0:
        return []
    if not items:
        raise ValueError("no evolvable items to draw depth candidates from")
    p = depth_probabilities([item.uncertainty for item in items], [item.id for item in items])
    return [int(i) for i in rng.choice(len(items), size=m_d, replace=True, p=p)]


def _check_unique_ids(items: Sequence[EvolvableItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"item {item.id}: id appears twice in the pool")
        seen.add(item.id)


class _Pairs:
    """The pairs of one round so far, with what each item can still be paired with."""

    def __init__(self, dom: np.ndarray, exclude: set[tuple[int, int]]):
        self.dom = dom
        n = len(dom)
        dom_n = np.bincount(dom, minlength=int(dom.max(initial=-1)) + 1)
        self.in_total = dom_n[dom] - 1  # possible in-domain partners of each item
        self.cross_total = n - dom_n[dom]
        self.used_in = np.zeros(n, dtype=np.int64)
        self.used_cross = np.zeros(n, dtype=np.int64)
        self.taken: set[tuple[int, int]] = set()
        for a, b in exclude:
            self._take(a, b)

    def _take(self, a: int, b: int) -> None:
        key = (a, b) if a <= b else (b, a)
        if a == b or key in self.taken:
            return
        self.taken.add(key)
        used = self.used_cross if self.dom[a] != self.dom[b] else self.used_in
        used[a] += 1
        used[b] += 1

    def free(self, a: int, b: int) -> bool:
        return a != b and ((a, b) if a <= b else (b, a)) not in self.taken

    def add(self, a: int, b: int) -> None:
        self._take(a, b)

    def can_pair_one(self, a: int, open_in: bool, open_cross: bool) -> bool:
        return bool((open_in and self.in_total[a] > self.used_in[a]) or (open_cross and self.cross_total[a] > self.used_cross[a]))

    def can_pair(self, open_in: bool, open_cross: bool) -> np.ndarray:
        """Which items, as c_a, some c_b could still pair with."""
        ok = np.zeros(len(self.dom), dtype=bool)
        if open_in:
            ok |= self.in_total > self.used_in
        if open_cross:
            ok |= self.cross_total > self.used_cross
        return ok

    def partner_weights(self, a: int, p: np.ndarray, open_in: bool, open_cross: bool) -> np.ndarray:
        same = self.dom == self.dom[a]
        mask = (same & open_in) | (~same & open_cross)
        mask[a] = False
        for key in self.taken:
            if a in key:
                mask[key[1] if key[0] == a else key[0]] = False
        return np.where(mask, p, 0.0)


def _draw(cdf: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices drawn from the distribution with cumulative sums ``cdf``."""
    idx = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
    return np.minimum(idx, len(cdf) - 1)


def sample_fusion_pairs(
    items: Sequence[EvolvableItem],
    m_f: int,
    rng: np.random.Generator,
    exclude: Iterable[tuple[str, str]] = frozenset(),
) -> FusionDraw:
    """Algorithm 1: ``M_f`` fusion pairs for one round, ``M_f // 2`` in-domain and the
    rest cross-domain; ``exclude`` holds id pairs (either order) that must not be
    drawn (pairs fused in earlier rounds, when the job asks for that)."""
    if m_f < 0:
        raise ValueError(f"M_f must be >= 0, got {m_f}")
    _check_unique_ids(items)
    n = len(items)
    target_in = m_f // 2
    target_cross = m_f - target_in
    empty = dict(pairs=(), short_in_domain=0, short_cross_domain=0, cross_as_in_domain=0, in_as_cross_domain=0,
                 replaced_first=0, direct_partners=0, draws=0)
    if n < 2 or m_f == 0:
        return FusionDraw(**{**empty, "in_domain_slots": target_in, "cross_domain_slots": target_cross,
                             "short_in_domain": target_in if m_f else 0, "short_cross_domain": target_cross if m_f else 0})

    p = fusion_probabilities(items)
    cdf = np.cumsum(p)
    codes = {domain: k for k, domain in enumerate(sorted(root_counts(items)))}
    dom = np.asarray([codes[item.root_domain] for item in items], dtype=np.int64)
    index = {item.id: k for k, item in enumerate(items)}
    pairs_state = _Pairs(dom, {(index[a], index[b]) for a, b in exclude if a in index and b in index})

    cross_as_in = in_as_cross = 0
    if len(codes) < 2:  # no cross-domain pair exists
        cross_as_in, target_in, target_cross = target_cross, m_f, 0
    elif not (pairs_state.in_total > 0).any():  # no in-domain pair exists
        in_as_cross, target_in, target_cross = target_in, 0, m_f

    c_a = [int(i) for i in _draw(cdf, m_f, rng)]  # C_a ~ Multinomial(M_f, p^fuse), drawn once
    made: list[FusionPair] = []
    n_in = n_cross = 0
    idx = replaced = direct = draws = 0
    passes = 0  # c_b passed over for the current c_a

    def open_kinds() -> tuple[bool, bool]:
        return n_in < target_in, n_cross < target_cross

    def settle_first() -> bool:
        """Make sure c_a = C_a[idx] can be paired, replacing it if not; False when no item can."""
        nonlocal replaced
        open_in, open_cross = open_kinds()
        if pairs_state.can_pair_one(c_a[idx], open_in, open_cross):
            return True
        ok = pairs_state.can_pair(open_in, open_cross)
        weights = np.where(ok, p, 0.0)
        if weights.sum() <= 0:
            return False
        c_a[idx] = int(_draw(np.cumsum(weights), 1, rng)[0])
        replaced += 1
        return True

    def accept(b: int) -> None:
        nonlocal idx, n_in, n_cross, passes
        a = c_a[idx]
        cross = bool(dom[a] != dom[b])
        pairs_state.add(a, b)
        made.append(FusionPair(a, b, cross, items[a].root_domain))
        if cross:
            n_cross += 1
        else:
            n_in += 1
        idx += 1
        passes = 0

    stuck = False  # no item can make a pair of an open kind
    while not stuck and (n_in < target_in or n_cross < target_cross):
        if not settle_first():
            break
        for b in _draw(cdf, m_f - (n_in + n_cross), rng):  # C_b ~ Multinomial(remain, p^fuse)
            draws += 1
            a, b = c_a[idx], int(b)
            open_in, open_cross = open_kinds()
            if (open_cross if dom[a] != dom[b] else open_in) and pairs_state.free(a, b):
                accept(b)
            else:
                passes += 1
                if passes < REDRAW_LIMIT:
                    continue
                # the partner the redraws would reach, drawn directly from the same law
                accept(int(_draw(np.cumsum(pairs_state.partner_weights(a, p, open_in, open_cross)), 1, rng)[0]))
                direct += 1
            if idx >= m_f:
                break
            if not settle_first():
                stuck = True
                break

    return FusionDraw(
        pairs=tuple(made),
        in_domain_slots=target_in,
        cross_domain_slots=target_cross,
        short_in_domain=target_in - n_in,
        short_cross_domain=target_cross - n_cross,
        cross_as_in_domain=cross_as_in,
        in_as_cross_domain=in_as_cross,
        replaced_first=replaced,
        direct_partners=direct,
        draws=draws,
    )


def update_after_round(
    items: Sequence[EvolvableItem],
    pairs: Sequence[FusionPair],
    children: Sequence[EvolvableItem],
) -> list[EvolvableItem]:
    """The next pool for eq. 7, a new list (inputs untouched). ``n_c`` is "the
    frequency of instruction c_i being used as the seed for task fusion": each
    parent's ``n_fusions`` grows by the number of ``pairs`` it is in (every pair
    drawn, whether or not the teacher's child parsed). ``children`` follow with
    ``n_fusions = 0``. ``n_root`` is recounted from the returned pool by every
    later call."""
    times: Counter[int] = Counter()
    for pair in pairs:
        for k in (pair.first, pair.second):
            if not 0 <= k < len(items):
                raise ValueError(f"fusion pair {pair} points outside the pool of {len(items)} items")
            times[k] += 1
    pool = [replace(item, n_fusions=item.n_fusions + times[k]) if times[k] else item for k, item in enumerate(items)]
    pool += [replace(child, n_fusions=0) for child in children]
    _check_unique_ids(pool)
    return pool
