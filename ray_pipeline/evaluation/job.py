"""The ``eval`` job as the CLI sees it (``ray_pipeline.jobs``): run (sharded or whole), full validation,
summary lines."""

from __future__ import annotations

from typing import Any


def run(job: Any, address: str | None = None, force: bool = False, shard: Any = None) -> dict[str, Any]:
    from ray_pipeline.evaluation.pipeline import run_evaluation

    return run_evaluation(job, address=address, force=force, shard=shard)


def validate(job: Any) -> dict[str, Any]:
    """The preflight's findings: tasks per suite, suites skipped here and why, samples, prompt modes, and what the
    model and judge calls will cost."""
    from ray_pipeline.evaluation.estimate import eval_estimate
    from ray_pipeline.evaluation.pipeline import preflight

    suites, skipped = preflight(job)
    problems = [p for s in suites if s.name not in skipped for p in s.problems]
    return {
        "job": job.name, "kind": job.kind, "models": [m.label for m in job.models],
        "suites": {s.name: {"tasks": len(s.problems), **({"skipped": skipped[s.name]} if s.name in skipped else {})}
                   for s in suites},
        "samples_per_model": job.sampling.n * sum(len(s.problems) for s in suites if s.name not in skipped),
        "prompt_modes": {m.label: job.prompt_modes(m) for m in job.models},
        "estimate": eval_estimate(job, problems).to_dict(),
    }


def references(job: Any, refs: Any) -> None:
    """The inputs from outside the job: each model's backend, each benchmark's data."""
    import os

    from ray_pipeline.core.benchmark_data import NAMED_BENCHMARKS
    from ray_pipeline.core.references import CACHED, LOCAL, NOT_CHECKED
    from ray_pipeline.evaluation.config import TEXT_BENCHMARKS
    from ray_pipeline.evaluation.evalplus_data import evalplus_cached

    for i, model in enumerate(job.models):
        refs.teacher(f"models[{i}].backend", model.backend)
    for i, bench in enumerate(job.benchmarks):
        where = f"benchmarks[{i}]"
        env = NAMED_BENCHMARKS[bench.name].env
        if bench.path:
            refs.add(f"{where}.path", "file", bench.path, LOCAL)
        elif env and os.environ.get(env):
            refs.add(where, "file", os.environ[env], LOCAL, f"${env}")
        elif bench.name == "multiple":
            refs.hub(where, NAMED_BENCHMARKS["multiple"].hub, "dataset", True, "MultiPL-E prompts")
        elif bench.name in TEXT_BENCHMARKS:
            named = NAMED_BENCHMARKS[bench.name]
            config = f"config {named.hub_config}, " if named.hub_config else ""
            refs.hub(where, named.hub, "dataset", True, f"{bench.name}: {config}split {named.split}")
        elif evalplus_cached(bench.name):
            refs.add(where, "benchmark data", f"evalplus {bench.name}", CACHED, "in evalplus's cache")
        else:
            refs.add(where, "benchmark data", f"evalplus {bench.name} release", NOT_CHECKED,
                     f"downloaded at run time; or set {env}", needed=True)
        if bench.references:
            refs.add(f"{where}.references", "file", bench.references, LOCAL)
        if bench.name == "mt_bench":
            refs.teacher(f"{where}.judge", bench.judge_config())


def partial_validation(job: Any, refs: Any) -> dict[str, Any]:
    """The benchmarks that are here, and the estimate over them (``fusion validate`` when some input is not)."""
    from ray_pipeline.evaluation.benchmarks import load_suites
    from ray_pipeline.evaluation.estimate import eval_estimate

    here = [b for i, b in enumerate(job.benchmarks) if refs.here(f"benchmarks[{i}]", ("path",))]
    suites = load_suites(here) if here else []
    missing = sorted({b.name for b in job.benchmarks} - {b.name for b in here})
    notes = (f"benchmarks not here, not counted: {', '.join(missing)}",) if missing else ()
    return {
        "suites": {s.name: {"tasks": len(s.problems)} for s in suites},
        "prompt_modes": {m.label: job.prompt_modes(m) for m in job.models},
        "estimate": eval_estimate(job, [p for s in suites for p in s.problems], notes).to_dict(),
    }


def summary(manifest: dict[str, Any], run_dir: Any) -> int:
    """Print pass@k per model and benchmark, then the run's line; the exit code."""
    table = manifest["summary"]
    k = table["k"][0]
    for label, cells in table["models"].items():
        parts = []
        for col in table["columns"]:
            cell = cells.get(col["key"], {})
            if "skipped" in cell:
                shown = "skipped"
            elif "score" in cell:  # MT-Bench: a mean rating, 1-10
                shown = "-" if cell["score"] is None else f"{cell['score']:.2f}/10"
            else:
                value = cell.get(f"pass@{k}")
                shown = "-" if value is None else f"{100 * value:.1f}"
            parts.append(f"{col['title']} {shown}")
        gen = manifest["generation"][label]
        errors = f", {gen['errors']} generation errors" if gen["errors"] else ""
        print(f"{label}: pass@{k} " + ", ".join(parts) + f" ({gen['samples']} samples{errors})")
    shard = manifest.get("shard")
    part = f" (shard {shard['index']}/{shard['count']})" if shard else ""
    print(f"{manifest['job']}{part}: {manifest['wall_time_s']:.1f}s -> {run_dir}/summary.md")
    return 0
