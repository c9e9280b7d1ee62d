from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from scipy.stats import chisquare

from ray_pipeline.evolution_sampling import (
    EPSILON,
    EvolvableItem,
    FusionPair,
    depth_probabilities,
    fusion_probabilities,
    fusion_scores,
    pair_key,
    root_counts,
    sample_depth,
    sample_fusion_pairs,
    union_objectives,
    update_after_round,
)


def item(name, u=0.1, n_c=0, n_obj=1, root="code"):
    return EvolvableItem(id=name, uncertainty=u, n_fusions=n_c, n_objectives=n_obj, root_domain=root)


def eq5(it, pool):
    """Eq. 5 written out independently of the module."""
    n_root = sum(other.root_domain == it.root_domain for other in pool)
    return 1.0 / ((it.n_fusions + 1) * max(it.n_objectives, 1) * n_root * max(it.uncertainty, EPSILON))


# code: 4 items, math: 3, general: 1 (never an in-domain first parent).
POOL = [
    item("c0", 0.02, 0, 1, "code"),
    item("c1", 0.05, 1, 2, "code"),
    item("c2", 0.10, 0, 3, "code"),
    item("c3", 0.04, 2, 1, "code"),
    item("m0", 0.03, 0, 1, "math"),
    item("m1", 0.08, 1, 1, "math"),
    item("m2", 0.20, 0, 2, "math"),
    item("g0", 0.50, 0, 2, "general"),
]


def expected_joint(pool, cross):
    """P(first = i, second = j) for one pair drawn with nothing used: eq. 6 twice."""
    s = np.array([eq5(it, pool) for it in pool])
    roots = [it.root_domain for it in pool]
    n = len(pool)
    allowed = np.array([[i != j and (roots[i] != roots[j]) == cross for j in range(n)] for i in range(n)])
    first = np.where(allowed.any(axis=1), s, 0.0)
    first /= first.sum()
    second = np.where(allowed, s[None, :], 0.0)
    second /= np.maximum(second.sum(axis=1, keepdims=True), 1e-300)
    return first[:, None] * second


def assert_matches(counts: Counter, expected: np.ndarray, draws: int):
    cells = list(zip(*np.nonzero(expected)))
    assert set(counts) <= set(cells), "a pair outside the allowed ones was drawn"
    observed = [counts[c] for c in cells]
    result = chisquare(observed, [expected[c] * draws for c in cells])
    assert result.pvalue > 1e-4, result


def test_depth_frequencies_match_eq4():
    us = [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9]
    pool = [item(f"d{n}", u) for n, u in enumerate(us)]
    draws = 50_000
    counts = np.bincount(sample_depth(pool, draws, np.random.default_rng(7)), minlength=len(us))
    p = np.maximum(us, EPSILON) / np.maximum(us, EPSILON).sum()
    z = (counts - draws * p) / np.sqrt(draws * p * (1 - p))
    assert np.abs(z).max() < 4.5, z
    assert counts[-1] > 12 * counts[1]  # u=0.9 vs u=0.01: far from uniform


def test_depth_epsilon_guard_and_bad_values():
    assert np.allclose(depth_probabilities([0.0, 0.0, 0.0, 0.0]), 0.25)
    p = depth_probabilities([0.0, 1.0])
    assert p[0] == pytest.approx(EPSILON / (1 + EPSILON)) and p[0] > 0
    pool = [item("ok"), item("broken", float("nan"))]
    with pytest.raises(ValueError, match="broken"):
        sample_depth(pool, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="neg"):
        fusion_scores([item("neg", -0.1)])
    with pytest.raises(ValueError, match="#1"):
        depth_probabilities([0.1, float("inf")])
    assert sample_depth(pool[:1], 0, np.random.default_rng(0)) == []
    with pytest.raises(ValueError):
        sample_depth([], 1, np.random.default_rng(0))


def test_fusion_scores_formula_and_root_counts():
    assert root_counts(POOL) == {"code": 4, "math": 3, "general": 1}
    assert np.allclose(fusion_scores(POOL), [eq5(it, POOL) for it in POOL])
    # c1: 1 / ((1 + 1) * 2 * 4 * 0.05)
    assert fusion_scores(POOL)[1] == pytest.approx(1 / 0.8)
    # n_obj = 0 counts as 1; u = 0 as EPSILON (finite score).
    s = fusion_scores([item("a", 0.0, n_obj=0), item("b", 0.5, n_obj=1)])
    assert s[0] == pytest.approx(1 / (2 * EPSILON)) and np.isfinite(s).all()
    q = fusion_probabilities(fusion_scores(POOL), [r.root_domain == "math" for r in POOL])
    assert q[:4].sum() == 0 and q.sum() == pytest.approx(1)


