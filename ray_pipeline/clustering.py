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

Everything random (k-means initialisation, the draw in each cluster) derives
from the job seed and the source label, so a source's choice does not change
when other sources are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ray_pipeline.determinism import derived_seed


# A point less than this (in normalised units) below the chord is on it: float rounding, not a bend.
_FLAT = 1e-9


@dataclass
class ClusterResult:
    """k chosen, cluster label of each row, W(k) per k tried, rows chosen (ascending)."""

    k: int
    labels: np.ndarray
    inertias: dict[int, float]
    chosen: list[int]


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


def cluster_and_pick(X: np.ndarray, k_min: int, k_max: int, seed: int) -> ClusterResult:
    """Cluster the rows of ``X`` with the elbow's k and draw one row per cluster."""
    from sklearn.cluster import KMeans

    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n <= k_min:
        return ClusterResult(k=n, labels=np.arange(n), inertias={}, chosen=list(range(n)))
    seed %= 2**32  # scikit-learn and numpy take seeds in [0, 2**32)
    distinct = len(np.unique(X, axis=0))
    k_hi = min(k_max, n - 1, distinct)
    ks = list(range(min(k_min, k_hi), k_hi + 1))
    fits = {k: KMeans(n_clusters=k, n_init=10, random_state=seed).fit(X) for k in ks}
    inertias = {k: float(fit.inertia_) for k, fit in fits.items()}
    k = elbow_k(ks, [inertias[k] for k in ks])
    labels = fits[k].labels_.astype(np.int64)
    rng = np.random.default_rng(seed)
    chosen = sorted(int(rng.choice(np.flatnonzero(labels == c))) for c in range(k))
    return ClusterResult(k=k, labels=labels, inertias=inertias, chosen=chosen)


def source_seed(seed: int, source: str) -> int:
    """A per-source random seed derived from the job seed (stable across processes)."""
    return derived_seed(seed, source)


def pick_per_source(
    X: np.ndarray, sources: Sequence[str], k_min: int, k_max: int, seed: int
) -> dict[str, ClusterResult]:
    """:func:`cluster_and_pick` on each source's rows, in order of first appearance.

    ``labels`` are aligned with that source's rows in table order; ``chosen``
    holds global row indices into ``X``.
    """
    if len(sources) != len(X):
        raise ValueError(f"{len(sources)} source labels for {len(X)} embeddings")
    labels = np.asarray(sources, dtype=object)
    results: dict[str, ClusterResult] = {}
    for source in dict.fromkeys(sources):
        rows = np.flatnonzero(labels == source)
        result = cluster_and_pick(np.asarray(X)[rows], k_min, k_max, source_seed(seed, source))
        result.chosen = [int(rows[i]) for i in result.chosen]
        results[source] = result
    return results
