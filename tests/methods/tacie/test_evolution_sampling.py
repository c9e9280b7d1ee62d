"""TaCIE's sampling, pinned to the paper's equations (tacie.txt section 2.3, numbered as printed) and Algorithm 1."""

from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from scipy.stats import chisquare

from ray_pipeline.methods.tacie.sampling import (
    EPSILON,
    REDRAW_LIMIT,
    EvolvableItem,
    FusionPair,
    depth_probabilities,
    fusion_probabilities,
    fusion_scores,
    pair_key,
    root_counts,
    round_amount,
    sample_depth,
    sample_fusion_pairs,
    update_after_round,
)


def item(name, u=0.1, n_c=0, n_obj=1, root="code"):
    return EvolvableItem(id=name, uncertainty=u, n_fusions=n_c, n_objectives=n_obj, root_domain=root)


def eq7(it, pool):
    """Eq. 7 written out independently of the module."""
    n_root = sum(other.root_domain == it.root_domain for other in pool)
    return 1.0 / ((it.n_fusions + 1) * max(it.n_objectives, 1) * n_root * max(it.uncertainty, EPSILON))


# code: 4 items, math: 3, general: 1.
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


def three_domains(masses=(0.80, 0.15, 0.05), sizes=(200, 150, 100)):
    """Equal items per domain whose domain masses under eq. 6 are ``masses``: s_i = 1 / (n_root u_i),
    so a domain's mass goes with 1 / u."""
    pool = []
    for domain, mass, size in zip(("code", "math", "general"), masses, sizes):
        pool += [item(f"{domain}{n}", 0.01 / mass, root=domain) for n in range(size)]
    return pool


# ------------------------------------------------------------------ eq. 4-5
def test_eq4_depth_probabilities_by_hand():
    # u = (0.1, 0.3, 0.6): p = u / 1.0; u = 0 counts as EPSILON
    assert depth_probabilities([0.1, 0.3, 0.6]) == pytest.approx([0.1, 0.3, 0.6])
    assert depth_probabilities([0.2, 0.2]) == pytest.approx([0.5, 0.5])
    p = depth_probabilities([0.0, 1.0])
    assert p[0] == pytest.approx(EPSILON / (1 + EPSILON)) and p[0] > 0
    assert np.allclose(depth_probabilities([0.0, 0.0, 0.0, 0.0]), 0.25)


def test_eq5_depth_candidates_are_multinomial_over_eq4():
    us = [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9]
    pool = [item(f"d{n}", u) for n, u in enumerate(us)]
    draws = 50_000
    counts = np.bincount(sample_depth(pool, draws, np.random.default_rng(7)), minlength=len(us))
    p = np.maximum(us, EPSILON) / np.maximum(us, EPSILON).sum()
    assert chisquare(counts[1:], draws * p[1:] / p[1:].sum() * counts[1:].sum() / draws).pvalue > 1e-4
    assert counts[-1] > 12 * counts[1]  # u=0.9 vs u=0.01: far from uniform


def test_eq5_guards_and_bad_values():
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


# ------------------------------------------------------------------ eq. 6-7
def test_eq7_punished_uncertainty_by_hand():
    assert root_counts(POOL) == {"code": 4, "math": 3, "general": 1}
    s = fusion_scores(POOL)
    # c1: 1 / ((n_c + 1) * n_obj * n_root * u) = 1 / (2 * 2 * 4 * 0.05) = 1.25
    assert s[1] == pytest.approx(1.25)
    # m2: 1 / (1 * 2 * 3 * 0.20) = 0.8333...; g0: 1 / (1 * 2 * 1 * 0.5) = 1.0
    assert s[6] == pytest.approx(1 / 1.2) and s[7] == pytest.approx(1.0)
    assert np.allclose(s, [eq7(it, POOL) for it in POOL])
    # n_obj = 0 counts as 1; u = 0 as EPSILON (finite score)
    s = fusion_scores([item("a", 0.0, n_obj=0), item("b", 0.5, n_obj=1)])
    assert s[0] == pytest.approx(1 / (2 * EPSILON)) and np.isfinite(s).all()


def test_eq6_fusion_probabilities_by_hand():
    pool = [item("a", 0.5), item("b", 0.25), item("m", 0.5, root="math")]
    # s = 1/(2*0.5), 1/(2*0.25), 1/(1*0.5) = 1, 2, 2: p = 0.2, 0.4, 0.4
    assert fusion_probabilities(pool) == pytest.approx([0.2, 0.4, 0.4])


@pytest.mark.parametrize(
    "change",
    [{"n_fusions": 3}, {"n_objectives": 4}, {"uncertainty": 0.3}, {"root_domain": "math"}],  # the last joins a bigger domain
)
def test_eq7_score_falls_in_each_factor(change):
    base = [item("x", 0.1, 0, 1, "rare"), *(item(f"m{n}", 0.1, 0, 1, "math") for n in range(3))]
    changed = [EvolvableItem(**{**base[0].__dict__, **change}), *base[1:]]
    assert fusion_scores(changed)[0] < fusion_scores(base)[0]


