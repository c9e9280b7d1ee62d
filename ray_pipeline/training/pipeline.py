"""Supervised fine-tuning on seeds plus evolved data, as the papers do (``kind: sft``).

1. Preflight on the driver, before any worker starts: resolve the model and
   check it is a causal LM, load its tokenizer (and chat template), read and
   mix the data sources (:mod:`ray_pipeline.training.data`), render and
   tokenize every example with the loss on response tokens only, cut long
   ones (counted), optionally pack (:mod:`~ray_pipeline.training.sft_format`,
   :mod:`~ray_pipeline.training.packing`). Bad input stops here with one line.
2. Train with Ray Train (:mod:`~ray_pipeline.training.ray_train`): N workers
   run :func:`ray_pipeline.training.loop.train`; checkpoints in
   ``<run dir>/train``; a second run of the same job resumes from the latest.
3. Outputs: ``model/`` (Hugging Face format, safetensors + tokenizer with its
   chat template: ready for evaluation and vLLM), ``adapter/`` (LoRA runs),
   ``metrics.jsonl`` (one row per optimizer step), ``loss_curve.png``,
   ``metrics.json``, ``data/sequences.parquet`` (what was trained on),
   ``manifest.json``. The model directory is replaced atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import yaml

from ray_pipeline.core.config import job_to_dict
from ray_pipeline.training.config import SFTJob
from ray_pipeline.core.errors import ConfigError, typed_line
from ray_pipeline.core.models import check_causal_lm, resolve_model
from ray_pipeline.core.outputs import RunDir, config_hash, manifest_header

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The driver's work before training: the model, its tokenizer, and the sequences to train on."""

    model_path: str
    tokenizer: Any
    table: pa.Table
    data_report: dict[str, Any]


