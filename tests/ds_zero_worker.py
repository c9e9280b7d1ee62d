"""torchrun worker for tests/training/test_deepspeed_config.py (CPU, gloo): ZeRO-3 then ZeRO-2 on a tiny Llama.

Usage: torchrun --standalone --nproc-per-node 2 tests/ds_zero_worker.py OUT_DIR
Each rank writes OUT_DIR/rank<r>.json; rank 0 also saves the ZeRO-3 16-bit model there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

from ray_pipeline.training.deepspeed_config import deepspeed_config

HIDDEN = 64
STEPS = 3
LR = 1e-2


def tiny_llama_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=500, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def fixed_batch(rank: int, micro: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234 + rank)
    return torch.randint(3, 500, (micro, 16), generator=generator)


def train(engine, batch: torch.Tensor, accum: int) -> list[float]:
    """STEPS optimizer steps of ``accum`` micro-batches each; the loss of each step's first micro-batch."""
    losses = []
    for _ in range(STEPS):
        for micro_step in range(accum):
            loss = engine(input_ids=batch, labels=batch).loss
            if micro_step == 0:
                losses.append(loss.item())
            engine.backward(loss)
            engine.step()
    return losses


def partition_report(module) -> dict[str, list[int]]:
    """name -> [local numel, full numel (ds_numel), numel of this rank's partition]."""
    return {name: [p.numel(), int(p.ds_numel), int(p.ds_tensor.numel())] for name, p in module.named_parameters()}


def run_zero3(rank: int, world: int, out: Path) -> dict:
    config = deepspeed_config(3, micro_batch_per_worker=2, grad_accum=1, world_size=world, precision="fp32",
                              max_grad_norm=1.0, hidden_size=HIDDEN)
    hf_config = HfDeepSpeedConfig(config)  # alive while the model is built: parameters are created partitioned
    torch.manual_seed(0)  # fixed initial weights: the loss curve is the same on every run
    model = AutoModelForCausalLM.from_config(tiny_llama_config())
    at_build = partition_report(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    losses = train(engine, fixed_batch(rank, 2), accum=1)
    result = {"at_build": at_build, "after_training": partition_report(engine.module), "losses": losses,
              "global_steps": engine.global_steps, "saved_16bit": engine.save_16bit_model(str(out), "zero3.bin")}
    del engine, optimizer, model, hf_config
    unset_hf_deepspeed_config()
    return result


def run_zero2(rank: int, world: int) -> dict:
    config = deepspeed_config(2, micro_batch_per_worker=2, grad_accum=2, world_size=world, precision="bf16",
                              max_grad_norm=1.0, hidden_size=HIDDEN)
    torch.manual_seed(0)  # the same initial weights on every rank
    model = AutoModelForCausalLM.from_config(tiny_llama_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    losses = train(engine, fixed_batch(rank, 2), accum=2)
    params = list(engine.module.parameters())
    return {"losses": losses, "global_steps": engine.global_steps,
            "param_dtype": str(params[0].dtype),
            "local_numel": sum(p.numel() for p in params),
            # ZeRO-2 keeps only this rank's shard of the fp32 master weights (and of the Adam states).
            "fp32_partition_numel": sum(p.numel() for p in engine.optimizer.single_partition_of_fp32_groups),
            # Identical on every rank iff gradients were reduced and the updated shards gathered.
            "param_checksum": float(sum(p.double().sum() * (i + 1) for i, p in enumerate(params)))}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {"rank": rank, "world_size": world, "zero3": run_zero3(rank, world, out), "zero2": run_zero2(rank, world)}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