def test_eq7_n_c_counts_every_pair_drawn():
    pool = list(POOL)
    before = list(pool)
    pairs = [FusionPair(0, 1, False, "code"), FusionPair(0, 4, True, "code"), FusionPair(6, 7, True, "math")]
    children = [item("child1", 0.07, n_c=5, n_obj=3, root="code"), item("child2", 0.09, root="math")]
    new = update_after_round(pool, pairs, children)
    assert pool == before and pool[0].n_fusions == 0  # inputs untouched
    assert [it.n_fusions for it in new[:8]] == [2, 2, 0, 2, 1, 1, 1, 1]
    assert new[8] == item("child1", 0.07, n_c=0, n_obj=3, root="code")
    assert root_counts(new) == {"code": 5, "math": 4, "general": 1}
    assert np.allclose(fusion_scores(new), [eq7(it, new) for it in new])
    with pytest.raises(ValueError, match="outside"):
        update_after_round(pool, [FusionPair(0, 8, False, "code")], [])
    with pytest.raises(ValueError, match="c0"):
        update_after_round(pool, [], [item("c0")])


def test_round_amounts_default_to_the_papers_share():
    assert round_amount(None, 48_000) == 8_000  # the paper's 8,000 per round from 48,000
    assert round_amount(None, 13) == 3 and round_amount(None, 1) == 1
    assert round_amount(5, 48_000) == 5 and round_amount(0, 10) == 0


# ------------------------------------------------------------- Algorithm 1
def test_algorithm1_in_domain_shares_go_with_mass_squared():
    """While both halves are open every c_b makes a pair, so an in-domain pair of domain d has
    c_a and c_b both in d: its share is (m_d^2 - sum_i p_i^2) / sum_d (...). Here the in-domain
    half fills first (sum m^2 = 0.665 > 1/2), so every in-domain pair is made that way."""
    pool = three_domains()
    p = fusion_probabilities(pool)
    roots = np.array([it.root_domain for it in pool])
    domains = ["code", "math", "general"]
    weight = np.array([p[roots == d].sum() ** 2 - (p[roots == d] ** 2).sum() for d in domains])
    rng = np.random.default_rng(2024)
    counts = Counter()
    rounds, m_f = 40, 400
    for _ in range(rounds):
        draw = sample_fusion_pairs(pool, m_f, rng)
        counts.update(pool[pr.first].root_domain for pr in draw.pairs if not pr.cross_domain)
    observed = [counts[d] for d in domains]
    assert sum(observed) == rounds * m_f // 2
    expected = weight / weight.sum() * sum(observed)
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, expected.round(1))
    # mass, not mass squared, would give 0.80 / 0.15 / 0.05: far outside
    assert observed[2] < 0.02 * sum(observed)


def test_algorithm1_first_parents_are_C_a():
    """C_a ~ Multinomial(M_f, p_fuse) is drawn once and consumed in order: with nothing replaced,
    the first parents of a round are that multinomial draw (eq. 6), whatever the pairing did."""
    rng = np.random.default_rng(11)
    roots = ["code"] * 12 + ["math"] * 10 + ["general"] * 8
    pool = [item(f"i{n}", 0.02 + 0.01 * (n % 7), n % 3, 1 + n % 2, root) for n, root in enumerate(roots)]
    firsts = np.zeros(len(pool))
    rounds, m_f = 300, 20
    for _ in range(rounds):
        draw = sample_fusion_pairs(pool, m_f, rng)
        assert draw.replaced_first == 0 and draw.shortfall == 0
        for pr in draw.pairs:
            firsts[pr.first] += 1
    p = fusion_probabilities(pool)
    assert chisquare(firsts, p * rounds * m_f).pvalue > 1e-3


def test_algorithm1_exact_halves_no_self_pairs_child_root():
    pool = [item(f"c{n}", 0.1 + n / 50, n % 2, 1 + n % 3, "code") for n in range(10)]
    pool += [item(f"m{n}", 0.1 + n / 40, n % 3, 1, "math") for n in range(8)]
    for seed in range(20):
        draw = sample_fusion_pairs(pool, 7, np.random.default_rng(seed))
        assert (draw.in_domain_slots, draw.cross_domain_slots, draw.shortfall) == (3, 4, 0)
        kinds = Counter(pr.cross_domain for pr in draw.pairs)
        assert (kinds[False], kinds[True]) == (3, 4)
        for pr in draw.pairs:
            assert pr.first != pr.second
            assert (pool[pr.first].root_domain != pool[pr.second].root_domain) == pr.cross_domain
            assert pr.root_domain == pool[pr.first].root_domain
        assert len({frozenset((pr.first, pr.second)) for pr in draw.pairs}) == 7  # pairs are a set


