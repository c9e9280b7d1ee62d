"""The SFT training loop of one worker: the same code under Ray Train, torchrun, or alone.

:func:`train` gets a :class:`TrainSpec` (plain data), the tokenized sequences
(from :mod:`ray_pipeline.training.packing`) and a
:class:`~ray_pipeline.training.session.Session`. It imports no Ray.

Data order. Epoch e uses a permutation of the N sequences seeded by (seed, e);
optimizer step k of the epoch takes the next G = global batch sequences, splits
them evenly over the workers, and each worker splits its part into
``gradient_accumulation_steps`` micro-batches. The last step of an epoch may be
short; a worker with nothing left runs a zero-weight micro-batch so that every
rank makes the same collective calls. The order depends only on (seed, epoch,
step), so a resumed run sees exactly the batches it would have seen.

Loss. Each optimizer step minimises the mean loss over the *response tokens of
the whole global batch*: every micro-batch's summed token loss is divided by
the step's trainable-token count over all workers (one all-reduce per step),
scaled for the averaging that DDP / DeepSpeed do over ranks and accumulation.
Long and short examples therefore weigh by their tokens, however they land in
micro-batches (the gradient-accumulation bug of per-micro-batch means).

Strategies: ``ddp`` (torch DDP; gloo on CPU, NCCL on GPU; one process needs no
wrapper), ``deepspeed_zero2`` and ``deepspeed_zero3`` (ZeRO-3 loads the model
partitioned through ``HfDeepSpeedConfig``, so no rank holds it whole). LoRA
adapters through peft with ``ddp`` or ZeRO-2. Precision: bf16/fp16 mixed
precision (fp32 master weights), or fp32.

Checkpoints (every ``save_steps`` steps or at each epoch's end) hold the model
weights, optimizer and scheduler (DeepSpeed's own sharded format under ZeRO)
and ``trainer_state.json`` with the step and the loss history. The last report
holds ``model/``: the trained model in Hugging Face format (LoRA merged;
bf16 when trained in bf16).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.training.session import Session

log = logging.getLogger("ray_pipeline.training")

STATE_FILE = "trainer_state.json"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"


@dataclass
class TrainSpec:
    """Everything a worker needs to train (resolved: no 'auto' left)."""

    model_path: str
    strategy: str  # ddp | deepspeed_zero2 | deepspeed_zero3
    precision: str  # bf16 | fp16 | fp32
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    epochs: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    pad_token_id: int
    seed: int = 0
    max_steps: int | None = None
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    packed: bool = False
    lora: dict[str, Any] | None = None
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    save_steps: int | None = None
    logging_steps: int = 1
    fail_after_step: int | None = None  # fault injection for tests: raise after this step's checkpoint
    save_model: bool = True  # False: the last report holds no model (throughput benchmarks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Step arithmetic of a run."""

    sequences: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int  # what the LR schedule spans
    stop_step: int  # where this run stops (max_steps or total_steps)
    warmup_steps: int

    @classmethod
    def of(cls, spec: TrainSpec, sequences: int, world_size: int) -> "Plan":
        g = spec.per_device_batch_size * spec.gradient_accumulation_steps * world_size
        per_epoch = max(1, math.ceil(sequences / g))
        total = per_epoch * spec.epochs
        stop = min(total, spec.max_steps) if spec.max_steps else total
        return cls(sequences, g, per_epoch, total, stop, int(math.ceil(spec.warmup_ratio * total)))


@dataclass
class TrainState:
    step: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    tokens_seen: int = 0
    train_seconds: float = 0.0
    local_params_at_load: int = 0
    total_params: int = 0
    world_size: int = 1


# ----------------------------------------------------------------- batching
def step_indices(plan: Plan, seed: int, step: int) -> np.ndarray:
    """Sequence indices of global optimizer step ``step`` (0-based, over all epochs)."""
    epoch, k = divmod(step, plan.steps_per_epoch)
    order = np.random.default_rng(derived_seed(seed, "sft-epoch", epoch)).permutation(plan.sequences)
    return order[k * plan.global_batch:(k + 1) * plan.global_batch]


def micro_batches(indices: np.ndarray, rank: int, world_size: int, accumulation: int) -> list[np.ndarray]:
    """This rank's share of a step, as ``accumulation`` micro-batches (some may be empty on a short step)."""
    mine = np.array_split(indices, world_size)[rank]
    return np.array_split(mine, accumulation)


# -------------------------------------------------------------------- model
def _torch_dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def _model_config(path: str) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    return getattr(config, "text_config", None) or config


