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
