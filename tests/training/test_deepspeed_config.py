"""DeepSpeed ZeRO-2 / ZeRO-3 configs (ray_pipeline.training.deepspeed_config).

The last test trains a tiny Llama under both configs with ``torchrun --nproc-per-node 2``
on the CPU (gloo), through tests/ds_zero_worker.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.training.deepspeed_config import deepspeed_config
from ray_pipeline.training.flops import count_parameters
from tests.ds_zero_worker import HIDDEN, tiny_llama_config

from tests.paths import REPO
WORKER = REPO / "tests" / "ds_zero_worker.py"


def _values(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _values(value)
    else:
        yield obj


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_config_values(stage, precision):
    config = deepspeed_config(stage, micro_batch_per_worker=4, grad_accum=8, world_size=2, precision=precision,
                              max_grad_norm=1.0)

    assert "auto" not in list(_values(config))
    assert config["train_batch_size"] == 4 * 8 * 2
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 8
    assert config["gradient_clipping"] == 1.0
    assert config["bf16"]["enabled"] is (precision == "bf16")
    assert config["fp16"]["enabled"] is (precision == "fp16")
    assert config["zero_allow_untested_optimizer"] is True
    assert config["wall_clock_breakdown"] is False
    assert config["steps_per_print"] >= 10**6
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    assert "offload_optimizer" not in zero and "zero_force_ds_cpu_optimizer" not in config
    if stage == 2:
        assert zero["reduce_bucket_size"] == zero["allgather_bucket_size"] == 500_000_000
        assert not any(key.startswith("stage3") for key in zero)
    else:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        assert zero["stage3_prefetch_bucket_size"] == 50_000_000
        assert zero["stage3_param_persistence_threshold"] == 100_000
        assert zero["sub_group_size"] == 1_000_000_000
        assert "allgather_bucket_size" not in zero


def test_hidden_size_sizes_buckets_like_hf_auto_and_offload_allows_torch_optimizers():
    config = deepspeed_config(3, 1, 1, 1, "bf16", 0.0, offload_optimizer=True, hidden_size=640)
    zero = config["zero_optimization"]
    assert zero["reduce_bucket_size"] == 640 * 640
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 640 * 640)
    assert zero["stage3_param_persistence_threshold"] == 6400
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert config["zero_force_ds_cpu_optimizer"] is False
    assert config["gradient_clipping"] == 0.0


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("offload", [False, True])
def test_deepspeed_accepts_the_config(stage, precision, offload):
    """DeepSpeed's own parser (pydantic, unknown keys forbidden) reads every variant as meant."""
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig(deepspeed_config(stage, 2, 3, 1, precision, 0.5, offload, hidden_size=64))

    assert (parsed.train_batch_size, parsed.train_micro_batch_size_per_gpu) == (6, 2)
    assert parsed.gradient_accumulation_steps == 3
    assert parsed.zero_optimization_stage == stage
    assert parsed.gradient_clipping == 0.5
    assert parsed.bfloat16_config.enabled is (precision == "bf16")
    assert parsed.float16_config.enabled is (precision == "fp16")
    assert parsed.zero_allow_untested_optimizer is True
    assert (parsed.zero_config.offload_optimizer is not None) is offload
    if stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save is True
        assert parsed.zero_config.param_persistence_threshold == 640


def test_deepspeed_rejects_a_batch_size_for_another_world_size():
    """train_batch_size is checked against the real world size (1 here)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    with pytest.raises(AssertionError, match="train_batch_size"):
        DeepSpeedConfig(deepspeed_config(2, 2, 1, 4, "fp32", 1.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage": 1}, "stage must be 2 or 3"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"micro_batch_per_worker": 0}, "micro_batch_per_worker"),
        ({"grad_accum": 1.5}, "grad_accum"),
        ({"world_size": True}, "world_size"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
        ({"hidden_size": 0}, "hidden_size"),
    ],
)
def test_invalid_arguments_are_config_errors(kwargs, message):
    args = {"stage": 3, "micro_batch_per_worker": 1, "grad_accum": 1, "world_size": 1, "precision": "bf16",
            "max_grad_norm": 1.0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        deepspeed_config(**args)


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory):
    """Run tests/ds_zero_worker.py on 2 CPU ranks; the per-rank JSON results and the output dir."""
    out = tmp_path_factory.mktemp("ds_zero")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks, out


def _strictly_decreasing(values):
    return all(b < a for a, b in zip(values, values[1:]))


def test_zero3_partitions_parameters_and_trains(torchrun_results):
    ranks, out = torchrun_results
    config = tiny_llama_config()
    full_shapes = {name: tuple(p.shape) for name, p in AutoModelForCausalLM.from_config(config).named_parameters()}
    persistence = 10 * HIDDEN

    for rank in ranks:
        zero3 = rank["zero3"]
        assert rank["world_size"] == 2
        assert set(zero3["at_build"]) == set(full_shapes)
        for name, (local, full, shard) in zero3["at_build"].items():
            # Built under HfDeepSpeedConfig: every parameter is created partitioned.
            assert local == 0 and full == math.prod(full_shapes[name]) and shard == math.ceil(full / 2), name
        for name, (local, full, shard) in zero3["after_training"].items():
            # Small parameters (the norms) persist whole on every rank; the rest stay partitioned.
            assert local == (full if full < persistence else 0), name
            assert shard == math.ceil(full / 2), name
        assert sum(full for _, full, _ in zero3["after_training"].values()) == count_parameters(config)
        assert zero3["global_steps"] == 3
        assert zero3["saved_16bit"] is True
    mean_losses = [sum(values) / 2 for values in zip(*(r["zero3"]["losses"] for r in ranks))]
    assert _strictly_decreasing(mean_losses), mean_losses

    # stage3_gather_16bit_weights_on_model_save: rank 0 saved the whole, unpartitioned model.
    state = torch.load(out / "zero3.bin", map_location="cpu")
    assert {name: tuple(t.shape) for name, t in state.items()} == full_shapes


def test_zero2_shards_optimizer_state_and_trains_with_grad_accum(torchrun_results):
    ranks, _ = torchrun_results
    total = count_parameters(tiny_llama_config())

    for rank in ranks:
        zero2 = rank["zero2"]
        assert zero2["global_steps"] == 3  # 6 micro-batches, grad_accum 2
        assert zero2["param_dtype"] == "torch.bfloat16"
        assert zero2["local_numel"] == total  # ZeRO-2 keeps full (bf16) weights on every rank
        assert total / 2 <= zero2["fp32_partition_numel"] < total  # ...but only its shard of fp32 master weights
    assert ranks[0]["zero2"]["param_checksum"] == ranks[1]["zero2"]["param_checksum"]
    mean_losses = [sum(values) / 2 for values in zip(*(r["zero2"]["losses"] for r in ranks))]
    assert _strictly_decreasing(mean_losses), mean_losses
