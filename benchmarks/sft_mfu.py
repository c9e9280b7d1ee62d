"""Training throughput and model FLOPs utilisation (MFU) of the SFT loop, without Ray.

The same loop as ``fusion run`` with ``kind: sft`` (``ray_pipeline.training.loop.train``)
runs under ``torchrun`` (or as one process) through a ``LocalSession``, on a Llama-shaped
model built from a config (no download: random weights) and full-length random token
sequences, every token trained. It needs torch and transformers (and deepspeed for the
ZeRO strategies); no Ray, no vLLM, no pyarrow: what the GPU machine has.

    # CPU here: a tiny model, two gloo ranks
    torchrun --nproc-per-node 2 benchmarks/sft_mfu.py --model tiny --strategy ddp --precision fp32
    # one H100/H200, DeepSpeed ZeRO-2 and bf16 as the papers train
    torchrun --nproc-per-node 1 benchmarks/sft_mfu.py --model 1b --strategy deepspeed_zero2 --seq-len 4096 --micro-batch 4
    torchrun --nproc-per-node 1 benchmarks/sft_mfu.py --model 3b --strategy deepspeed_zero2 --seq-len 4096 --micro-batch 2 --gradient-checkpointing

MFU = achieved model FLOP/s / (devices x dense bf16 peak), model FLOPs per token
= 6N + 12 * layers * heads * head_dim * seq_len (``ray_pipeline/training/flops.py``).
The first ``--warmup-steps`` steps (allocator, kernels, NCCL set-up) are not counted.
Results are printed and written to ``benchmarks/results/sft_mfu-<device>-<model>-<strategy>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Llama-architecture shapes (Llama 3.2 1B / 3B, Llama 3 8B) and small ones for CPUs.
MODELS = {
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=32000),
    "160m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4, vocab_size=32000),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
}


def synthetic_sequences(n: int, seq_len: int, vocab: int, seed: int):
    """n full-length random sequences, every token trained."""
    import torch

    from ray_pipeline.training.packing import Sequences

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq_len), generator=g).tolist()
    return Sequences.from_lists(ids, ids)


def build_model(name: str, directory: Path, seq_len: int, rank: int) -> None:
    """Rank 0 writes the config-built model (bf16 weights) for every rank to load."""
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, LlamaConfig

    if rank == 0 and not (directory / "config.json").is_file():
        config = LlamaConfig(max_position_embeddings=max(seq_len, 2048), **MODELS[name])
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(directory)
        del model
    if dist.is_initialized():
        dist.barrier()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p.add_argument("--strategy", choices=["ddp", "deepspeed_zero2", "deepspeed_zero3"], default="ddp")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--attn", default=None, help="attn_implementation: sdpa (default), flash_attention_2, eager")
    p.add_argument("--workdir", default=None, help="where the built model goes (default: $TMPDIR/sft-mfu)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()

    import torch

    from ray_pipeline.training.loop import TrainSpec, train
    from ray_pipeline.training.session import LocalSession

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work = Path(args.workdir or Path(tempfile.gettempdir()) / "sft-mfu")
    session = LocalSession(work / "checkpoints", keep=1)
    if session.rank == 0:  # a fresh run each time: no checkpoint of an earlier benchmark is resumed
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
    model_dir = work / f"model-{args.model}"
    build_model(args.model, model_dir, args.seq_len, session.rank)
    world = session.world_size
    steps = args.steps + args.warmup_steps
    n = args.micro_batch * args.accum * world * steps
    spec = TrainSpec(
        model_path=str(model_dir), strategy=args.strategy, precision=args.precision, learning_rate=1e-5,
        lr_scheduler="constant", warmup_ratio=0.0, epochs=1, per_device_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.accum, pad_token_id=0, seed=0, save_steps=10**9,
        attn_implementation=args.attn, gradient_checkpointing=args.gradient_checkpointing, save_model=False,
    )
    data = synthetic_sequences(n, args.seq_len, MODELS[args.model]["vocab_size"], seed=1)
    started = time.perf_counter()
    state = train(spec, data, session)
    wall = time.perf_counter() - started
    if not session.is_main:
        return 0
    timed = state.history[args.warmup_steps:]
    tokens = sum(h["tokens"] for h in timed)
    seconds = sum(h["seconds"] for h in timed)
    tflops = [h.get("tflops") for h in timed if h.get("tflops") is not None]
    mfu = [h.get("mfu") for h in timed if h.get("mfu") is not None]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {
        "device": device, "devices": world, "model": args.model, "params": state.total_params,
        "strategy": args.strategy, "precision": args.precision, "seq_len": args.seq_len,
        "micro_batch": args.micro_batch, "accum": args.accum, "gradient_checkpointing": args.gradient_checkpointing,
        "timed_steps": len(timed), "tokens_per_s": tokens / seconds if seconds else None,
        "tokens_per_s_per_device": tokens / seconds / world if seconds else None,
        "tflops_per_device": (sum(tflops) / len(tflops)) / world if tflops else None,
        "mfu": sum(mfu) / len(mfu) if mfu else None, "wall_s": round(wall, 1),
        "losses": [round(h["loss"], 4) for h in state.history],
    }
    print(json.dumps(result, indent=2))
    mfu_text = f"{100 * result['mfu']:.1f}%" if result["mfu"] is not None else "n/a (no known peak for this device/precision)"
    print(f"{device} x{world}: {args.model} ({state.total_params / 1e6:.0f}M params) {args.strategy} {args.precision} "
          f"seq {args.seq_len}: {result['tokens_per_s']:.0f} tokens/s, "
          f"{result['tflops_per_device'] or 0:.3f} TFLOP/s per device, MFU {mfu_text}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")
    (out / f"sft_mfu-{slug}-{args.model}-{args.strategy}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    code = main()
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
    sys.exit(code)
