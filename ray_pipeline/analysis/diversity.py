"""Diversity of an instruction pool: the variance of nearest-neighbour distances.

Both papers measure how uniformly a set of instructions covers the embedding
space with the same statistic (TaCIE, tacie.txt appendix A.1, eq. 8-10; it
cites Instruction Fusion, instruction-fusion.txt section 3):

    U = 1/N sum_i (d_i - mu)^2       (eq. 8)
    d_i = || e_i - e_i^NN ||          (eq. 9, Euclidean, to the nearest other instruction)
    mu = 1/N sum_i d_i                (eq. 10)

Lower U is a more uniform spread. The embeddings are all-MiniLM-L6-v2
(:mod:`ray_pipeline.analysis.embeddings`), unit vectors, so the nearest neighbour by
Euclidean distance is the most cosine-similar one and ``d = sqrt(2 (1 - cos))``.
``metric="cosine"`` gives ``d = 1 - cos`` instead (this project's figures before
the paper's distance was restored; not comparable with the papers' 0.0316 /
0.0431).

Nearest neighbours are found by exact search in chunks of rows, so a pool of
100k x 384 never builds an n x n matrix at once.
"""

from __future__ import annotations

import numpy as np

# Similarity entries computed at once (2**24 float32 = 64 MiB).
CHUNK_ELEMENTS = 1 << 24


def unit_rows(X: np.ndarray) -> np.ndarray:
    """``X`` as floats with every non-zero row scaled to unit L2 norm (float32 stays float32)."""
    X = np.asarray(X)
    X = X.astype(np.result_type(X.dtype, np.float32), copy=False)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {X.shape}")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1)


def nearest(X: np.ndarray, Y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of each row of ``X`` to its most similar row, and that row's index.

    Without ``Y`` the neighbour is another row of ``X`` (never the row itself);
    with ``Y`` it is a row of ``Y``. A row with no candidate gets similarity
    ``-inf`` and index ``-1``. Ties go to the lowest index.
    """
    X = unit_rows(X)
    R = X if Y is None else unit_rows(Y)
    if R.shape[1] != X.shape[1]:
        raise ValueError(f"dimension mismatch: {X.shape[1]} vs {R.shape[1]}")
    n, m = len(X), len(R)
    best = np.full(n, -np.inf, dtype=X.dtype)
    index = np.full(n, -1, dtype=np.int64)
    if m == 0:
        return best, index
    step = max(1, CHUNK_ELEMENTS // m)
    for start in range(0, n, step):
        sims = X[start:start + step] @ R.T
        if Y is None:
            rows = np.arange(len(sims))
            sims[rows, start + rows] = -np.inf
        arg = sims.argmax(axis=1)
        index[start:start + step] = arg
        best[start:start + step] = sims[np.arange(len(sims)), arg]
    index[best == -np.inf] = -1
    return best, index


def _nearest_euclidean(X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance from each row of ``X`` to its nearest other row of ``X`` (or row of ``Y``)."""
    X = np.asarray(X, dtype=np.float64)
    R = X if Y is None else np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or R.ndim != 2:
        raise ValueError(f"expected 2-d arrays of embeddings, got shapes {X.shape} and {R.shape}")
    if R.shape[1] != X.shape[1]:
        raise ValueError(f"dimension mismatch: {X.shape[1]} vs {R.shape[1]}")
    n, m = len(X), len(R)
    best = np.full(n, np.inf)
    if m == 0:
        return best
    sq_x, sq_r = (X * X).sum(axis=1), (R * R).sum(axis=1)
    step = max(1, CHUNK_ELEMENTS // m)
    for start in range(0, n, step):
        d2 = sq_x[start:start + step, None] + sq_r[None, :] - 2.0 * (X[start:start + step] @ R.T)
        if Y is None:
            rows = np.arange(len(d2))
            d2[rows, start + rows] = np.inf
        best[start:start + step] = d2.min(axis=1)
    return np.sqrt(np.maximum(best, 0.0))


def nn_distances(X: np.ndarray, Y: np.ndarray | None = None, metric: str = "euclidean") -> np.ndarray:
    """Distance from each row of ``X`` to its nearest other row of ``X`` (or its nearest row of
    ``Y``): Euclidean (eq. 9), or ``1 - cos`` with ``metric="cosine"``; ``nan`` for a row with no
    candidate."""
    if metric == "euclidean":
        distances = _nearest_euclidean(X, Y)
    elif metric == "cosine":
        sims, _ = nearest(X, Y)
        distances = np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0)
        distances[np.isinf(sims)] = np.inf
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    distances[np.isinf(distances)] = np.nan
    return distances


def diversity_u(X: np.ndarray, metric: str = "euclidean") -> float:
    """U of eq. 8-10: the population variance of the nearest-neighbour distances within ``X``
    (Euclidean by default, as both papers); ``nan`` for fewer than two rows."""
    if len(X) < 2:
        return float("nan")
    return float(np.var(nn_distances(X, metric=metric)))


def most_dissimilar(anchor: np.ndarray, X: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` rows of ``X`` chosen greedily to be unlike ``anchor`` and each other.

    Farthest-point selection by cosine similarity: each step takes the row
    whose highest similarity to the anchor and the rows taken so far is
    lowest (ties: the lowest index). TaCIE's diversification (Appendix B.2)
    asks the teacher for ten new instructions per seed and keeps three; this
    is how the three are chosen. The indices come back in ``X``'s order.
    """
    X = unit_rows(X)
    if k >= len(X):
        return list(range(len(X)))
    if k <= 0:
        return []
    closest = (X @ unit_rows(np.asarray(anchor)[None, :])[0]).astype(np.float64)
    taken: list[int] = []
    for _ in range(k):
        masked = closest.copy()
        masked[taken] = np.inf
        i = int(np.argmin(masked))
        taken.append(i)
        closest = np.maximum(closest, (X @ X[i]).astype(np.float64))
    return sorted(taken)
