"""Seed collection: k-means per source, k by the elbow method, one seed per cluster."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from sklearn.datasets import make_blobs

from ray_pipeline.analysis.clustering import cluster_and_pick, elbow_k, pick_per_source, source_seed


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small k-means fits on a few shared cores are many times slower with OpenMP threads spinning."""
    with threadpool_limits(1):
        yield


def _blobs(centers: int, n: int = 90, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=n, centers=centers, n_features=8, cluster_std=0.4, center_box=(-20, 20), random_state=seed)
    return X, y


def test_elbow_by_hand():
    # x = 0, .25, .5, .75, 1; y = 1, .2, .1, .05, 0; chord 1 - x: below = 0, .55, .4, .2, 0.
    assert elbow_k([1, 2, 3, 4, 5], [100, 20, 10, 5, 0]) == 2
    # Scale of either axis does not matter.
    assert elbow_k([10, 20, 30, 40, 50], [1.0, 0.2, 0.1, 0.05, 0.0]) == 20
    assert elbow_k([2, 3, 4, 5, 6], [50, 40, 30, 3, 2]) == 5


def test_elbow_without_a_bend_gives_the_first_k():
    assert elbow_k([2, 3, 4, 5], [40, 30, 20, 10]) == 2  # straight line
    assert elbow_k([2, 3, 4, 5], [40, 39, 38, 0]) == 2  # concave: every point above the chord
    assert elbow_k([2, 3, 4], [5, 5, 5]) == 2
    assert elbow_k([3], [7.0]) == 3
    with pytest.raises(ValueError):
        elbow_k([2, 3], [1.0])


@pytest.mark.parametrize("centers", [4, 6])
def test_blobs_give_their_number_of_clusters_and_one_seed_each(centers):
    X, y = _blobs(centers)
    result = cluster_and_pick(X, k_min=2, k_max=10, seed=0)
    assert result.k == centers
    assert sorted(result.inertias) == list(range(2, 11))
    assert len(result.chosen) == centers
    assert sorted(y[result.chosen].tolist()) == list(range(centers))  # one per true blob
    # labels agree with the true blobs up to renaming
    assert len({(a, b) for a, b in zip(result.labels.tolist(), y.tolist())}) == centers


def test_same_seed_same_choice_other_seed_other_draw():
    X, _ = _blobs(4, n=120)
    first = cluster_and_pick(X, 2, 6, seed=5)
    again = cluster_and_pick(X, 2, 6, seed=5)
    assert first.chosen == again.chosen
    draws = {tuple(cluster_and_pick(X, 2, 6, seed=s).chosen) for s in range(4)}
    assert len(draws) > 1  # 30 members per cluster: the draw is random, not "the first row"


def test_k_capped_below_pool_size():
    X, _ = _blobs(3, n=5)
    result = cluster_and_pick(X, k_min=2, k_max=16, seed=0)
    assert max(result.inertias) == 4
    assert 2 <= result.k <= 4 and len(result.chosen) == result.k


@pytest.mark.parametrize("n", [0, 1, 2])
def test_pool_no_larger_than_k_min_keeps_everything(n):
    X = np.random.default_rng(0).normal(size=(n, 4))
    result = cluster_and_pick(X, k_min=2, k_max=8, seed=0)
    assert result.k == n and result.chosen == list(range(n)) and result.inertias == {}


def test_repeated_embeddings_cap_k_at_distinct_points():
    X = np.repeat(np.eye(3), 4, axis=0)  # 12 rows, 3 distinct points
    result = cluster_and_pick(X, k_min=2, k_max=8, seed=0)
    assert sorted(result.inertias) == [2, 3]  # k = 4 would leave a cluster empty
    assert len(set(X[result.chosen].argmax(axis=1).tolist())) == result.k  # never the same point twice


def test_per_source_keeps_sources_apart_and_returns_global_rows():
    A, ya = _blobs(4, n=60, seed=2)
    B, yb = _blobs(3, n=45, seed=3)
    # Interleave the two sources to check the global indices.
    a_rows = sorted(np.random.default_rng(0).permutation(105)[:60].tolist())
    b_rows = sorted(set(range(105)) - set(a_rows))
    X = np.empty((105, 8))
    X[a_rows], X[b_rows] = A, B
    sources = ["a" if i in a_rows else "b" for i in range(105)]
    results = pick_per_source(X, sources, k_min=2, k_max=8, seed=7)
    assert sources[0] == "b" and list(results) == ["b", "a"]  # order of first appearance
    assert results["a"].k == 4 and results["b"].k == 3
    assert set(results["a"].chosen) <= set(a_rows) and set(results["b"].chosen) <= set(b_rows)
    assert sorted(ya[[a_rows.index(i) for i in results["a"].chosen]].tolist()) == [0, 1, 2, 3]
    assert len(results["a"].labels) == 60
    # A source's choice does not depend on the others.
    alone = pick_per_source(B, ["b"] * 45, k_min=2, k_max=8, seed=7)["b"]
    assert [b_rows[i] for i in alone.chosen] == results["b"].chosen
    assert pick_per_source(X, sources, 2, 8, seed=7)["a"].chosen == results["a"].chosen
    with pytest.raises(ValueError):
        pick_per_source(X, sources[:-1], 2, 8, seed=7)


