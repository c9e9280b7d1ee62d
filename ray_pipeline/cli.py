"""``fusion``: the command line.

    fusion run JOB.yaml [--address ADDR] [--output-dir DIR] [--force]   (instruction_fusion, tacie, sft, eval)
    fusion validate JOB.yaml
    fusion report RUN_DIR [--out DIR]
    fusion compare RUN_DIR_OR_SUMMARY... [--out DIR]
    fusion merge ROOT [--expect N] [--wait-s S] [--out URI]     (sharded evaluation results -> one table)
    fusion submit JOB.yaml --address http://HEAD:8265 | --k8s   (Ray Jobs API, or a KubeRay RayJob)
    fusion sweep VALUES.yaml [--render | --install]             (the evaluation-sweep Helm chart)

A user error prints one line, ``fusion: error: <cause>``, and exits 2. A run
that stops before its target (attempt budget spent) keeps what it made, says
so, and exits 3. Ctrl-C or SIGTERM stops the teacher server and Ray, and exits
130 / 143; the run directory keeps every finished teacher call, so running the
same command again resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any, Sequence

from ray_pipeline import __version__
from ray_pipeline.core.config import load_job
from ray_pipeline.core.errors import FusionError

EXIT_USER_ERROR = 2
EXIT_INCOMPLETE = 3

log = logging.getLogger("ray_pipeline")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fusion",
        description="Instruction-evolution data engine: Instruction Fusion and TaCIE on Ray with API or local vLLM "
                    "teachers, supervised fine-tuning on the result with Ray Train, and evaluation on HumanEval(+), "
                    "MBPP(+) and MultiPL-E in a bubblewrap sandbox.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run a job file", description="Run any job kind from its YAML file.")
    run.add_argument("job", help="job file (YAML)")
    run.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--output-dir", help="run directory (overrides output_dir in the job file)")
    run.add_argument("--force", action="store_true", help="reuse an output directory that holds a different job")
    # --- run: sharding and publishing (evaluation sweeps on Kubernetes) ---
    run.add_argument("--shard", metavar="I/N", help="eval jobs: score only the tasks whose index %% N == I")
    run.add_argument("--publish", metavar="URI",
                     help="after the run, copy its results to URI (a directory, s3:// or gs://), _SUCCESS last")
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a job file and its seeds without running it",
                         description="Validate a job file and read its seed pools; start nothing.")
    val.add_argument("job", help="job file (YAML)")
    val.set_defaults(func=_cmd_validate)

    rep = sub.add_parser("report", help="write the HTML report of a TaCIE run directory",
                         description="Write RUN_DIR/report/index.html with PNG plots: seeds vs evolved, "
                                     "uncertainty, domains, diversity and success rates per round.")
    rep.add_argument("run_dir", help="run directory of a finished TaCIE job")
    rep.add_argument("--out", help="report directory (default RUN_DIR/report)")
    rep.set_defaults(func=_cmd_report)

    cmp_ = sub.add_parser("compare", help="one table from several evaluation runs (models, checkpoints)",
                          description="Merge the summary.json of evaluation runs into one table, each model's "
                                      "difference from the first included; prints Markdown.")
    cmp_.add_argument("runs", nargs="+", help="evaluation run directories or summary.json files")
    cmp_.add_argument("--out", help="also write compare.md and compare.json into this directory")
    cmp_.set_defaults(func=_cmd_compare)

    # --- merge (ray_pipeline.evaluation.merge) ---
    mrg = sub.add_parser("merge", help="merge published evaluation shards into one table",
                         description="Merge the per-task results of published evaluation runs (the shards of a "
                                     "sweep) under ROOT into one summary table.")
    mrg.add_argument("root", help="directory, s3:// or gs:// prefix holding published run directories")
    mrg.add_argument("--expect", type=int, help="number of published runs to wait for")
    mrg.add_argument("--wait-s", type=float, default=0.0, help="wait up to this many seconds for --expect runs")
    mrg.add_argument("--out", help="where to write the merged table (default ROOT/merged)")
    mrg.set_defaults(func=_lazy("ray_pipeline.evaluation.merge", "cmd_merge"))

    # --- submit (ray_pipeline.deploy.submit) ---
    smt = sub.add_parser("submit", help="submit a job file to a Ray cluster or to Kubernetes (KubeRay RayJob)",
                         description="Submit JOB.yaml through the Ray Jobs API (--address) with this project as "
                                     "the working directory, or as a KubeRay RayJob (--k8s); follow it to the end.")
    smt.add_argument("job", help="job file (YAML)")
    where = smt.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="Ray dashboard address, e.g. http://HEAD:8265")
    where.add_argument("--k8s", action="store_true", help="create a RayJob with the kubernetes client")
    smt.add_argument("--output-dir", help="run directory on the cluster")
    smt.add_argument("--env", action="append", default=[], metavar="NAME",
                     help="forward this environment variable to the job (repeatable)")
    smt.add_argument("--no-follow", action="store_true", help="return once submitted")
    smt.add_argument("--namespace", help="--k8s: namespace (default: the kubeconfig's, else default)")
    smt.add_argument("--image", help="--k8s: job image REPOSITORY[:TAG] (the chart appends -cpu / -gpu to the tag)")
    smt.add_argument("--name", help="--k8s: RayJob name (default: <job name>-<UTC time>)")
    smt.add_argument("--cpu-workers", type=int, help="--k8s: most CPU workers the autoscaler starts (0: none)")
    smt.add_argument("--gpu-workers", type=int, help="--k8s: most GPU workers the autoscaler starts (0: none)")
    smt.add_argument("--values", help="--k8s: values file of the fusion-ray chart")
    smt.add_argument("--dry-run", action="store_true",
                     help="print what would be submitted (--k8s: the ConfigMap and RayJob YAML), send nothing")
    smt.set_defaults(func=_lazy("ray_pipeline.deploy.submit", "cmd_submit"))

    # --- sweep (ray_pipeline.deploy.sweep) ---
    swp = sub.add_parser("sweep", help="render or install the evaluation-sweep Helm chart",
                         description="Render (default) or install helm/fusion-eval with VALUES.yaml through the "
                                     "Helm SDK; every object is validated first.")
    swp.add_argument("values", help="values file of the fusion-eval chart")
    swp.add_argument("--install", action="store_true", help="install (or upgrade) the release on the cluster")
    swp.add_argument("--out", help="--render: write the manifests here instead of printing them")
    swp.add_argument("--release", default="fusion-eval", help="release name")
    swp.add_argument("--namespace", help="namespace (default: the kubeconfig's, else default)")
    swp.add_argument("--dry-run", action="store_true", help="--install: ask the cluster, change nothing")
    swp.set_defaults(func=_lazy("ray_pipeline.deploy.sweep", "cmd_sweep"))
    return p


def _lazy(module: str, name: str) -> Any:
    """A command implemented in its own module, imported only when it runs (keeps `fusion --help` fast)."""

    def command(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), name)(args))

    return command


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ray_pipeline.evaluation.results import compare, to_markdown
    from ray_pipeline.core.outputs import atomic_write_json, atomic_write_text

    loaded = []
    for item in args.runs:
        path = Path(item)
        summary_file = path / "summary.json" if path.is_dir() else path
        if not summary_file.is_file():
            raise FusionError(f"{item}: no summary.json (not a finished evaluation run)")
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            if not isinstance(summary.get("models"), dict) or not isinstance(summary.get("columns"), list):
                raise ValueError("models or columns missing")
        except (OSError, ValueError, AttributeError) as err:
            raise FusionError(f"{summary_file}: not an evaluation summary ({err})") from None
        source = summary_file.parent.name if summary_file.name == "summary.json" else summary_file.stem
        loaded.append((source, summary))
    merged = compare(loaded)
    text = to_markdown(merged, title="Comparison")
    print(text)
    if args.out:
        out = Path(args.out)
        atomic_write_json(out / "compare.json", merged)
        atomic_write_text(out / "compare.md", text)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ray_pipeline.methods.tacie.report import write_report

    index = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print(f"report: {index}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ray_pipeline.references import validate_job

    job = load_job(args.job)
    report = validate_job(job, _full_validation)
    for line in report["not_checked_offline"]:
        print(f"not checked offline: {line}", file=sys.stderr)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _full_validation(job: Any) -> dict[str, Any]:
    """The kind's preflight, when every input it reads is here (``references.validate_job``)."""
    from ray_pipeline.prompts import load_template, not_from_papers
    from ray_pipeline.core.seeds import load_seeds

    if job.kind == "tacie":
        from ray_pipeline.methods.tacie.pipeline import preflight

        checked = preflight(job)
        return {
            "job": job.name, "kind": job.kind, "seeds": checked.pool.summary(),
            "templates": {k: t.ref for k, t in checked.templates.items()},
            "templates_not_from_papers": not_from_papers(checked.templates),
            "decontaminate": checked.benchmark_prompts, "scorer_model": checked.scorer_model,
        }
    if job.kind == "eval":
        from ray_pipeline.evaluation.pipeline import preflight as eval_preflight

        suites, skipped = eval_preflight(job)
        return {
            "job": job.name, "kind": job.kind, "models": [m.label for m in job.models],
            "suites": {s.name: {"tasks": len(s.problems), **({"skipped": skipped[s.name]} if s.name in skipped else {})}
                       for s in suites},
            "samples_per_model": job.sampling.n * sum(len(s.problems) for s in suites if s.name not in skipped),
            "prompt_modes": {m.label: job.prompt_modes(m) for m in job.models},
        }
    if job.kind == "sft":
        from ray_pipeline.training.pipeline import preflight as sft_preflight
        from ray_pipeline.training.pipeline import resolve_strategy

        prepared = sft_preflight(job)
        return {
            "job": job.name, "kind": job.kind, "model": prepared.model_path, "strategy": resolve_strategy(job),
            "gradient_accumulation_steps": job.gradient_accumulation_steps, "data": prepared.data_report,
        }
    templates = {"fusion": load_template(job.fusion.template), "response": load_template(job.response.template)}
    pool = load_seeds(job.seeds, job.seed)
    return {
        "job": job.name, "kind": job.kind, "seeds": pool.summary(),
        "templates": {k: t.ref for k, t in templates.items()}, "templates_not_from_papers": not_from_papers(templates),
    }


