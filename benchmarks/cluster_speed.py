"""k-means with a given k (TaCIE's 3,000 seeds per source) on this machine: is it fast enough?

TaCIE keeps 3,000 / 1,500 seeds per source after clustering (tacie.txt section
2.4), so ``SeedSource.clusters`` asks for k = 3,000 clusters of tens of
thousands of 384-d MiniLM embeddings. This times, each in its own process with
a time budget (a fit that runs past it is reported as not finished):

* ``project``: ``clustering.cluster_and_pick(X, ..., clusters=k)``, what a run does
  (random-init Lloyd above ``clustering.LARGE_FIT``), including the draw of one row per cluster;
* ``lloyd``: the fit inside ``project`` alone, ``KMeans(k, init="random", n_init=1)`` (prints its iterations);
* ``kmeans++``: scikit-learn ``KMeans(k, n_init=1)`` with its default k-means++ seeding;
* ``minibatch``: ``MiniBatchKMeans(k, init="random", batch_size=4096, n_init=1)``;
* ``minibatch++``: the same with k-means++ seeding (over its 3k-row init sample).

For each it prints wall and CPU seconds, Lloyd iterations or mini-batch steps,
the inertia and how many of the k clusters ended empty (an empty cluster has no
row to keep). The data is ``--n`` random unit vectors (no structure: the slow
case for Lloyd) or, with ``--shared``, the MiniLM embeddings of the seed pools
in ``../shared/data/seeds`` (cached in ``--cache``).

    python benchmarks/cluster_speed.py --n 50000 --k 3000
    python benchmarks/cluster_speed.py --shared --k 3000 --methods project
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_SEEDS = REPO.parent / "shared" / "data" / "seeds"
SHARED_FILES = ("alpaca/alpaca_5000.json", "gsm8k/train.jsonl", "math/train.jsonl",
                "codealpaca/new_codealpaca.json", "codealpaca/code_alpaca_2k.json")
METHODS = ("project", "lloyd", "kmeans++", "minibatch", "minibatch++")


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def shared_embeddings(cache: Path) -> np.ndarray:
    """MiniLM embeddings of every seed in ../shared's pools (de-duplicated by the seed reader)."""
    if cache.is_file():
        return np.load(cache)
    from ray_pipeline.core.config import EmbeddingConfig, SeedSource
    from ray_pipeline.analysis.embeddings import embed_texts
    from ray_pipeline.core.seeds import load_seeds

    missing = [f for f in SHARED_FILES if not (SHARED_SEEDS / f).is_file()]
    if missing:
        sys.exit(f"--shared needs ../shared: {SHARED_SEEDS / missing[0]} not found")
    pool = load_seeds([SeedSource(path=str(SHARED_SEEDS / f)) for f in SHARED_FILES])
    t0 = time.perf_counter()
    X = embed_texts([r["instruction"] for r in pool.records], EmbeddingConfig()).astype(np.float32)
    print(f"embedded {len(X)} seeds in {time.perf_counter() - t0:.0f} s (cached in {cache})", flush=True)
    np.save(cache, X)
    return X


def _fit(method: str, X: np.ndarray, k: int, seed: int, queue: mp.Queue) -> None:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from ray_pipeline.analysis.clustering import LARGE_MAX_ITER, cluster_and_pick

    wall, cpu = time.perf_counter(), time.process_time()
    if method == "project":
        result = cluster_and_pick(X, 2, 2, seed, clusters=k)
        steps, inertia = "-", next(iter(result.inertias.values()), float("nan"))
        empty = k - len(np.unique(result.labels))
        extra = f"seeds kept {len(result.chosen)}"
    else:
        if method in ("kmeans++", "lloyd"):
            init = "k-means++" if method == "kmeans++" else "random"
            fit = KMeans(n_clusters=k, init=init, n_init=1, max_iter=LARGE_MAX_ITER, random_state=seed).fit(X)
            steps = f"{fit.n_iter_} iterations"
        else:
            init = "random" if method == "minibatch" else "k-means++"
            fit = MiniBatchKMeans(n_clusters=k, init=init, n_init=1, batch_size=4096, random_state=seed).fit(X)
            steps = f"{fit.n_steps_} steps"
        inertia, empty, extra = fit.inertia_, k - len(np.unique(fit.labels_)), ""
    queue.put((time.perf_counter() - wall, time.process_time() - cpu, steps, float(inertia), empty, extra))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="random unit vectors (ignored with --shared)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", action="store_true", help="MiniLM embeddings of ../shared's seed pools")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cluster_speed_shared.npy"))
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--budget-s", type=float, default=600.0, help="wall-clock budget per method")
    args = parser.parse_args()

    X = shared_embeddings(args.cache) if args.shared else random_unit(args.n, args.dim, args.seed)
    print(f"data: {'shared seed embeddings' if args.shared else 'random unit vectors'}, {X.shape[0]} x {X.shape[1]}, "
          f"k = {args.k}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    ctx = mp.get_context("spawn")  # a fork after torch (the embedding) started its threads can hang in OpenMP
    for method in args.methods.split(","):
        if method not in METHODS:
            sys.exit(f"unknown method {method!r} (known: {', '.join(METHODS)})")
        queue = ctx.Queue()
        child = ctx.Process(target=_fit, args=(method, X, args.k, args.seed, queue))
        child.start()
        child.join(args.budget_s)
        if child.is_alive():
            child.kill()
            child.join()
            print(f"{method:12s} did not finish in {args.budget_s:.0f} s", flush=True)
            continue
        if queue.empty():
            print(f"{method:12s} failed (exit status {child.exitcode})", flush=True)
            continue
        wall, cpu, steps, inertia, empty, extra = queue.get()
        print(f"{method:12s} wall {wall:7.1f} s  cpu {cpu:7.1f} s  {steps:>16s}  inertia {inertia:10.1f}  "
              f"empty clusters {empty:4d}  {extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