def _deepspeed_config(spec: TrainSpec, world_size: int) -> dict[str, Any]:
    from ray_pipeline.training.deepspeed_config import deepspeed_config

    stage = 3 if spec.strategy == "deepspeed_zero3" else 2
    hidden = getattr(_model_config(spec.model_path), "hidden_size", None)
    return deepspeed_config(stage, spec.per_device_batch_size, spec.gradient_accumulation_steps, world_size,
                            spec.precision, spec.max_grad_norm, hidden_size=hidden)


def _flops(spec: TrainSpec, mean_len: int, device: Any) -> tuple[float | None, float | None]:
    """(model FLOPs per trained token, peak FLOP/s of this device); None where unknown.

    LoRA runs get no figure: frozen weights skip the weight-gradient matmuls, so 6N would overstate them.
    """
    import torch

    from ray_pipeline.core.errors import ConfigError
    from ray_pipeline.training.flops import flops_per_token, peak_flops

    if spec.lora is not None:
        return None, None
    try:
        per_token = flops_per_token(_model_config(spec.model_path), max(1, mean_len))
    except ConfigError:
        return None, None
    peak = None
    if device.type == "cuda" and spec.precision != "fp32":
        peak = peak_flops(torch.cuda.get_device_name(device), "bfloat16" if spec.precision == "bf16" else "float16")
    return per_token, peak


def load_model(spec: TrainSpec, ds_config: dict[str, Any] | None) -> tuple[Any, Any]:
    """The causal LM in fp32 (ZeRO-3: partitioned at load); returns (model, keep-alive handle)."""
    import torch
    from transformers import AutoModelForCausalLM

    keep = None
    if spec.strategy == "deepspeed_zero3":
        from transformers.integrations.deepspeed import HfDeepSpeedConfig

        keep = HfDeepSpeedConfig(ds_config)  # must outlive from_pretrained: it turns on zero.Init
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(spec.model_path, **kwargs)
    model.config.use_cache = False
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec.lora is not None:
        from peft import LoraConfig, get_peft_model

        if spec.gradient_checkpointing:
            model.enable_input_require_grads()
        lora = LoraConfig(r=spec.lora["r"], lora_alpha=spec.lora["alpha"], lora_dropout=spec.lora["dropout"],
                          target_modules=spec.lora["target_modules"], task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model, keep


def _local_param_count(model: Any) -> tuple[int, int]:
    """(elements this rank holds, elements of the whole model); they differ under ZeRO-3."""
    local = sum(p.numel() for p in model.parameters())
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    return local, total


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters; weight decay on matrices only (not on biases and norm weights), as usual."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]  # DeepSpeed's ZeRO optimizers reject an empty group


def _scheduler(optimizer: Any, spec: TrainSpec, plan: Plan) -> Any:
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[spec.lr_scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=plan.warmup_steps, num_training_steps=plan.total_steps)


class _Engine:
    """The model under its strategy: forward, backward, optimizer step, checkpoint I/O."""

    def __init__(self, spec: TrainSpec, plan: Plan, session: Session):
        import torch

        self.spec, self.session = spec, session
        self.device = session.device()
        self.deepspeed = spec.strategy.startswith("deepspeed")
        self.ds_config = _deepspeed_config(spec, session.world_size) if self.deepspeed else None
        if self.deepspeed:
            import deepspeed
            import torch.distributed as dist

            # DeepSpeed's communicator wraps the process group that Ray Train / torchrun made.
            deepspeed.init_distributed(dist_backend=dist.get_backend() if dist.is_initialized() else None)
        torch.manual_seed(derived_seed(spec.seed, "sft-init"))
        model, self._keep = load_model(spec, self.ds_config)
        self.local_params, self.total_params = _local_param_count(model)
        optimizer = torch.optim.AdamW(_param_groups(model, spec.weight_decay), lr=spec.learning_rate,
                                      betas=tuple(spec.adam_betas), eps=spec.adam_eps,
                                      fused=(self.device.type == "cuda") or None)
        self.scheduler = _scheduler(optimizer, spec, plan)
        if self.deepspeed:
            import deepspeed

            self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, lr_scheduler=self.scheduler, config=self.ds_config,
                dist_init_required=False)
            self.module = self.model.module
        else:
            model.to(self.device)
            self.module, self.optimizer = model, optimizer
            self.model = model
            if session.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                self.model = DistributedDataParallel(model, device_ids=ids)
        autocast = spec.precision in ("bf16", "fp16") and not self.deepspeed
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=_torch_dtype(spec.precision))) if autocast else nullcontext
        self.scaler = torch.amp.GradScaler("cuda") if (spec.precision == "fp16" and not self.deepspeed) else None

    # one micro-batch ------------------------------------------------------
    def forward_backward(self, batch: dict[str, Any], divisor: float, last: bool, weight: float) -> Any:
        """Backward of (summed token loss x weight / divisor); returns the summed token loss (a detached tensor)."""
        import torch

        inputs = {k: v.to(self.device) for k, v in batch.items()}
        sync = last or self.deepspeed or self.session.world_size == 1
        ctx = nullcontext() if sync else self.model.no_sync()
        with ctx:
            with self.autocast():
                # use_cache=False also keeps packed examples apart (transformers finds them by position_ids)
                logits = self.model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
            labels = inputs["labels"]
            shift_logits = logits[:, :-1, :].float()
            shift_labels = labels[:, 1:]
            summed = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                ignore_index=-100, reduction="sum")
            loss = summed * (weight / divisor)
            if self.deepspeed:
                self.model.backward(loss)
                self.model.step()  # DeepSpeed steps optimizer and scheduler at accumulation boundaries
            elif self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        return summed.detach() * weight  # read once per step: a float() here would sync the GPU every micro-batch

    def optimizer_step(self) -> float | None:
        """Clip, step, schedule; returns the gradient norm before clipping (None if unknown)."""
        import torch

        if self.deepspeed:
            norm = self.model.get_global_grad_norm()
            return None if norm is None else float(norm)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.module.parameters() if p.requires_grad],
                                              self.spec.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # checkpoints ----------------------------------------------------------
    def save_state(self, directory: Path) -> bool:
        """Write this rank's training state; True if it wrote files."""
        import torch

        if self.deepspeed:
            self.model.save_checkpoint(str(directory / "deepspeed"), tag="state")
            return True
        if not self.session.is_main:
            return False
        trainable = {n: p.detach().cpu() for n, p in self.module.named_parameters() if p.requires_grad}
        torch.save(trainable, directory / "trainable_weights.pt")
        torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), directory / "scheduler.pt")
        if self.scaler is not None:
            torch.save(self.scaler.state_dict(), directory / "scaler.pt")
        return True

    def load_state(self, directory: Path) -> None:
        import torch

        if self.deepspeed:
            self.model.load_checkpoint(str(directory / "deepspeed"), tag="state")
            return
        weights = torch.load(directory / "trainable_weights.pt", map_location="cpu", weights_only=True)
        params = dict(self.module.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(params[name].device))
        self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location=self.device, weights_only=True))
        self.scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
        if self.scaler is not None and (directory / "scaler.pt").is_file():
            self.scaler.load_state_dict(torch.load(directory / "scaler.pt", weights_only=True))

    def save_final(self, directory: Path) -> bool:
        """Write the trained model in Hugging Face format (rank 0); True if this rank wrote files."""
        import torch

        dtype = _torch_dtype(self.spec.precision) if self.spec.precision != "fp32" else torch.float32
        state_dict = None
        if self.spec.strategy == "deepspeed_zero3":
            state_dict = self.model._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
        if not self.session.is_main:
            return False
        module = self.module
        if self.spec.lora is not None:
            module.save_pretrained(directory / ADAPTER_DIR)
            module = module.merge_and_unload()
        if state_dict is not None:
            state_dict = {k: v.to(dtype) for k, v in state_dict.items()}
            module.save_pretrained(directory / MODEL_DIR, state_dict=state_dict, safe_serialization=True)
        else:
            module.to(dtype).save_pretrained(directory / MODEL_DIR, safe_serialization=True)
        module.config.use_cache = True
        module.config.save_pretrained(directory / MODEL_DIR)
        return True


