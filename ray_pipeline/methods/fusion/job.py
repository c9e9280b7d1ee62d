"""The ``instruction_fusion`` job as the CLI sees it (``ray_pipeline.jobs``): run, full validation, summary line.

Imports the pipeline only inside ``run``, so ``fusion validate`` reads templates and seeds without it.
"""

from __future__ import annotations

import sys
from typing import Any

from ray_pipeline.core.errors import EXIT_INCOMPLETE


def run(job: Any, address: str | None = None, force: bool = False, shard: Any = None) -> dict[str, Any]:
    from ray_pipeline.methods.fusion.pipeline import run_instruction_fusion

    return run_instruction_fusion(job, address=address, force=force)


def validate(job: Any) -> dict[str, Any]:
    """The seeds and templates the run would use, and what its calls will cost (``fusion validate``, every input
    here)."""
    from ray_pipeline.core.seeds import load_seeds
    from ray_pipeline.methods.fusion.estimate import fusion_estimate
    from ray_pipeline.prompts import load_template, not_from_papers

    templates = {"fusion": load_template(job.fusion.template), "response": load_template(job.response.template)}
    pool = load_seeds(job.seeds, job.seed)
    return {
        "job": job.name, "kind": job.kind, "seeds": pool.summary(),
        "templates": {k: t.ref for k, t in templates.items()}, "templates_not_from_papers": not_from_papers(templates),
        "estimate": fusion_estimate(job, pool.records).to_dict(),
    }


def references(job: Any, refs: Any) -> None:
    """The inputs from outside the job: seed sources, the teacher, the embedding model of the diversity report."""
    from ray_pipeline.analysis.embeddings import BUNDLED_ALIASES

    for i, src in enumerate(job.seeds):
        refs.rows(f"seeds[{i}]", src)
    refs.teacher("teacher", job.teacher)
    if job.diversity:
        refs.model("embedding.model", job.embedding.model, job.embedding.model in BUNDLED_ALIASES, "embedding model")


def partial_validation(job: Any, refs: Any) -> dict[str, Any]:
    """The seed sources that are here, and the estimate over them (``fusion validate`` when some input is not)."""
    from ray_pipeline.core.references import seeds_here
    from ray_pipeline.core.seeds import load_seeds
    from ray_pipeline.methods.fusion.estimate import fusion_estimate

    here = seeds_here(job, refs)
    pool = load_seeds(here, job.seed) if here else None
    notes = () if len(here) in (0, len(job.seeds)) else \
        (f"tokens from the seed sources here only ({len(here)} of {len(job.seeds)})",)
    return {"seeds": pool.summary() if pool else None,
            "estimate": fusion_estimate(job, pool.records if pool else None, notes).to_dict()}


def summary(manifest: dict[str, Any], run_dir: Any) -> int:
    """Print the run's line (and why it stopped short, on stderr); the exit code."""
    counts = manifest["counts"]
    fusion = counts["fusion"]
    print(
        f"{manifest['job']}: {counts['sft_rows']} SFT rows from {counts['fused']}/{manifest['target']} fused "
        f"instructions in {counts['attempts']} attempts (invalid {fusion['invalid']}, parse_error "
        f"{fusion['parse_error']}, api_error {fusion['api_error']}); {manifest['tokens']['prompt']}+"
        f"{manifest['tokens']['completion']} tokens, ${manifest['cost_usd']:.4f}, "
        f"{manifest['wall_time_s']:.1f}s -> {run_dir}"
    )
    if not manifest["complete"]:
        why = {"budget": "the attempt budget was spent", "pairs_exhausted": "every allowed seed pair was used"}
        print(
            f"fusion: incomplete: {why.get(manifest['stop_reason'], manifest['stop_reason'])}; "
            f"raise fusion.max_attempts or add seeds and run again to resume",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0
