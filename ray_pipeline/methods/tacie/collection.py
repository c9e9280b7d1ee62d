"""Round 0 of TaCIE, seed collection (tacie.txt section 2.2): which seeds start the pool, and their root domains.

Per seed source, k-means with k from the elbow method (or the source's ``clusters``) and one seed per
cluster (``analysis.clustering.pick_per_source``); each source's declared ``domain`` is the root domain
of its seeds and of everything evolved from them (Algorithm 1's in- / cross-domain, eq. 7's n_root).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np

from ray_pipeline.analysis.clustering import pick_per_source
from ray_pipeline.methods.tacie.config import TaCIEJob
from ray_pipeline.core.seeds import SeedPool
from ray_pipeline.methods.tacie.items import TaCIEItem

log = logging.getLogger(__name__)


def choose_seeds(job: TaCIEJob, seeds: list[dict[str, str]], X: np.ndarray) -> tuple[list[int], dict[str, Any]]:
    """Indices of the seeds that start the pool (one per cluster per source, or all), and the manifest's record."""
    if job.collection.cluster:
        clusters = {src.label: src.clusters for src in job.seeds if src.clusters is not None}
        results = pick_per_source(X, [s["source"] for s in seeds], job.collection.k_min, job.collection.k_max, job.seed,
                                  clusters=clusters)
        chosen = sorted(i for r in results.values() for i in r.chosen)
        record: dict[str, Any] = {
            src: {"seeds": int(np.sum([s["source"] == src for s in seeds])), "k": int(r.k), "k_from": r.k_from,
                  "chosen": len(r.chosen), "inertias": {str(k): float(v) for k, v in r.inertias.items()}}
            for src, r in results.items()
        }
    else:
        chosen = list(range(len(seeds)))
        record = {"cluster": False, "chosen": len(chosen)}
    log.info("seed collection: %d of %d seeds chosen (%s)", len(chosen), len(seeds), record)
    return chosen, record


def root_domains(job: TaCIEJob, pool: SeedPool, seeds: list[dict[str, str]]) -> dict[str, str]:
    """The root domain of each seed source, which every item descended from its seeds inherits from its first parent.

    The paper's root domains are the sources' domains (Alpaca and ShareGPT general, GSM8K and MATH math,
    CodeAlpaca code): a source's declared ``domain``. A source left at ``auto`` takes the domain most of its
    rows were detected as, with a warning. ``evolution.root_domain: source`` uses the source label instead,
    as the authors' code does.
    """
    if job.evolution.root_domain == "source":
        return {s["source"]: s["source"] for s in seeds}
    declared = pool.source_domains
    detected: dict[str, Counter] = {}
    for s in seeds:
        detected.setdefault(s["source"], Counter())[s["domain"]] += 1
    roots = {}
    for label, counts in detected.items():
        domain = declared.get(label, "auto")
        if domain == "auto":
            domain = counts.most_common(1)[0][0]
            log.warning("seed source %s declares no domain: its root domain is %s, the domain most of its rows "
                        "were detected as (%s); set `domain:` on the source to choose", label, domain, dict(counts))
        roots[label] = domain
    return roots


def seed_items(seeds: list[dict[str, str]], texts: list[str], X: np.ndarray, chosen: list[int],
               roots: dict[str, str]) -> list[TaCIEItem]:
    """The chosen seeds as round-0 items (already embedded)."""
    return [
        TaCIEItem(
            id=seeds[i]["id"], round=0, operation="seed", source=seeds[i]["source"], domain=seeds[i]["domain"],
            root_domain=roots[seeds[i]["source"]], language=seeds[i]["language"], instruction=texts[i], embedding=X[i],
        )
        for i in chosen
    ]


__all__ = ["choose_seeds", "root_domains", "seed_items"]
