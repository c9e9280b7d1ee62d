"""The ``eval`` job as the CLI sees it (``ray_pipeline.jobs``): run (sharded or whole), full validation,
summary lines."""

from __future__ import annotations

from typing import Any


def run(job: Any, address: str | None = None, force: bool = False, shard: Any = None) -> dict[str, Any]:
    from ray_pipeline.evaluation.pipeline import run_evaluation

    return run_evaluation(job, address=address, force=force, shard=shard)


def validate(job: Any) -> dict[str, Any]:
    """The preflight's findings: tasks per suite, suites skipped here and why, samples, prompt modes."""
    from ray_pipeline.evaluation.pipeline import preflight

    suites, skipped = preflight(job)
    return {
        "job": job.name, "kind": job.kind, "models": [m.label for m in job.models],
        "suites": {s.name: {"tasks": len(s.problems), **({"skipped": skipped[s.name]} if s.name in skipped else {})}
                   for s in suites},
        "samples_per_model": job.sampling.n * sum(len(s.problems) for s in suites if s.name not in skipped),
        "prompt_modes": {m.label: job.prompt_modes(m) for m in job.models},
    }


def summary(manifest: dict[str, Any], run_dir: Any) -> int:
    """Print pass@k per model and benchmark, then the run's line; the exit code."""
    table = manifest["summary"]
    k = table["k"][0]
    for label, cells in table["models"].items():
        parts = []
        for col in table["columns"]:
            cell = cells.get(col["key"], {})
            value = cell.get(f"pass@{k}")
            parts.append(f"{col['title']} {'skipped' if 'skipped' in cell else '-' if value is None else f'{100 * value:.1f}'}")
        gen = manifest["generation"][label]
        errors = f", {gen['errors']} generation errors" if gen["errors"] else ""
        print(f"{label}: pass@{k} " + ", ".join(parts) + f" ({gen['samples']} samples{errors})")
    shard = manifest.get("shard")
    part = f" (shard {shard['index']}/{shard['count']})" if shard else ""
    print(f"{manifest['job']}{part}: {manifest['wall_time_s']:.1f}s -> {run_dir}/summary.md")
    return 0
