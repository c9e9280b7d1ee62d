"""The ``sft`` job as the CLI sees it (``ray_pipeline.jobs``): run, full validation, summary line."""

from __future__ import annotations

from typing import Any


def run(job: Any, address: str | None = None, force: bool = False, shard: Any = None) -> dict[str, Any]:
    from ray_pipeline.training.pipeline import run_sft

    return run_sft(job, address=address, force=force)


def validate(job: Any) -> dict[str, Any]:
    """The driver-side preflight's findings: model, strategy, data mix (``fusion validate``)."""
    from ray_pipeline.training.pipeline import preflight, resolve_strategy

    prepared = preflight(job)
    return {
        "job": job.name, "kind": job.kind, "model": prepared.model_path, "strategy": resolve_strategy(job),
        "gradient_accumulation_steps": job.gradient_accumulation_steps, "data": prepared.data_report,
    }


def references(job: Any, refs: Any) -> None:
    """The inputs from outside the job: the base model, and each data source (a run directory, file or dataset)."""
    from pathlib import Path

    from ray_pipeline.core.references import BUNDLED, LOCAL, NOT_CHECKED
    from ray_pipeline.training.data import RUN_SFT_FILE

    if job.model.path == "embedded":
        refs.add("model.path", "model", job.model.path, BUNDLED)
    else:
        refs.hub("model.path", job.model.path, "model", needed=True)
    for i, src in enumerate(job.data.sources):
        if src.run is not None:
            here = (Path(src.run).expanduser() / RUN_SFT_FILE).is_file()
            refs.add(f"data.sources[{i}].run", "run directory", src.run, LOCAL if here else NOT_CHECKED,
                     "" if here else "made by its data job, which has not run here", needed=True)
        else:
            refs.rows(f"data.sources[{i}]", src)


def partial_validation(job: Any, refs: Any) -> dict[str, Any]:
    """The model and the data sources that are here (``fusion validate`` when some input is not)."""
    from ray_pipeline.core.models import check_causal_lm, resolve_model
    from ray_pipeline.training.data import load_sft_rows

    out: dict[str, Any] = {}
    if not refs.missing("model.path"):
        resolved = resolve_model(job.model.path, job.model.chat_template, "model.path", "model.chat_template")
        check_causal_lm(resolved.path, "model.path")
        out["model"] = resolved.path
    here = [s for i, s in enumerate(job.data.sources) if refs.here(f"data.sources[{i}]", ("run", "hf", "path"))]
    if here:
        rows, mix = load_sft_rows(here, job.seed)
        out["data"] = {"rows": len(rows), "sources": [m.to_dict() for m in mix]}
    out["gradient_accumulation_steps"] = job.gradient_accumulation_steps
    return out


def summary(manifest: dict[str, Any], run_dir: Any) -> int:
    """Print the run's line; the exit code."""
    t, d = manifest["training"], manifest["data"]

    def fmt(x: Any) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    speed = f"{t['tokens_per_s']:.0f} tokens/s" if t["tokens_per_s"] else "n/a tokens/s"
    mfu = f", MFU {100 * t['mfu']:.1f}%" if t.get("mfu") else ""
    print(
        f"{manifest['job']}: {t['steps']} steps on {d['sequences']} sequences ({d['examples_truncated']} truncated, "
        f"{d['examples_dropped_no_response']} dropped) with {manifest['model']['strategy']} on {t['workers']} worker(s); "
        f"loss {fmt(t['first_loss'])} -> {fmt(t['final_loss'])}; {speed}{mfu}; {manifest['wall_time_s']:.1f}s "
        f"-> {run_dir}/model"
    )
    return 0
