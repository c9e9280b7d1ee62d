"""Where a training worker runs: who it is, its device, and where its checkpoints go.

The training loop (:mod:`ray_pipeline.training.loop`) talks to a :class:`Session`
only, so the same loop runs as a Ray Train worker (:class:`RayTrainSession` in
:mod:`ray_pipeline.training.ray_train`) and, without Ray, under ``torchrun`` or
as one plain process (:class:`LocalSession`, used by the GPU benchmark).

Checkpoint protocol: every rank calls :meth:`Session.report` at the same
points (it is a barrier), each passing the directory of the files it wrote or
``None``; the session merges them into one checkpoint directory. The latest
checkpoint is offered back by :meth:`Session.latest_checkpoint` when a run
starts again.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


COMPLETE_MARKER = ".complete"


class Session(ABC):
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @abstractmethod
    def device(self) -> Any:
        """The torch device of this worker."""

    @abstractmethod
    def latest_checkpoint(self) -> Any:
        """Context manager giving the latest checkpoint's local directory, or None."""

    @abstractmethod
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        """Persist this rank's checkpoint files (if any) as checkpoint ``name``; a barrier over all ranks."""


class LocalSession(Session):
    """One process, or ``torchrun`` ranks on one machine: checkpoints under a local directory."""

    def __init__(self, checkpoint_root: str | os.PathLike[str], keep: int = 2):
        import torch
        import torch.distributed as dist

        self.root = Path(checkpoint_root)
        self.keep = keep
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend=backend)

    def device(self) -> Any:
        import torch

        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    def _complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if (p / COMPLETE_MARKER).is_file())

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        done = self._complete()
        yield done[-1] if done else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, name: str) -> None:
        import torch.distributed as dist

        target = self.root / name
        if checkpoint_dir is not None:
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
        if dist.is_initialized():
            dist.barrier()
        if self.is_main:
            target.mkdir(parents=True, exist_ok=True)
            (target / COMPLETE_MARKER).write_text(json.dumps(metrics, default=str))
            for old in self._complete()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        if dist.is_initialized():
            dist.barrier()