def load_tokenizer(path: str, chat_template: str | None, fmt: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - one line naming the cause
        raise ConfigError(f"model.path: cannot load the tokenizer of {path}: {typed_line(err)}") from None
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if fmt == "chat" and not tokenizer.chat_template:
        raise ConfigError(
            f"model.path: {path} has no chat template; set model.chat_template to a Jinja file or use data.format: alpaca"
        )
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"model.path: the tokenizer of {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def preflight(job: SFTJob) -> Prepared:
    """Everything that can be checked or computed without a worker; ConfigError on bad input."""
    from ray_pipeline.training.data import load_sft_rows
    from ray_pipeline.training.packing import pack_examples, sequences_table
    from ray_pipeline.training.sft_format import to_messages, tokenize_examples

    resolved = resolve_model(job.model.path, job.model.chat_template, "model.path", "model.chat_template")
    check_causal_lm(resolved.path, "model.path")
    tokenizer = load_tokenizer(resolved.path, resolved.chat_template, job.data.format)
    rows, mix = load_sft_rows(job.data.sources, job.seed)
    conversations = [to_messages(r, job.data.system_prompt) for r in rows]
    examples, stats = tokenize_examples(conversations, tokenizer, job.data.format, job.data.max_seq_len,
                                        alpaca_template=job.data.alpaca_template)
    if not examples:
        raise ConfigError(
            f"data: no example has a response token left within max_seq_len {job.data.max_seq_len} "
            f"({stats.dropped_no_response} of {stats.examples_in} dropped)"
        )
    sequences = pack_examples(examples, job.data.max_seq_len) if job.data.packing else examples
    table = sequences_table(sequences)
    report = {
        "sources": [m.to_dict() for m in mix],
        "rows": len(rows),
        "format": job.data.format,
        "max_seq_len": job.data.max_seq_len,
        "packing": job.data.packing,
        "sequences": table.num_rows,
        "examples_in": stats.examples_in,
        "examples_out": stats.examples_out,
        "examples_truncated": stats.truncated,
        "examples_dropped_no_response": stats.dropped_no_response,
        "tokens": stats.tokens,
        "trainable_tokens": stats.trainable_tokens,
    }
    if stats.truncated or stats.dropped_no_response:
        log.warning("%d of %d examples cut to %d tokens, %d dropped (no response token left)",
                    stats.truncated, stats.examples_in, job.data.max_seq_len, stats.dropped_no_response)
    return Prepared(resolved.path, tokenizer, table, report)


def resolve_strategy(job: SFTJob) -> str:
    if job.training.strategy != "auto":
        return job.training.strategy
    return "deepspeed_zero2" if job.scaling.use_gpu else "ddp"


def storage_location(job: SFTJob) -> str:
    """Where Ray Train keeps checkpoints: ``scaling.storage_path`` (a path or a URI such as s3://), else the run dir."""
    where = job.scaling.storage_path
    if where and "://" in where:
        return where
    return str(Path(where or job.run_dir()).expanduser().resolve())


def train_spec(job: SFTJob, prepared: Prepared) -> Any:
    from ray_pipeline.training.loop import TrainSpec, env_fail_after_step

    t = job.training
    return TrainSpec(
        model_path=prepared.model_path,
        strategy=resolve_strategy(job),
        precision=t.precision,
        learning_rate=t.learning_rate,
        lr_scheduler=t.lr_scheduler,
        warmup_ratio=t.warmup_ratio,
        epochs=t.epochs,
        per_device_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=job.gradient_accumulation_steps,
        pad_token_id=int(prepared.tokenizer.pad_token_id),
        seed=job.seed,
        max_steps=t.max_steps,
        weight_decay=t.weight_decay,
        adam_betas=tuple(t.adam_betas),
        adam_eps=t.adam_eps,
        max_grad_norm=t.max_grad_norm,
        packed=job.data.packing,
        lora=t.lora.model_dump() if t.lora else None,
        attn_implementation=job.model.attn_implementation,
        gradient_checkpointing=job.model.gradient_checkpointing,
        save_steps=t.save_steps,
        logging_steps=t.logging_steps,
        fail_after_step=env_fail_after_step(),
    )


def run_sft(job: SFTJob, address: str | None = None, force: bool = False) -> dict[str, Any]:
    from ray_pipeline.core.executor import connect
    from ray_pipeline.training import ray_train
    from ray_pipeline.training.loop import ADAPTER_DIR, MODEL_DIR, STATE_FILE

    started = time.time()
    config = job_to_dict(job)
    run = RunDir(job.run_dir())
    run.check_compatible(config, force=force)
    prepared = preflight(job)
    storage = storage_location(job)
    local_checkpoints = Path(storage) / ray_train.RUN_NAME if "://" not in storage else None
    previous = run.path / RunDir.JOB_FILE
    if force and previous.is_file() and local_checkpoints is not None and local_checkpoints.exists():
        if config_hash(yaml.safe_load(previous.read_text())) != config_hash(config):
            log.warning("--force with a different SFT job: removing the old checkpoints in %s", local_checkpoints)
            shutil.rmtree(local_checkpoints)
    run.start(config)
    (run.path / "data").mkdir(exist_ok=True)
    run.write_table("data/sequences", prepared.table)
    run.write_json("data/report.json", prepared.data_report)

    cluster = connect(address or job.ray.address)
    spec = train_spec(job, prepared)
    log.info("%s: %d sequences, strategy %s, %d worker(s) -> %s", job.name, prepared.table.num_rows, spec.strategy,
             job.scaling.num_workers, run.path)
    checkpoint = ray_train.fit(
        spec, prepared.table, num_workers=job.scaling.num_workers, use_gpu=job.scaling.use_gpu,
        cpus_per_worker=job.scaling.cpus_per_worker, gpus_per_worker=job.scaling.gpus_per_worker,
        storage_path=storage, keep_checkpoints=job.training.keep_checkpoints, max_failures=job.training.max_failures,
    )
    with checkpoint.as_directory() as directory:  # the path itself on local storage; a download from s3:// etc.
        final = Path(directory)
        state = json.loads((final / STATE_FILE).read_text())
        model_dir = _install_model(final / MODEL_DIR, run.path / MODEL_DIR, prepared.tokenizer)
        if (final / ADAPTER_DIR).is_dir():
            _replace_dir(final / ADAPTER_DIR, run.path / ADAPTER_DIR)
    history = state["history"]
    run.write_jsonl("metrics.jsonl", history)
    _loss_curve(history, run.path / "loss_curve.png", job.name)
    metrics = summarise(history, state, spec)
    run.write_json("metrics.json", metrics)
    manifest = {
        **manifest_header(config, cluster, round(time.time() - started, 2),
                          ("ray", "torch", "transformers", "deepspeed", "peft", "pyarrow", "pydantic")),
        "model": {"base": prepared.model_path, "output": str(model_dir), "strategy": spec.strategy,
                  "precision": spec.precision, "lora": spec.lora is not None},
        "data": prepared.data_report,
        "training": metrics,
        "checkpoints": f"{storage.rstrip('/')}/{ray_train.RUN_NAME}",
        "outputs": {"model": MODEL_DIR, "metrics": "metrics.json", "steps": "metrics.jsonl",
                    "loss_curve": "loss_curve.png", "sequences": "data/sequences.parquet"},
    }
    run.write_manifest(manifest)
    return manifest


def summarise(history: list[dict[str, Any]], state: dict[str, Any], spec: Any) -> dict[str, Any]:
    """Figures of a finished training for metrics.json and the manifest."""
    losses = [h["loss"] for h in history]
    seconds = state.get("train_seconds") or 0.0
    mfu = [h["mfu"] for h in history if h.get("mfu") is not None]
    return {
        "steps": state["step"],
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "min_loss": min(losses) if losses else None,
        "tokens": state.get("tokens_seen", 0),
        "train_seconds": round(seconds, 2),
        "tokens_per_s": state["tokens_seen"] / seconds if seconds else None,
        "mfu": sum(mfu) / len(mfu) if mfu else None,
        "global_batch_size": spec.per_device_batch_size * spec.gradient_accumulation_steps * state.get("world_size", 1),
        "gradient_accumulation_steps": spec.gradient_accumulation_steps,
        "params_total": state.get("total_params"),
        "params_rank0_at_load": state.get("local_params_at_load"),
        "workers": state.get("world_size", 1),
    }


def _replace_dir(src: Path, dest: Path, finish: Callable[[Path], None] | None = None) -> Path:
    """Copy ``src`` to ``dest`` (then ``finish(copy)``) so that ``dest`` is never half-written."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if finish is not None:
        finish(tmp)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _install_model(src: Path, dest: Path, tokenizer: Any) -> Path:
    """The final checkpoint's model plus the tokenizer (with its chat template), atomically at ``dest``."""
    return _replace_dir(src, dest, finish=lambda tmp: tokenizer.save_pretrained(tmp))


def _loss_curve(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ray_pipeline.core.outputs import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o" if len(history) < 40 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean loss per response token")
    ax.set_title(f"{title}: training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
