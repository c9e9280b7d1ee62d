"""Seed collection: one seed per k-means cluster of instruction embeddings.

TaCIE (Yang et al. 2024, arXiv 2410.02795, seed collection) clusters the
embeddings of each seed source with k-means, chooses the number of clusters k
by the elbow method, and draws one seed at random from every cluster, so the
seeds cover the source's tasks without near-repeats.

For each k in ``[k_min, k_max]`` (capped below the number of seeds and at the
number of distinct embeddings) k-means (scikit-learn, ``n_init=10``) gives the
inertia W(k), the within-cluster sum of squared distances. The elbow is found
kneedle-style: both axes are scaled to [0, 1],

    x_i = (k_i - k_first) / (k_last - k_first),
    y_i = (W_i - min W) / (max W - min W),

and the elbow is the point farthest below the chord from the first to the last
point (the chord's normal is fixed, so the perpendicular distance is
proportional to ``chord(x_i) - y_i``). A curve with no point below its chord,
or with a single k, gives its first k. A source with at most ``k_min`` seeds
keeps every seed.

A source with a given number of clusters (``SeedSource.clusters``: the
paper's result was 3,000 seeds from Alpaca, ShareGPT and CodeAlpaca, 1,500 from
GSM8K and MATH, tacie.txt section 2.4) skips the elbow: it is clustered into
exactly that many clusters (capped at its number of distinct embeddings; a
source no larger than that keeps every seed) and one seed is drawn per cluster.
Small fits (k x rows up to :data:`LARGE_FIT`) use the elbow's k-means
(k-means++, ``n_init=10``). Larger ones use one Lloyd k-means from k random
rows (``init="random"``, ``n_init=1``, at most :data:`LARGE_MAX_ITER`
iterations) on float32: at k = 3,000 it is k-means++ seeding (about ten
candidate centres scored against every row, for each of the k centres), not
Lloyd's iterations, that is slow. Measured with ``benchmarks/cluster_speed.py``
on 2 shared cores, k = 3,000:

=====================================  ==========  ==========================
data                                   this fit    scikit-learn default KMeans
=====================================  ==========  ==========================
50,000 random 384-d unit vectors       3.9 s       121 s (k-means++, n_init=1)
26,525 MiniLM embeddings (../shared)   5.7 s       64 s, inertia 4.5% lower
=====================================  ==========  ==========================

(Wall times on an otherwise idle machine; 4 and 14 Lloyd iterations; under
other jobs' load the default took over 8 minutes.) MiniBatchKMeans takes about
as long as this fit (4.7 s against 3.9 s on the random vectors; 12.9 s against
15.4 s on the embeddings, both under load; 2 minutes with k-means++ seeding)
and leaves clusters empty (91 and 19 of 3,000), so it cannot give one seed for
each of exactly k clusters.
scikit-learn's Lloyd moves empty clusters to far rows while it iterates; a
cluster still empty at the end gets the unchosen row nearest its centre, so a
given k always yields k seeds.

Everything random (k-means initialisation, the draw in each cluster) derives
from the job seed and the source label, so a source's choice does not change
when other sources are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from ray_pipeline.core.determinism import derived_seed


# A point less than this (in normalised units) below the chord is on it: float rounding, not a bend.
_FLAT = 1e-9
#: given k: above this k x rows, one random-init Lloyd fit instead of k-means++ with n_init=10
LARGE_FIT = 1_000_000
#: given k: iteration cap of that large fit (it stops earlier when the centres stop moving)
LARGE_MAX_ITER = 100

KFrom = Literal["elbow", "given", "all"]


@dataclass
class ClusterResult:
    """k chosen, cluster label of each row, W(k) per k tried, rows chosen (ascending).

    ``k_from`` says where k came from: ``"elbow"`` (the elbow over k_min..k_max),
    ``"given"`` (``SeedSource.clusters``, capped at the distinct rows), or ``"all"``
    (the source is no larger than k_min, or than its given count: every row kept, no clustering).
    """

    k: int
    labels: np.ndarray
    inertias: dict[int, float]
    chosen: list[int]
    k_from: KFrom = "elbow"


def elbow_k(ks: Sequence[int], inertias: Sequence[float]) -> int:
    """The k at the elbow of a decreasing (k, inertia) curve (see the module docstring)."""
    if len(ks) != len(inertias) or not ks:
        raise ValueError("elbow_k needs one inertia per k, at least one k")
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertias, dtype=np.float64)
    if len(ks) < 3 or y.max() == y.min():
        return int(ks[0])
    x = (x - x[0]) / (x[-1] - x[0])
    y = (y - y.min()) / (y.max() - y.min())
    chord = y[0] + (y[-1] - y[0]) * x
    below = chord - y
    best = int(np.argmax(below))
    return int(ks[best]) if below[best] > _FLAT else int(ks[0])


def cluster_and_pick(X: np.ndarray, k_min: int, k_max: int, seed: int, clusters: int | None = None) -> ClusterResult:
    """Cluster the rows of ``X`` and draw one row per cluster.

    k is ``clusters`` when given (capped at the distinct rows; no elbow), else the elbow's over ``k_min..k_max``.
    """
    from sklearn.cluster import KMeans

    if clusters is not None:
        return _cluster_given(X, clusters, seed)
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n <= k_min:
        return ClusterResult(k=n, labels=np.arange(n), inertias={}, chosen=list(range(n)), k_from="all")
    seed %= 2**32  # scikit-learn and numpy take seeds in [0, 2**32)
    distinct = len(np.unique(X, axis=0))
    k_hi = min(k_max, n - 1, distinct)
    ks = list(range(min(k_min, k_hi), k_hi + 1))
    fits = {k: KMeans(n_clusters=k, n_init=10, random_state=seed).fit(X) for k in ks}
    inertias = {k: float(fit.inertia_) for k, fit in fits.items()}
    k = elbow_k(ks, [inertias[k] for k in ks])
    labels = fits[k].labels_.astype(np.int64)
    chosen = _one_per_cluster(X, labels, fits[k].cluster_centers_, np.random.default_rng(seed))
    return ClusterResult(k=k, labels=labels, inertias=inertias, chosen=chosen)


def _cluster_given(X: np.ndarray, clusters: int, seed: int) -> ClusterResult:
    """k-means with k = ``clusters`` (capped at the distinct rows), one row drawn per cluster."""
    from sklearn.cluster import KMeans

    if clusters <= 0:
        raise ValueError(f"clusters must be positive, got {clusters}")
    n = len(X)
    if n <= clusters:
        return ClusterResult(k=n, labels=np.arange(n), inertias={}, chosen=list(range(n)), k_from="all")
    seed %= 2**32
    large = clusters * n > LARGE_FIT
    X = np.asarray(X, dtype=np.float32 if large else np.float64)
    k = min(clusters, len(np.unique(X, axis=0)))
    if large:
        fit = KMeans(n_clusters=k, init="random", n_init=1, max_iter=LARGE_MAX_ITER, random_state=seed).fit(X)
    else:
        fit = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(X)
    labels = fit.labels_.astype(np.int64)
    chosen = _one_per_cluster(X, labels, fit.cluster_centers_, np.random.default_rng(seed))
    return ClusterResult(k=k, labels=labels, inertias={k: float(fit.inertia_)}, chosen=chosen, k_from="given")


def _one_per_cluster(X: np.ndarray, labels: np.ndarray, centers: np.ndarray, rng: np.random.Generator) -> list[int]:
    """One row drawn at random from each cluster (ascending).

    An empty cluster gets the unchosen row nearest its centre.
    """
    k = len(centers)
    order = np.argsort(labels, kind="stable")  # rows of each cluster, ascending
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    chosen: list[int] = []
    empty: list[int] = []
    for c in range(k):
        members = order[bounds[c]:bounds[c + 1]]
        if len(members):
            chosen.append(int(rng.choice(members)))
        else:
            empty.append(c)
    if empty:
        taken = np.zeros(len(X), dtype=bool)
        taken[chosen] = True
        for c in empty:
            distance = ((X - centers[c]) ** 2).sum(axis=1)
            distance[taken] = np.inf
            row = int(np.argmin(distance))
            taken[row] = True
            chosen.append(row)
    return sorted(chosen)


def source_seed(seed: int, source: str) -> int:
    """A per-source random seed derived from the job seed (stable across processes)."""
    return derived_seed(seed, source)


def pick_per_source(
    X: np.ndarray,
    sources: Sequence[str],
    k_min: int,
    k_max: int,
    seed: int,
    clusters: Mapping[str, int] | None = None,
) -> dict[str, ClusterResult]:
    """:func:`cluster_and_pick` on each source's rows, in order of first appearance.

    ``clusters`` maps a source label to its number of clusters (``SeedSource.clusters``); a source not in it
    (or mapped to None) gets the elbow over ``k_min..k_max``; a label without rows (every seed of that source a
    duplicate of an earlier source's) is ignored. Each result's ``k_from`` says which.
    ``labels`` are aligned with that source's rows in table order; ``chosen``
    holds global row indices into ``X``.
    """
    if len(sources) != len(X):
        raise ValueError(f"{len(sources)} source labels for {len(X)} embeddings")
    clusters = dict(clusters or {})
    labels = np.asarray(sources, dtype=object)
    results: dict[str, ClusterResult] = {}
    for source in dict.fromkeys(sources):
        rows = np.flatnonzero(labels == source)
        result = cluster_and_pick(
            np.asarray(X)[rows], k_min, k_max, source_seed(seed, source), clusters=clusters.get(source)
        )
        result.chosen = [int(rows[i]) for i in result.chosen]
        results[source] = result
    return results
