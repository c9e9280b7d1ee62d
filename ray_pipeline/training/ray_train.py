"""Ray Train as the executor of the SFT loop: a ``TorchTrainer`` of N workers.

The tokenized sequences go to the workers through the object store (one
``ray.put``; no shared file system needed), the loop is
:func:`ray_pipeline.training.loop.train`, and checkpoints are Ray Train
checkpoints under ``<storage_path>/train``. Running the same job again
finds Ray Train's snapshot there and the workers resume from the latest
checkpoint (Ray Train V2 restores a run by its name and storage path);
``max_failures`` also restarts a failed worker group from it within one run.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ray_pipeline.core.errors import TrainingError
from ray_pipeline.training.session import Session

log = logging.getLogger("ray_pipeline.training")

RUN_NAME = "train"


class RayTrainSession(Session):
    """A Ray Train worker: rank and device from Ray Train, checkpoints through ``ray.train.report``."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()

    def device(self) -> Any:
        import ray.train.torch

        return ray.train.torch.get_device()

    def latest_checkpoint(self) -> Any:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else nullcontext(None)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        import ray.train

        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(clean, checkpoint=checkpoint, checkpoint_dir_name=name)


def _worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function."""
    import ray

    from ray_pipeline.training.loop import TrainSpec, train

    quiet_worker_logs()
    table = ray.get(config["data"])
    train(TrainSpec(**config["spec"]), table, RayTrainSession())


def quiet_worker_logs() -> None:
    """Our step lines at INFO; other libraries' progress bars, INFO lines and deprecation notes off."""
    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("ray_pipeline").setLevel(logging.INFO)
    for noisy in ("ray.train", "ray.data", "torch.distributed", "DeepSpeed", "deepspeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def fit(spec: Any, table: Any, *, num_workers: int, use_gpu: bool, cpus_per_worker: float, gpus_per_worker: float,
        storage_path: str, keep_checkpoints: int, max_failures: int) -> Any:
    """Run (or resume) the training; returns the final ``ray.train.Checkpoint`` (``as_directory()`` to read it)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"spec": spec.to_dict(), "data": ray.put(table)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=str(storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as err:  # noqa: BLE001 - TrainingFailedError and friends: one line naming the worker's error
        raise TrainingError(f"training failed: {_root_cause(err)}") from None
    if result.error is not None:
        raise TrainingError(f"training failed: {_root_cause(result.error)}")
    if result.checkpoint is None:
        raise TrainingError("training finished without a final checkpoint")
    return result.checkpoint


def _root_cause(err: BaseException) -> str:
    """The innermost worker error of a Ray Train failure, on one line."""
    seen = err
    for attr in ("worker_failures", "worker_group_error", "training_failed_error"):
        inner = getattr(seen, attr, None)
        if isinstance(inner, dict) and inner:
            seen = next(iter(inner.values()))
        elif isinstance(inner, BaseException):
            seen = inner
    while getattr(seen, "cause", None) is not None and isinstance(seen.cause, BaseException):
        seen = seen.cause
    while seen.__cause__ is not None:
        seen = seen.__cause__
    lines = [line.strip() for line in str(seen).splitlines() if line.strip()]
    tail = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1] if lines else "")
    return f"{type(seen).__name__}: {tail}"[:400]
