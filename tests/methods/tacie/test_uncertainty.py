"""Prompt uncertainty (Kung et al. 2023): perturbation, q and u on hand-computed values."""

from __future__ import annotations

import math

import pytest

from ray_pipeline.methods.tacie.uncertainty.score import perturb, sequence_probability, uncertainty


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(word in it for word in part)


def test_drop_rate_is_drop_prob_over_many_words():
    words = [f"w{i}" for i in range(1000)]
    copies = perturb(" ".join(words), n=20, drop_prob=0.2, seed=7)
    assert len(copies) == 20
    kept = sum(len(c.split()) for c in copies) / (20 * len(words))
    assert kept == pytest.approx(0.8, abs=0.015)  # 5 standard deviations over 20k draws
    for copy in copies:  # words are dropped, never reordered or altered
        assert _is_subsequence(copy.split(), words)
    assert len(set(copies)) == 20


def test_perturbation_is_deterministic_for_a_seed():
    text = "Write a Python function that returns the n-th Fibonacci number using memoization."
    assert perturb(text, 10, 0.2, seed=3) == perturb(text, 10, 0.2, seed=3)
    assert perturb(text, 10, 0.2, seed=3) != perturb(text, 10, 0.2, seed=4)


def test_a_copy_is_never_empty():
    for seed in range(50):
        assert perturb("Sort", 5, 0.9, seed) == ["Sort"] * 5
        for copy in perturb("reverse a linked list", 5, 0.95, seed):
            assert 1 <= len(copy.split()) and _is_subsequence(copy.split(), "reverse a linked list".split())
    assert perturb("", 3, 0.2, seed=1) == ["", "", ""]
    assert perturb("   ", 2, 0.2, seed=1) == ["   ", "   "]


def test_whitespace_layout_is_kept():
    code = "Fix this:\n\ndef f(x):\n    return x+1\n"
    assert perturb(code, 3, 1e-12, seed=0) == [code] * 3  # nothing dropped: the exact text
    for copy in perturb(code, 30, 0.2, seed=5):
        assert copy.endswith("\n") and "  \n" not in copy
        assert _is_subsequence(copy.split(), code.split())
        # a kept word keeps the whitespace after it, so lines stay lines
        if "x+1" in copy and "return" in copy:
            assert "return x+1" in copy


def test_bad_arguments():
    with pytest.raises(ValueError):
        perturb("a b", 2, 1.0, seed=0)
    with pytest.raises(ValueError):
        uncertainty(0.5, [])


def test_eq3_q_is_the_geometric_mean_of_token_probabilities():
    assert sequence_probability([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert sequence_probability([0.0, 0.0]) == 1.0
    # independent of length: the same per-token confidence gives the same q
    assert sequence_probability([math.log(0.5)] * 3) == pytest.approx(0.5)
    assert sequence_probability([math.log(0.5)] * 300) == pytest.approx(0.5)
    assert math.isnan(sequence_probability([]))
    # the literal product P(r | c), switchable
    assert sequence_probability([math.log(0.5), math.log(0.125)], "product") == pytest.approx(0.0625)
    assert sequence_probability([math.log(0.5)] * 300, "product") < 1e-80
    with pytest.raises(ValueError, match="kind"):
        sequence_probability([0.0], "sum")


def test_eq2_uncertainty_is_the_mean_absolute_change():
    assert uncertainty(0.5, [0.4, 0.7, 0.5]) == pytest.approx((0.1 + 0.2 + 0.0) / 3)
    assert uncertainty(0.3, [0.3] * 10) == 0.0
    assert uncertainty(0.2, [0.9]) == pytest.approx(0.7)
    assert math.isnan(uncertainty(math.nan, [math.nan, math.nan]))
