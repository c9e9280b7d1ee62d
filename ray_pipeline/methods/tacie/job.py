"""The ``tacie`` job as the CLI sees it (``ray_pipeline.jobs``): run, full validation, summary line."""

from __future__ import annotations

import sys
from typing import Any

from ray_pipeline.core.errors import EXIT_INCOMPLETE


def run(job: Any, address: str | None = None, force: bool = False, shard: Any = None) -> dict[str, Any]:
    from ray_pipeline.methods.tacie.pipeline import run_tacie

    return run_tacie(job, address=address, force=force)


def validate(job: Any) -> dict[str, Any]:
    """The preflight's findings: seeds, templates, benchmark prompts, scorer model, and what the teacher calls will
    cost (``fusion validate``)."""
    from ray_pipeline.methods.tacie.estimate import tacie_estimate
    from ray_pipeline.methods.tacie.pipeline import preflight
    from ray_pipeline.prompts import not_from_papers

    checked = preflight(job)
    estimate = tacie_estimate(job, checked.templates, checked.pool.records)
    return {
        "job": job.name, "kind": job.kind, "seeds": checked.pool.summary(),
        "templates": {k: t.ref for k, t in checked.templates.items()},
        "templates_not_from_papers": not_from_papers(checked.templates),
        "decontaminate": checked.benchmark_prompts, "scorer_model": checked.scorer_model,
        "estimate": estimate.to_dict() if estimate else None,
    }


def references(job: Any, refs: Any) -> None:
    """The inputs from outside the job: seeds, teacher, embedding and scorer models, decontamination benchmarks."""
    from ray_pipeline.analysis.embeddings import BUNDLED_ALIASES
    from ray_pipeline.core.benchmark_data import locate
    from ray_pipeline.core.references import LOCAL

    for i, src in enumerate(job.seeds):
        refs.rows(f"seeds[{i}]", src)
    refs.teacher("teacher", job.teacher)
    refs.model("embedding.model", job.embedding.model, job.embedding.model in BUNDLED_ALIASES, "embedding model")
    refs.model("scorer.model", job.scorer.model or "embedded", job.scorer.model in (None, "embedded"),
               note=f"{job.scorer.backend} backend")
    for i, bench in enumerate(job.filters.decontaminate):
        where = f"filters.decontaminate[{i}]"
        found = locate(bench.name)  # a named benchmark's variable or hub dataset
        if bench.path:
            refs.add(f"{where}.path", "file", bench.path, LOCAL)
        elif bench.hf:
            refs.hub(f"{where}.hf", bench.hf, "dataset", True, f"split {bench.split}")
        elif found is not None and found.path is not None:
            refs.add(where, "file", found.path, LOCAL, f"${found.env}")
        elif found is not None and found.hub:
            refs.hub(where, found.hub, "dataset", True,
                     f"{bench.name} prompts" + (f", config {found.config}" if found.config else ""))


def partial_validation(job: Any, refs: Any) -> dict[str, Any]:
    """The seed sources and benchmark prompts that are here, and the estimate over those seeds (``fusion validate``
    when some input is not)."""
    from ray_pipeline.core.references import seeds_here
    from ray_pipeline.core.seeds import load_seeds
    from ray_pipeline.methods.tacie.estimate import tacie_estimate
    from ray_pipeline.methods.tacie.filters import load_benchmark_prompts
    from ray_pipeline.methods.tacie.preflight import job_templates

    here = seeds_here(job, refs)
    pool = load_seeds(here, job.seed) if here else None
    notes = () if len(here) in (0, len(job.seeds)) else \
        (f"the seed sources here only ({len(here)} of {len(job.seeds)}): the pool, and every amount, is larger",)
    estimate = tacie_estimate(job, job_templates(job), pool.records if pool else None, notes)
    return {
        "seeds": pool.summary() if pool else None,
        "estimate": estimate.to_dict() if estimate else None,
        "decontaminate": {b.name: len(load_benchmark_prompts(b)) for i, b in enumerate(job.filters.decontaminate)
                          if refs.here(f"filters.decontaminate[{i}]", ("hf",))},
    }


def summary(manifest: dict[str, Any], run_dir: Any) -> int:
    """Print the run's line (and, when no instruction was left to evolve, why, on stderr); the exit code."""
    counts, div = manifest["counts"], manifest["diversity"]

    def fmt(u: Any) -> str:
        return "n/a" if u is None else f"{u:.5f}"

    print(
        f"{manifest['job']}: {counts['kept']} SFT rows kept of {counts['answered']} answered items "
        f"({', '.join(f'{k} {v}' for k, v in counts['by_operation'].items())}) after "
        f"{manifest['rounds_completed']}/{manifest['rounds_requested']} rounds; diversity U seeds {fmt(div['seeds'])}, "
        f"evolved {fmt(div['evolved'])}; {manifest['tokens']['prompt']}+{manifest['tokens']['completion']} tokens, "
        f"${manifest['cost_usd']:.4f}, {manifest['wall_time_s']:.1f}s -> {run_dir} "
        f"(fusion report {run_dir} for the HTML report)"
    )
    if not manifest["complete"]:
        failures = "; ".join(
            f"{op} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for op, c in counts["attempts"].items()
        )
        print(
            f"fusion: incomplete: no instruction was left to evolve after round {manifest['rounds_completed']} "
            f"({failures}); see attempts.parquet for the teacher's answers",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0
