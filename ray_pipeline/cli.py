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
from ray_pipeline.core.errors import EXIT_USER_ERROR, FusionError
from ray_pipeline.jobs import load_job

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
    from ray_pipeline.jobs import validate_job
    from ray_pipeline.teachers.estimate import summary_line

    job = load_job(args.job)
    report = validate_job(job)
    for line in report["not_checked_offline"]:
        print(f"not checked offline: {line}", file=sys.stderr)
    if report.get("estimate"):
        print(summary_line(report["estimate"]), file=sys.stderr)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Run the job with its kind's ``run`` (``ray_pipeline.jobs``), print its ``summary``, then publish."""
    from ray_pipeline.jobs import JOBS, job_kind

    job = load_job(args.job)
    if args.output_dir:
        job.output_dir = args.output_dir
    kind = job_kind(job.kind)
    shard = None
    if getattr(args, "shard", None) is not None:  # checked before any work
        if not kind.sharded:
            sharded = " and ".join(k for k, j in JOBS.items() if j.sharded)
            raise FusionError(f"--shard {args.shard}: only {sharded} jobs are sharded, and {args.job} is a {job.kind} job")
        from ray_pipeline.evaluation.sharding import parse_shard

        shard = parse_shard(args.shard)
    publish = getattr(args, "publish", None)
    if publish is not None:
        from ray_pipeline.core.storage import check_uri

        check_uri(publish)
    manifest = kind.run(job, address=args.address, force=args.force, shard=shard)
    code = kind.summary(manifest, job.run_dir())
    if publish is not None:
        if code != 0:
            print(f"fusion: not published to {publish}: the run did not finish (exit {code})", file=sys.stderr)
            return code
        from ray_pipeline.core.storage import SUCCESS, publish_run

        record = publish_run(job.run_dir(), publish)
        print(f"published {len(record['files'])} files of {job.run_dir()} -> {publish} ({SUCCESS} last)")
    return code


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