@pytest.mark.timeout(20)
def test_algorithm1_stalled_first_parent_is_replaced():
    # "general" holds one item with most of the mass: once the cross-domain half is full it can
    # make no pair (its domain holds no other item); the literal loop would never end.
    pool = [item("g", 0.001, root="general"), *(item(f"c{n}", 0.5) for n in range(5))]
    draw = sample_fusion_pairs(pool, 10, np.random.default_rng(0))
    assert draw.shortfall == 0 and draw.replaced_first > 0
    kinds = Counter(pr.cross_domain for pr in draw.pairs)
    assert (kinds[False], kinds[True]) == (5, 5)
    assert all(pool[pr.first].root_domain == "code" for pr in draw.pairs if not pr.cross_domain)


@pytest.mark.timeout(20)
def test_algorithm1_improbable_partner_drawn_directly():
    # c_a is "a" (all the mass); its only partner b has p ~ 1e-12: the redraws are cut short
    # after REDRAW_LIMIT and the partner is drawn from the same restricted law.
    pool = [item("a", 1e-6, root="code"), item("b", 1e6, root="math")]
    draw = sample_fusion_pairs(pool, 1, np.random.default_rng(3))
    assert [(pr.first, pr.second) for pr in draw.pairs] == [(0, 1)]
    assert draw.direct_partners == 1 and draw.draws == REDRAW_LIMIT


def test_algorithm1_excluded_pairs_and_shortfall():
    pool = [item("a"), item("b", 0.2), item("c", 0.3), item("x", root="math"), item("y", 0.4, root="math")]
    exclude = frozenset({("b", "a"), pair_key("c", "y"), ("gone", "a")})
    draw = sample_fusion_pairs(pool, 20, np.random.default_rng(0), exclude=exclude)
    got = {pair_key(pool[pr.first].id, pool[pr.second].id) for pr in draw.pairs}
    assert len(got) == len(draw.pairs)  # no pair twice, in either order
    every = {pair_key(a.id, b.id) for a, b in combinations(pool, 2)}
    assert got == every - {pair_key("a", "b"), pair_key("c", "y")}
    # in-domain: (a,c), (b,c), (x,y) of 10 slots; cross: 6 - 1 = 5 of 10
    assert (draw.short_in_domain, draw.short_cross_domain) == (7, 5)


@pytest.mark.timeout(10)
def test_algorithm1_tiny_and_empty_pools_end_short():
    pool = [item("a"), item("b"), item("m", root="math")]
    draw = sample_fusion_pairs(pool, 10, np.random.default_rng(1))
    assert len(draw.pairs) == 3
    assert (draw.short_in_domain, draw.short_cross_domain, draw.shortfall) == (4, 3, 7)
    empty = sample_fusion_pairs([], 4, np.random.default_rng(1))
    assert empty.pairs == () and empty.shortfall == 4
    alone = sample_fusion_pairs([item("a")], 3, np.random.default_rng(1))
    assert alone.pairs == () and alone.shortfall == 3


def test_algorithm1_single_root_domain_and_singleton_domains():
    pool = [item(f"c{n}", 0.1 * (n + 1)) for n in range(6)]
    draw = sample_fusion_pairs(pool, 6, np.random.default_rng(2))
    assert (draw.in_domain_slots, draw.cross_domain_slots, draw.cross_as_in_domain) == (6, 0, 3)
    assert len(draw.pairs) == 6 and not any(pr.cross_domain for pr in draw.pairs)
    alone = [item("a"), item("m", root="math"), item("g", root="general")]
    draw = sample_fusion_pairs(alone, 2, np.random.default_rng(2))
    assert (draw.in_domain_slots, draw.cross_domain_slots, draw.in_as_cross_domain) == (0, 2, 1)
    assert len(draw.pairs) == 2 and all(pr.cross_domain for pr in draw.pairs)


def test_same_seed_same_draws():
    def run(seed):
        rng = np.random.default_rng(seed)
        return sample_depth(POOL, 20, rng), sample_fusion_pairs(POOL, 6, rng).pairs

    assert run(42) == run(42)
    assert run(42) != run(43)


@pytest.mark.timeout(30)
def test_algorithm1_paper_scale_round_is_quick():
    # 48,000 items in five root domains, M_f = 8,000 (the authors' per-round amount)
    rng = np.random.default_rng(5)
    roots = ["general", "general", "math", "math", "code"]
    pool = [item(f"i{n}", float(u), root=roots[n % 5]) for n, u in enumerate(rng.uniform(0.01, 0.2, 48_000))]
    draw = sample_fusion_pairs(pool, 8_000, rng)
    assert draw.shortfall == 0 and len(draw.pairs) == 8_000
