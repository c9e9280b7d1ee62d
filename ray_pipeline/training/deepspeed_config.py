"""DeepSpeed ZeRO-2 / ZeRO-3 configuration dicts for our own training loop.

Every value is explicit (no HF-Trainer ``"auto"``): the dict goes straight to
``deepspeed.initialize(config=...)`` and, for ZeRO-3, to ``HfDeepSpeedConfig``
before the model is built so that its parameters are created partitioned.
"""

from __future__ import annotations

from typing import Any, Literal

from ray_pipeline.core.errors import ConfigError

PRECISIONS = ("bf16", "fp16", "fp32")
STEPS_PER_PRINT = 10**9  # keep DeepSpeed's own progress logging quiet
# DeepSpeed's defaults, used when the hidden size is unknown.
DEFAULT_BUCKET_SIZE = 500_000_000
DEFAULT_PREFETCH_BUCKET_SIZE = 50_000_000
DEFAULT_PERSISTENCE_THRESHOLD = 100_000
SUB_GROUP_SIZE = 1_000_000_000


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _precision_sections(precision: str) -> dict[str, Any]:
    if precision == "fp16":
        # Dynamic loss scaling (loss_scale 0) starting at 2**16.
        fp16 = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                "hysteresis": 2, "min_loss_scale": 1}
        return {"fp16": fp16, "bf16": {"enabled": False}}
    return {"bf16": {"enabled": precision == "bf16"}, "fp16": {"enabled": False}}


def _zero_section(stage: int, offload_optimizer: bool, hidden_size: int | None) -> dict[str, Any]:
    # Bucket sizes follow HF's "auto" rules when the hidden size is known.
    if hidden_size:
        bucket = hidden_size * hidden_size
        prefetch = int(0.9 * hidden_size * hidden_size)
        persistence = 10 * hidden_size
    else:
        bucket, prefetch, persistence = DEFAULT_BUCKET_SIZE, DEFAULT_PREFETCH_BUCKET_SIZE, DEFAULT_PERSISTENCE_THRESHOLD
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": bucket}
    if stage == 2:
        zero["allgather_bucket_size"] = bucket
    else:
        zero.update({
            "stage3_prefetch_bucket_size": prefetch,
            "stage3_param_persistence_threshold": persistence,
            "sub_group_size": SUB_GROUP_SIZE,
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return zero


def deepspeed_config(
    stage: Literal[2, 3],
    micro_batch_per_worker: int,
    grad_accum: int,
    world_size: int,
    precision: Literal["bf16", "fp16", "fp32"],
    max_grad_norm: float,
    offload_optimizer: bool = False,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO ``stage`` 2 or 3 with a client (torch) optimizer.

    ``train_batch_size = micro_batch_per_worker * grad_accum * world_size``;
    ``gradient_clipping = max_grad_norm`` (0 disables clipping). ``precision`` enables
    the bf16 or fp16 (dynamic loss scaling) section; fp32 enables neither.
    ``offload_optimizer`` keeps optimizer states on the CPU and allows a non-DeepSpeed
    optimizer there (``zero_force_ds_cpu_optimizer: False``). ``hidden_size`` sizes the
    buckets as HF's "auto" does (reduce/allgather ``h*h``, ZeRO-3 prefetch ``0.9*h*h``,
    parameters below ``10*h`` elements kept whole on every rank); otherwise DeepSpeed's
    defaults (5e8, 5e7, 1e5).
    """
    if stage not in (2, 3):
        raise ConfigError(f"deepspeed ZeRO stage must be 2 or 3, got {stage!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    micro = _positive("micro_batch_per_worker", micro_batch_per_worker)
    accum = _positive("grad_accum", grad_accum)
    world = _positive("world_size", world_size)
    if hidden_size is not None:
        _positive("hidden_size", hidden_size)
    if isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, (int, float)) or not max_grad_norm >= 0:
        raise ConfigError(f"max_grad_norm must be a number >= 0, got {max_grad_norm!r}")
    config: dict[str, Any] = {
        "train_batch_size": micro * accum * world,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": float(max_grad_norm),
        **_precision_sections(precision),
        "zero_optimization": _zero_section(stage, offload_optimizer, hidden_size),
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
        "steps_per_print": STEPS_PER_PRINT,
    }
    if offload_optimizer:
        config["zero_force_ds_cpu_optimizer"] = False
    return config
