from collections import Counter
from itertools import combinations

import pytest

from ray_pipeline.methods.fusion.pairing import PairSampler, is_cross_language


def test_pairs_distinct_and_never_repeated_in_either_order():
    sampler = PairSampler(["python"] * 12, seed=1)
    pairs = sampler.draw_many(10_000)
    assert len(pairs) == 12 * 11 // 2 == sampler.total
    assert all(i != j for i, j in pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)
    assert sampler.draw() is None and sampler.exhausted


def test_same_seed_same_sequence_other_seed_differs():
    langs = ["python", "java", "", "rust"] * 10
    a = PairSampler(langs, seed=3).draw_many(50)
    b = PairSampler(langs, seed=3).draw_many(50)
    c = PairSampler(langs, seed=4).draw_many(50)
    assert a == b
    assert a != c


def test_cross_language_forbidden():
    langs = ["python", "python", "java", "java", "java", ""]
    sampler = PairSampler(langs, seed=0, cross_language=False)
    pairs = sampler.draw_many(1000)
    # python pairs: 1, java pairs: 3, unnamed pairs with any of the 5 others: 5
    assert len(pairs) == sampler.total == 1 + 3 + 5
    assert not any(is_cross_language(langs[i], langs[j]) for i, j in pairs)


def test_cross_language_allowed_draws_them():
    langs = ["python"] * 5 + ["java"] * 5
    pairs = PairSampler(langs, seed=0, cross_language=True).draw_many(1000)
    assert len(pairs) == 45
    assert sum(is_cross_language(langs[i], langs[j]) for i, j in pairs) == 25


def test_uniform_over_pairs_and_order():
    # Draw the first pair from many samplers: every unordered pair about equally likely.
    n, trials = 5, 20_000
    first = Counter(frozenset(PairSampler(["x"] * n, seed=s).draw()) for s in range(trials))
    expected = trials / (n * (n - 1) / 2)
    assert set(first) == {frozenset(c) for c in combinations(range(n), 2)}
    assert all(abs(c - expected) < 0.15 * expected for c in first.values())
    orders = Counter(PairSampler(["x"] * 2, seed=s).draw() for s in range(2000))
    assert abs(orders[(0, 1)] - orders[(1, 0)]) < 200


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_seeds(n):
    sampler = PairSampler(["python"] * n, seed=0)
    assert sampler.total == 0
    assert sampler.draw() is None


def test_uniform_without_cross_language_on_a_many_language_pool():
    # 60 languages of 3 seeds each plus 4 unnamed seeds: only a few % of all pairs are allowed,
    # so plain rejection sampling would starve; strata keep every draw uniform and fast.
    langs = [f"lang{k}" for k in range(60) for _ in range(3)] + [""] * 4
    sampler = PairSampler(langs, seed=5, cross_language=False)
    n, u = len(langs), 4
    assert sampler.total == 60 * 3 + u * (u - 1) // 2 + u * (n - u)
    pairs = sampler.draw_many(sampler.total + 10)
    assert len(pairs) == len({frozenset(p) for p in pairs}) == sampler.total
    assert not any(is_cross_language(langs[i], langs[j]) for i, j in pairs)
    # First draws are uniform over strata: named-language pairs are 180 of 902 allowed pairs.
    firsts = [PairSampler(langs, seed=s, cross_language=False).draw() for s in range(4000)]
    named = sum(bool(langs[i]) and bool(langs[j]) for i, j in firsts) / len(firsts)
    assert abs(named - 180 / sampler.total) < 0.03
    both_unnamed = sum(not langs[i] and not langs[j] for i, j in firsts) / len(firsts)
    assert abs(both_unnamed - 6 / sampler.total) < 0.01
