"""Throughput of the uncertainty scorer (HF backend): instructions scored per second.

Each instruction is scored with N_U perturbed copies (default 10), so one
instruction is 1 + N_U sequences through the model. Pairs are real Code Alpaca
instruction + output pairs from ``../shared``. Imports only the scorer and the
uncertainty module (no Ray, no vLLM), so it runs on any box with torch and
transformers:

    python benchmarks/scorer_throughput.py --repeats 2                      # CPU, fp32
    python benchmarks/scorer_throughput.py --device cuda --dtype bfloat16 --batch-sizes 16 32 64 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ray_pipeline.methods.tacie.config import ScorerConfig
from ray_pipeline.methods.tacie.uncertainty.hf import HFScorer
from ray_pipeline.methods.tacie.uncertainty.score import perturb, sequence_probability, uncertainty

CODE_ALPACA = Path(__file__).resolve().parents[2] / "shared/data/seeds/codealpaca/code_alpaca_2k.json"


def load_pairs(path: Path, n: int) -> list[tuple[str, str]]:
    """The first ``n`` Code Alpaca rows with an output: (instruction [+ blank line + input], output)."""
    pairs = []
    for row in json.loads(path.read_text(encoding="utf-8")):
        if row.get("output", "").strip():
            instruction = row["instruction"] + (f"\n\n{row['input']}" if row.get("input", "").strip() else "")
            pairs.append((instruction, row["output"]))
        if len(pairs) == n:
            break
    return pairs


def score(scorer: HFScorer, pairs: list[tuple[str, str]], n_u: int, drop_prob: float) -> list[float]:
    """u of every pair: its 1 + N_U sequences all go to the scorer in one call, as in ScorerStage."""
    sequences = []
    for i, (instruction, response) in enumerate(pairs):
        sequences += [(c, response) for c in [instruction, *perturb(instruction, n_u, drop_prob, seed=i)]]
    logprobs = scorer.response_logprobs(sequences)
    out = []
    for k in range(len(pairs)):
        group = logprobs[k * (n_u + 1) : (k + 1) * (n_u + 1)]
        common = min(len(lp) for lp in group)
        q = [sequence_probability(lp[:common]) for lp in group]
        out.append(uncertainty(q[0], q[1:]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CODE_ALPACA)
    parser.add_argument("--instructions", type=int, default=32)
    parser.add_argument("--perturbations", type=int, default=10, help="N_U")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--model", default=None, help="default: the bundled Gemma 3 270M")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1, help="passes per batch size (round robin); the fastest counts")
    args = parser.parse_args()

    pairs = load_pairs(args.data, args.instructions)
    cfg = ScorerConfig(
        model=args.model, num_perturbations=args.perturbations, device=args.device, dtype=args.dtype, max_length=args.max_length
    )
    started = time.perf_counter()
    scorer = HFScorer(cfg)
    load_s = time.perf_counter() - started
    encoded = scorer.encode(pairs)
    prompt_tokens = sum(e.start for e in encoded) / len(encoded)
    response_tokens = sum(len(e.ids) - e.start for e in encoded) / len(encoded)
    print(
        f"model {scorer.model.path} on {scorer.device} ({str(scorer.dtype).removeprefix('torch.')}, "
        f"{torch.get_num_threads()} threads), loaded in {load_s:.1f} s"
    )
    print(
        f"{len(pairs)} Code Alpaca pairs, N_U = {args.perturbations} ({args.perturbations + 1} sequences each); "
        f"mean prompt {prompt_tokens:.0f} tokens, mean response {response_tokens:.0f} tokens"
    )
    score(scorer, pairs[:2], 1, 0.2)  # warm-up
    times: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    for _ in range(args.repeats):  # round robin, so that a noisy neighbour does not hit one batch size only
        for batch_size in args.batch_sizes:
            scorer.cfg = cfg.model_copy(update={"batch_size": batch_size})
            if scorer.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            u = score(scorer, pairs, args.perturbations, cfg.drop_prob)
            times[batch_size].append(time.perf_counter() - t0)
            print(f"  batch_size {batch_size}: {times[batch_size][-1]:.1f} s (mean u {sum(u) / len(u):.4f})", flush=True)
    results = []
    for batch_size, runs in times.items():
        per_s = len(pairs) / min(runs)
        results.append((per_s, batch_size))
        print(
            f"batch_size {batch_size:4d}: {min(runs):7.1f} s, {per_s:6.2f} instructions/s, "
            f"{per_s * (args.perturbations + 1):7.1f} sequences/s"
        )
    best, batch_size = max(results)
    print(f"best: batch_size {batch_size} at {best:.2f} instructions/s")


if __name__ == "__main__":
    main()