def _cmd_run(args: argparse.Namespace) -> int:
    job = load_job(args.job)
    if args.output_dir:
        job.output_dir = args.output_dir
    shard = None
    if getattr(args, "shard", None) is not None:  # checked before any work
        if job.kind != "eval":
            raise FusionError(f"--shard {args.shard}: only eval jobs are sharded, and {args.job} is a {job.kind} job")
        from ray_pipeline.evaluation.sharding import parse_shard

        shard = parse_shard(args.shard)
    publish = getattr(args, "publish", None)
    if publish is not None:
        from ray_pipeline.core.storage import check_uri

        check_uri(publish)
    if job.kind == "instruction_fusion":
        from ray_pipeline.methods.fusion.pipeline import run_instruction_fusion

        manifest = run_instruction_fusion(job, address=args.address, force=args.force)
        code = _report(manifest, job.run_dir())
    elif job.kind == "tacie":
        from ray_pipeline.methods.tacie.pipeline import run_tacie

        manifest = run_tacie(job, address=args.address, force=args.force)
        code = _report_tacie(manifest, job.run_dir())
    elif job.kind == "sft":
        from ray_pipeline.training.pipeline import run_sft

        code = _report_sft(run_sft(job, address=args.address, force=args.force), job.run_dir())
    elif job.kind == "eval":
        from ray_pipeline.evaluation.pipeline import run_evaluation

        manifest = run_evaluation(job, address=args.address, force=args.force, shard=shard)
        code = _report_eval(manifest, job.run_dir())
    else:
        raise FusionError(f"job kind {job.kind!r} is not supported by this version")
    if publish is not None:
        if code != 0:
            print(f"fusion: not published to {publish}: the run did not finish (exit {code})", file=sys.stderr)
            return code
        from ray_pipeline.core.storage import SUCCESS, publish_run

        record = publish_run(job.run_dir(), publish)
        print(f"published {len(record['files'])} files of {job.run_dir()} -> {publish} ({SUCCESS} last)")
    return code


def _report(manifest: dict[str, Any], run_dir: Any) -> int:
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


def _report_tacie(manifest: dict[str, Any], run_dir: Any) -> int:
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


def _report_sft(manifest: dict[str, Any], run_dir: Any) -> int:
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


def _report_eval(manifest: dict[str, Any], run_dir: Any) -> int:
    summary = manifest["summary"]
    k = summary["k"][0]
    for label, cells in summary["models"].items():
        parts = []
        for col in summary["columns"]:
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


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)  # restored below: main may be called in-process
    try:
        return int(args.func(args))
    except FusionError as err:
        print(f"fusion: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fusion: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        _shutdown_ray()
        signal.signal(signal.SIGTERM, previous)


def _shutdown_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # pragma: no cover - best effort at exit
        pass


if __name__ == "__main__":
    sys.exit(main())