@pytest.mark.parametrize(
    "change",
    [
        {"n_fusions": 3},
        {"n_objectives": 4},
        {"uncertainty": 0.3},
        {"root_domain": "math"},  # joins a domain with more items
    ],
)
def test_score_decreases_in_each_factor(change):
    base = [item("x", 0.1, 0, 1, "rare"), *(item(f"m{n}", 0.1, 0, 1, "math") for n in range(3))]
    changed = [EvolvableItem(**{**base[0].__dict__, **change}), *base[1:]]
    assert fusion_scores(changed)[0] < fusion_scores(base)[0]


def test_single_pairs_follow_eq6_in_and_cross_domain():
    # k = 2: one in-domain and one cross-domain pair, which can never collide,
    # so every call is an independent draw from eq. 6 (first) and eq. 6
    # restricted to the allowed partners (second).
    rng = np.random.default_rng(11)
    calls = 6000
    joint = {False: Counter(), True: Counter()}
    for _ in range(calls):
        draw = sample_fusion_pairs(POOL, 2, rng)
        assert draw.shortfall == 0 and len(draw.pairs) == 2
        for pair in draw.pairs:
            joint[pair.cross_domain][(pair.first, pair.second)] += 1
    roots = [it.root_domain for it in POOL]
    assert all(roots[i] == roots[j] for i, j in joint[False])
    assert all(roots[i] != roots[j] for i, j in joint[True])
    assert not any(i == 7 for i, _ in joint[False])  # the only "general" item has no in-domain partner
    assert_matches(joint[False], expected_joint(POOL, cross=False), calls)
    assert_matches(joint[True], expected_joint(POOL, cross=True), calls)
    # The rare domain's single item is the favourite first parent of cross pairs.
    firsts = Counter(i for i, _ in joint[True])
    assert firsts.most_common(1)[0][0] == 7


def test_used_pairs_are_redrawn_from_the_free_ones():
    # code {a, b, c} with (a, b) excluded: the in-domain pair is (a,c), (c,a),
    # (b,c) or (c,b), with eq. 6's weights renormalised over those four.
    pool = [item("a", 0.05), item("b", 0.2, n_c=1), item("c", 0.1, n_obj=2), item("z", 0.1, root="math")]
    exclude = {("b", "a")}  # either order
    s = np.array([eq5(it, pool) for it in pool])
    q1 = s[:3] / s[:3].sum()
    weights = {
        (0, 2): q1[0] * s[2] / (s[1] + s[2]),
        (2, 0): q1[2] * s[0] / (s[0] + s[1]),
        (1, 2): q1[1] * s[2] / (s[0] + s[2]),
        (2, 1): q1[2] * s[1] / (s[0] + s[1]),
    }
    expected = np.zeros((4, 4))
    for cell, w in weights.items():
        expected[cell] = w / sum(weights.values())
    rng = np.random.default_rng(5)
    calls = 4000
    counts = Counter()
    for _ in range(calls):
        (pair,) = sample_fusion_pairs(pool, 1, rng, exclude=exclude).pairs
        counts[(pair.first, pair.second)] += 1
    assert_matches(counts, expected, calls)


def test_half_split_domains_and_child_root():
    pool = [item(f"c{n}", 0.1 + n / 50, n % 2, 1 + n % 3, "code") for n in range(10)]
    pool += [item(f"m{n}", 0.1 + n / 40, n % 3, 1, "math") for n in range(8)]
    draw = sample_fusion_pairs(pool, 7, np.random.default_rng(3))
    assert (draw.in_domain_slots, draw.cross_domain_slots, draw.shortfall, draw.cross_as_in_domain) == (4, 3, 0, 0)
    assert [p.cross_domain for p in draw.pairs].count(False) == 4
    assert [p.cross_domain for p in draw.pairs].count(True) == 3
    for p in draw.pairs:
        assert p.first != p.second
        assert (pool[p.first].root_domain != pool[p.second].root_domain) == p.cross_domain
        assert p.root_domain == pool[p.first].root_domain
    assert len({frozenset((p.first, p.second)) for p in draw.pairs}) == 7


