"""Nearest-neighbour distances and TaCIE's diversity U, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ray_pipeline.analysis import diversity
from ray_pipeline.analysis.diversity import diversity_u, most_dissimilar, nearest, nn_distances, unit_rows


def _angles(*degrees: float) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_eq8_to_10_by_hand():
    # (1,0), (4,0), (1,4): d = 3, 3, 4 (eq. 9); mu = 10/3 (eq. 10); U = (2 (1/3)^2 + (2/3)^2) / 3 = 2/9 (eq. 8)
    X = np.array([[1.0, 0.0], [4.0, 0.0], [1.0, 4.0]])
    assert nn_distances(X) == pytest.approx([3.0, 3.0, 4.0])
    assert diversity_u(X) == pytest.approx(2 / 9)


def test_eq9_on_unit_vectors_and_the_cosine_option():
    # Unit vectors at 0, 10 and 90 degrees: the first two are each other's neighbour
    # (chord 2 sin 5deg); the third's nearest is the 10-degree one (2 sin 40deg).
    X = _angles(0, 10, 90)
    e10, e80 = 2 * math.sin(math.radians(5)), 2 * math.sin(math.radians(40))
    assert nn_distances(X) == pytest.approx([e10, e10, e80])
    mean = (2 * e10 + e80) / 3
    assert diversity_u(X) == pytest.approx(((e10 - mean) ** 2 * 2 + (e80 - mean) ** 2) / 3)
    c10, c80 = 1 - math.cos(math.radians(10)), 1 - math.cos(math.radians(80))
    assert nn_distances(X, metric="cosine") == pytest.approx([c10, c10, c80])
    mean = (2 * c10 + c80) / 3
    assert diversity_u(X, metric="cosine") == pytest.approx(((c10 - mean) ** 2 * 2 + (c80 - mean) ** 2) / 3)
    with pytest.raises(ValueError, match="metric"):
        nn_distances(X, metric="manhattan")


def test_rows_need_not_be_unit_length():
    # (3, 0), (0, 2), (5, 5): Euclidean neighbours (0,2)->(3,0) sqrt13, (3,0)->(0,2) sqrt13, (5,5)->(3,0) sqrt29;
    # cosines 0, 1/sqrt2, 1/sqrt2
    X = np.array([[3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    assert nn_distances(X) == pytest.approx([13**0.5, 13**0.5, 29**0.5])
    assert nn_distances(X, metric="cosine") == pytest.approx([1 - 2**-0.5] * 3)
    assert diversity_u(X, metric="cosine") == pytest.approx(0.0)


def test_a_row_never_counts_as_its_own_neighbour_but_a_copy_does():
    X = _angles(0, 0, 45)
    assert nn_distances(X) == pytest.approx([0.0, 0.0, 2 * math.sin(math.radians(22.5))])
    sims, idx = nearest(X)
    assert idx.tolist() == [1, 0, 0]
    assert sims[:2] == pytest.approx([1.0, 1.0])


def test_against_another_set():
    d = nn_distances(_angles(0, 90), _angles(30, 100, 180), metric="cosine")
    assert d == pytest.approx([1 - math.cos(math.radians(30)), 1 - math.cos(math.radians(10))])
    d = nn_distances(_angles(0, 90), _angles(30, 100, 180))
    assert d == pytest.approx([2 * math.sin(math.radians(15)), 2 * math.sin(math.radians(5))])
    _, idx = nearest(_angles(0, 90), _angles(30, 100, 180))
    assert idx.tolist() == [0, 1]


def test_chunked_search_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(57, 8)).astype(np.float32)
    Y = rng.normal(size=(23, 8)).astype(np.float32)
    full = np.linalg.norm(X[:, None, :] - X[None, :, :], axis=2)
    np.fill_diagonal(full, np.inf)
    expected_other = np.linalg.norm(X[:, None, :] - Y[None, :, :], axis=2).min(axis=1)
    U = unit_rows(X)
    cos = U @ U.T
    np.fill_diagonal(cos, -np.inf)
    monkeypatch.setattr(diversity, "CHUNK_ELEMENTS", 40)  # 1 row per chunk against 57 rows
    assert nn_distances(X) == pytest.approx(full.min(axis=1), abs=1e-5)
    assert nn_distances(X, Y) == pytest.approx(expected_other, abs=1e-5)
    assert nn_distances(X, metric="cosine") == pytest.approx(1 - cos.max(axis=1), abs=1e-6)
    assert nearest(X)[1].tolist() == cos.argmax(axis=1).tolist()


def test_too_few_rows():
    assert math.isnan(diversity_u(np.zeros((0, 4))))
    assert math.isnan(diversity_u(_angles(10)))
    assert np.isnan(nn_distances(_angles(10))).all()
    assert np.isnan(nn_distances(_angles(10, 20), np.zeros((0, 2)))).all()
    assert nn_distances(np.zeros((0, 4))).shape == (0,)


def test_identical_spacing_has_zero_variance_and_spread_does_not():
    even = _angles(0, 30, 60, 90, 120)
    uneven = _angles(0, 2, 60, 90, 170)
    assert diversity_u(even) == pytest.approx(0.0, abs=1e-12)
    assert diversity_u(uneven) > 1e-3


def test_most_dissimilar_by_hand():
    """Farthest-point selection from the anchor: each step takes the row least like the anchor and those taken."""
    anchor = np.array([1.0, 0.0, 0.0])
    X = np.array([
        [1.0, 0.1, 0.0],   # 0: nearly the anchor
        [0.0, 1.0, 0.0],   # 1: orthogonal to the anchor
        [0.0, 0.9, 0.1],   # 2: nearly row 1
        [0.0, 0.0, 1.0],   # 3: orthogonal to the anchor and to row 1
        [0.9, 0.0, 0.1],   # 4: close to the anchor
    ])
    # row 1 and row 3 tie at similarity 0 to the anchor: the lower index first; then row 3 (0 to both)
    assert most_dissimilar(anchor, X, 2) == [1, 3]
    # the third: row 2 is 0.99 like row 1, row 4 is 0.99 like the anchor, row 0 is 0.995 like it: row 2 or 4
    third = set(most_dissimilar(anchor, X, 3)) - {1, 3}
    sims = {i: max(float(unit_rows(X[i:i + 1])[0] @ unit_rows(v[None])[0]) for v in (anchor, X[1], X[3])) for i in (0, 2, 4)}
    assert third == {min(sims, key=sims.get)}
    assert most_dissimilar(anchor, X, 9) == [0, 1, 2, 3, 4] and most_dissimilar(anchor, X, 0) == []