def test_source_seed_is_stable_and_distinct():
    assert source_seed(0, "a") == source_seed(0, "a")
    assert len({source_seed(0, "a"), source_seed(0, "b"), source_seed(1, "a")}) == 3
    assert 0 <= source_seed(-5, "x") < 2**32


# ------------------------------------------------- clusters given per source (TaCIE's 3,000 / 1,500)
def test_given_clusters_skip_the_elbow():
    X, y = _blobs(6, n=120)
    result = cluster_and_pick(X, k_min=2, k_max=3, seed=0, clusters=6)  # 6 lies outside the elbow's 2..3
    assert (result.k, result.k_from) == (6, "given")
    assert list(result.inertias) == [6]  # one fit: no k was tried but the given one
    assert sorted(y[result.chosen].tolist()) == list(range(6))  # one seed per true blob
    more = cluster_and_pick(X, k_min=2, k_max=3, seed=0, clusters=25)
    assert more.k == 25 and len(set(more.chosen)) == 25 and len(np.unique(more.labels)) == 25
    assert cluster_and_pick(X, 2, 3, seed=0).k_from == "elbow"


def test_given_clusters_capped_at_rows_and_distinct_rows():
    X, _ = _blobs(3, n=10)
    small = cluster_and_pick(X, k_min=2, k_max=8, seed=0, clusters=10)
    assert (small.k, small.k_from, small.chosen, small.inertias) == (10, "all", list(range(10)), {})
    repeated = np.repeat(np.eye(3), 4, axis=0)  # 12 rows, 3 distinct points
    capped = cluster_and_pick(repeated, k_min=2, k_max=8, seed=0, clusters=5)
    assert (capped.k, capped.k_from) == (3, "given")
    assert sorted(repeated[capped.chosen].argmax(axis=1).tolist()) == [0, 1, 2]


def test_large_given_fit_uses_random_init_lloyd(monkeypatch):
    import ray_pipeline.analysis.clustering as clustering
    from sklearn.cluster import KMeans

    fits = []
    real_fit = KMeans.fit

    def spy(self, X, *args, **kwargs):
        fits.append((self.n_clusters, self.init, self.n_init, X.dtype))
        return real_fit(self, X, *args, **kwargs)

    monkeypatch.setattr(KMeans, "fit", spy)
    X, y = _blobs(5, n=100)
    cluster_and_pick(X, 2, 3, seed=1, clusters=5)
    assert fits == [(5, "k-means++", 10, np.float64)]  # 5 x 100 rows: the elbow's k-means
    monkeypatch.setattr(clustering, "LARGE_FIT", 400)
    fits.clear()
    result = cluster_and_pick(X, 2, 3, seed=1, clusters=5)
    assert fits == [(5, "random", 1, np.float32)]
    assert result.k == 5 and len(result.chosen) == 5 and result.k_from == "given"


def test_an_empty_cluster_gets_the_unchosen_row_nearest_its_centre():
    from ray_pipeline.analysis.clustering import _one_per_cluster

    X = np.array([[0.0], [5.0], [5.2], [9.0]])
    labels = np.array([0, 1, 1, 1])  # cluster 2 (centre 4.9) won no row
    centers = np.array([[0.0], [6.4], [4.9]])
    outcomes = {tuple(_one_per_cluster(X, labels, centers, np.random.default_rng(seed))) for seed in range(8)}
    # cluster 1 draws row 1, 2 or 3; the empty cluster then takes row 1 (5.0), or row 2 (5.2) when 1 is drawn
    assert outcomes == {(0, 1, 2), (0, 1, 3)}


def test_per_source_clusters_given_for_some_sources():
    A, ya = _blobs(4, n=60, seed=2)
    B, _ = _blobs(3, n=45, seed=3)
    X = np.vstack([A, B])
    sources = ["a"] * 60 + ["b"] * 45
    results = pick_per_source(X, sources, k_min=2, k_max=8, seed=7, clusters={"a": 12, "gone": 5})
    assert (results["a"].k, results["a"].k_from) == (12, "given")
    assert (results["b"].k, results["b"].k_from) == (3, "elbow")
    assert len(results["a"].chosen) == 12 and set(results["a"].chosen) <= set(range(60))
    assert set(ya[results["a"].chosen].tolist()) == {0, 1, 2, 3}
    # the elbow source's choice does not depend on the other's clusters
    assert pick_per_source(X, sources, 2, 8, seed=7)["b"].chosen == results["b"].chosen
    alone = pick_per_source(A, ["a"] * 60, 2, 8, seed=7, clusters={"a": 12})["a"]
    assert alone.chosen == results["a"].chosen