def test_exclude_respected_and_shortfall_counted():
    pool = [item("a"), item("b", 0.2), item("c", 0.3), item("x", root="math"), item("y", 0.4, root="math")]
    exclude = frozenset({("b", "a"), pair_key("c", "y"), ("gone", "a")})
    draw = sample_fusion_pairs(pool, 20, np.random.default_rng(0), exclude=exclude)
    got = {pair_key(pool[p.first].id, pool[p.second].id) for p in draw.pairs}
    assert len(got) == len(draw.pairs)  # no pair twice, in either order
    every = {pair_key(a.id, b.id) for a, b in combinations(pool, 2)}
    assert got == every - {pair_key("a", "b"), pair_key("c", "y")}
    # in-domain: (a,c), (b,c), (x,y) of 10 slots; cross: 6 - 1 = 5 of 10.
    assert (draw.short_in_domain, draw.short_cross_domain) == (7, 5)


@pytest.mark.timeout(10)
def test_tiny_and_empty_pools_end_short():
    pool = [item("a"), item("b"), item("m", root="math")]
    draw = sample_fusion_pairs(pool, 10, np.random.default_rng(1))
    assert len(draw.pairs) == 3
    assert (draw.short_in_domain, draw.short_cross_domain, draw.shortfall) == (4, 3, 7)
    empty = sample_fusion_pairs([], 4, np.random.default_rng(1))
    assert empty.pairs == () and empty.shortfall == 4
    alone = sample_fusion_pairs([item("a")], 3, np.random.default_rng(1))
    assert alone.pairs == () and alone.shortfall == 3


def test_single_domain_fills_cross_slots_in_domain():
    pool = [item(f"c{n}", 0.1 * (n + 1)) for n in range(6)]
    draw = sample_fusion_pairs(pool, 6, np.random.default_rng(2))
    assert (draw.in_domain_slots, draw.cross_domain_slots, draw.cross_as_in_domain) == (6, 0, 3)
    assert len(draw.pairs) == 6 and not any(p.cross_domain for p in draw.pairs)


def test_same_seed_same_draws():
    def run(seed):
        rng = np.random.default_rng(seed)
        return sample_depth(POOL, 20, rng), sample_fusion_pairs(POOL, 6, rng).pairs

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_update_after_round_eq7():
    pool = list(POOL)
    before = list(pool)
    pairs = [FusionPair(0, 1, False, "code"), FusionPair(0, 4, True, "code"), FusionPair(6, 7, True, "math")]
    objectives = union_objectives(["Sort the list", "return it"], ["RETURN  it", "print the sum"])
    assert objectives == ["Sort the list", "return it", "print the sum"]
    children = [
        item("child1", 0.07, n_c=5, n_obj=len(objectives), root="code"),
        item("child2", 0.09, root="math"),
    ]
    new = update_after_round(pool, pairs, children)
    assert pool == before and pool[0].n_fusions == 0  # inputs untouched
    assert [it.n_fusions for it in new[:8]] == [2, 2, 0, 2, 1, 1, 1, 1]
    assert new[8] == item("child1", 0.07, n_c=0, n_obj=3, root="code")
    assert new[9].n_fusions == 0
    assert root_counts(new) == {"code": 5, "math": 4, "general": 1}
    assert np.allclose(fusion_scores(new), [eq5(it, new) for it in new])
    with pytest.raises(ValueError, match="outside"):
        update_after_round(pool, [FusionPair(0, 8, False, "code")], [])
    with pytest.raises(ValueError, match="c0"):
        update_after_round(pool, [], [item("c0")])


def test_partner_mass_exact_next_to_a_huge_score():
    # s_a / s_b is about 1e18: sums of scores minus s_a cancel to 0 in floating point.
    pool = [item("a", 0.0), item("b", 1.0, n_c=10**8, n_obj=10**4), item("c", 1.0, n_c=10**8, n_obj=10**4)]
    rng = np.random.default_rng(9)
    # Nothing used: a is (almost surely) the first parent, b or c its partner.
    seconds = Counter()
    for _ in range(2000):
        (pair,) = sample_fusion_pairs(pool, 1, rng).pairs
        assert pair.first == 0
        seconds[pair.second] += 1
    assert abs(seconds[1] - 1000) < 4.5 * np.sqrt(500)
    # Both of a's pairs used: (b, c) is still free, drawn either way round.
    exclude = {("a", "b"), ("a", "c")}
    firsts = Counter()
    for _ in range(2000):
        (pair,) = sample_fusion_pairs(pool, 1, rng, exclude=exclude).pairs
        assert {pair.first, pair.second} == {1, 2}
        firsts[pair.first] += 1
    assert abs(firsts[1] - 1000) < 4.5 * np.sqrt(500)