# --------------------------------------------------------------------- loop
def _all_reduce_sum(values: list[float], session: Session) -> list[float]:
    import torch
    import torch.distributed as dist

    if session.world_size == 1 or not dist.is_initialized():
        return values
    device = session.device() if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _read_state(directory: Path) -> TrainState:
    data = json.loads((directory / STATE_FILE).read_text())
    return TrainState(**data)


def _checkpoint(engine: _Engine | None, state: TrainState, session: Session, metrics: dict[str, Any],
                name: str, final: bool) -> None:
    """Every rank: write its files to a temporary directory and report them."""
    with tempfile.TemporaryDirectory(prefix="fusion-ckpt-") as tmp:
        directory = Path(tmp)
        wrote = False
        if engine is not None:
            if final:
                wrote = engine.save_final(directory) if engine.spec.save_model else False
            else:
                wrote = engine.save_state(directory)
        if session.is_main:
            (directory / STATE_FILE).write_text(json.dumps(asdict(state)))
            wrote = True
        session.report(metrics, directory if wrote else None, name)


def train(spec: TrainSpec, table: Any, session: Session) -> TrainState:
    """Train (or resume, or find the run finished); returns the final state (complete on rank 0).

    ``table``: a sequences table (:func:`~ray_pipeline.training.packing.sequences_table`) or
    :class:`~ray_pipeline.training.packing.Sequences`.

    Every step records its loss, learning rate, gradient norm, tokens per second and, on a
    GPU whose peak is known, model FLOPs utilisation (:mod:`ray_pipeline.training.flops`).
    """
    import torch

    from ray_pipeline.training.packing import Sequences, collate

    sequences = table if isinstance(table, Sequences) else Sequences.from_table(table)
    plan = Plan.of(spec, len(sequences), session.world_size)
    trainable, lengths = sequences.num_trainable, sequences.lengths
    state = TrainState()
    with session.latest_checkpoint() as ckpt:
        if ckpt is not None:
            state = _read_state(Path(ckpt))
            if state.finished:
                log.info("training already finished at step %d: nothing to do", state.step)
                return state
        engine = _Engine(spec, plan, session)
        state.local_params_at_load, state.total_params = engine.local_params, engine.total_params
        state.world_size = session.world_size
        if ckpt is not None:
            engine.load_state(Path(ckpt))
            log.info("resumed from the checkpoint at step %d of %d", state.step, plan.stop_step)
    if session.is_main:
        log.info("training %d sequences: %d steps (%d per epoch) of %d sequences, %d micro-batches of %d on %d worker(s)",
                 plan.sequences, plan.stop_step, plan.steps_per_epoch, plan.global_batch,
                 spec.gradient_accumulation_steps, spec.per_device_batch_size, session.world_size)
    engine.model.train()
    flops_per_token, peak_flops = _flops(spec, int(round(float(np.mean(lengths)))), engine.device)
    save_every = spec.save_steps or plan.steps_per_epoch

    def rows(idx: np.ndarray) -> list[dict[str, list[int]]]:
        return [sequences.row(int(i)) for i in idx]

    while state.step < plan.stop_step:
        started = time.perf_counter()
        torch.manual_seed(derived_seed(spec.seed, "sft-step", state.step, session.rank))
        indices = step_indices(plan, spec.seed, state.step)
        parts = micro_batches(indices, session.rank, session.world_size, spec.gradient_accumulation_steps)
        local_tokens = float(sum(int(trainable[p].sum()) for p in parts))
        global_tokens = _all_reduce_sum([local_tokens], session)[0]
        # DDP averages gradients over ranks and DeepSpeed also over accumulation steps: undo both.
        scale = session.world_size * (spec.gradient_accumulation_steps if engine.deepspeed else 1)
        divisor = max(global_tokens, 1.0) / scale
        summed = 0.0
        for j, part in enumerate(parts):
            weight = 1.0 if len(part) else 0.0
            batch = collate(rows(part if len(part) else indices[:1]), spec.pad_token_id, spec.packed)
            summed = summed + engine.forward_backward(batch, divisor, last=j == len(parts) - 1, weight=weight)
        grad_norm = engine.optimizer_step()
        summed, tokens = _all_reduce_sum([float(summed), float(sum(int(lengths[p].sum()) for p in parts))], session)
        state.step += 1
        state.tokens_seen += int(tokens)
        elapsed = time.perf_counter() - started
        state.train_seconds += elapsed
        record = {"step": state.step, "epoch": (state.step - 1) // plan.steps_per_epoch + 1,
                  "loss": summed / max(global_tokens, 1.0), "lr": engine.lr, "grad_norm": grad_norm,
                  "trainable_tokens": int(global_tokens), "tokens": int(tokens), "seconds": elapsed,
                  "tokens_per_s": tokens / elapsed if elapsed else None}
        if flops_per_token and elapsed:
            record["tflops"] = flops_per_token * tokens / elapsed / 1e12
            if peak_flops:
                record["mfu"] = flops_per_token * tokens / elapsed / (peak_flops * session.world_size)
        state.history.append(record)
        if session.is_main and (state.step % spec.logging_steps == 0 or state.step == plan.stop_step):
            log.info("step %d/%d epoch %d loss %.4f lr %.3g grad_norm %s %.0f tok/s", state.step, plan.stop_step,
                     record["epoch"], record["loss"], record["lr"],
                     "n/a" if grad_norm is None else f"{grad_norm:.3f}", record["tokens_per_s"] or 0)
        if state.step % save_every == 0 and state.step < plan.stop_step:
            _checkpoint(engine, state, session, record, f"checkpoint_step{state.step:06d}", final=False)
        if spec.fail_after_step is not None and state.step == spec.fail_after_step:
            raise RuntimeError(f"fault injection: stopping after step {state.step} (FUSION_FAULT_SFT_FAIL_AFTER_STEP)")
    state.finished = True
    _checkpoint(engine, state, session, state.history[-1] if state.history else {}, f"checkpoint_step{state.step:06d}_final",
                final=True)
    return state


def env_fail_after_step() -> int | None:
    """The fault-injection hook of the tests: FUSION_FAULT_SFT_FAIL_AFTER_STEP=N."""
    value = os.environ.get("FUSION_FAULT_SFT_FAIL_AFTER_STEP")
    return int(value) if value else None
