"""Embedded-teacher throughput through the whole pipeline vs raw ``vllm.LLM.generate``.

Both sides answer the same fusion prompts (rendered from Code Alpaca seed pairs
in ../shared, or the bundled sample) with the same sampling parameters and
per-request seeds, on the same converted Gemma 3 270M:

- pipeline: the embedded ``vllm serve`` + Ray Data ``map_batches`` over the
  TeacherStage actor + the async OpenAI-compatible client, exactly as
  ``fusion run`` drives it (server start and Ray start excluded, a short
  warm-up first);
- raw: ``vllm.LLM`` in this process with the server's engine settings, one
  ``generate`` call over all prompts (engine load excluded, a short warm-up first).

Prints completion tokens per second for each and the ratio. Goal: >= 80%.

    python benchmarks/embedded_throughput.py [--prompts 64] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED_SEEDS = REPO.parent / "shared/data/seeds/codealpaca/code_alpaca_2k.json"
BUNDLED_SEEDS = REPO / "ray_pipeline/data/seeds/quickstart.jsonl"


def fusion_rows(n: int, max_tokens: int, model: str) -> list[dict]:
    from ray_pipeline.core.config import SamplingConfig, SeedSource
    from ray_pipeline.methods.fusion.pairing import PairSampler
    from ray_pipeline.core.seeds import seed_prompt
    from ray_pipeline.teachers.calls import RequestBuilder
    from ray_pipeline.prompts import load_template
    from ray_pipeline.core.seeds import load_seeds

    path = SHARED_SEEDS if SHARED_SEEDS.is_file() else BUNDLED_SEEDS
    seeds = load_seeds([SeedSource(path=str(path), limit=200)]).records
    stage = RequestBuilder(load_template("if_fusion@v1"), SamplingConfig(temperature=0.0, max_tokens=max_tokens), model, {})
    rows = []
    for k, (i, j) in enumerate(PairSampler([s["language"] for s in seeds], seed=0).draw_many(n)):
        row = stage.request(k, instruction_1=seed_prompt(seeds[i]), instruction_2=seed_prompt(seeds[j]))
        rows.append({"attempt": k, **row})
    return rows


def run_pipeline(rows: list[dict], concurrency: int) -> tuple[float, int]:
    import ray

    from ray_pipeline.core.config import EmbeddedTeacherConfig
    from ray_pipeline.core.executor import connect, run_stage
    from ray_pipeline.teachers.factory import backend_for, teacher_session
    from ray_pipeline.teachers.rows import Answer
    from ray_pipeline.teachers.stage import TeacherStage

    cfg = EmbeddedTeacherConfig(concurrency=concurrency)
    with tempfile.TemporaryDirectory() as tmp, teacher_session(cfg, Path(tmp)) as stage_cfg:
        connect(None)
        kwargs = {"teacher_cfg": stage_cfg, "cache_dir": str(Path(tmp) / "cache"), "prefix": "t"}
        opts = {"batch_size": concurrency, "num_actors": 1, "resources": backend_for(stage_cfg).stage_resources(0.25)}
        run_stage(rows[:4], TeacherStage, kwargs, **opts)  # warm-up: server, actor start, client
        t0 = time.perf_counter()
        out = [Answer.read(r, "t") for r in run_stage(rows, TeacherStage, kwargs, **opts)]
        elapsed = time.perf_counter() - t0
        errors = [a.error for a in out if a.error]
        if errors:
            raise SystemExit(f"pipeline: {len(errors)} calls failed, first: {errors[0]}")
        tokens = sum(a.completion_tokens for a in out)
    ray.shutdown()
    return elapsed, tokens


def run_raw(rows: list[dict]) -> tuple[float, int]:
    from vllm import LLM, SamplingParams

    from ray_pipeline.core.config import EmbeddedTeacherConfig
    from ray_pipeline.core.model_files import chat_template_text, ensure_embedded_model
    from ray_pipeline.teachers.embedded import engine_kwargs
    from ray_pipeline.teachers.rows import request_from_row

    llm = LLM(str(ensure_embedded_model()), **engine_kwargs(EmbeddedTeacherConfig()))
    requests = [request_from_row(r["messages"], r["sampling"]) for r in rows]  # what the stage actor sends
    conversations = [request.message_dicts() for request in requests]
    params = [SamplingParams(temperature=q.sampling.temperature, top_p=q.sampling.top_p,
                             max_tokens=q.sampling.max_tokens, seed=q.sampling.seed) for q in requests]
    template = chat_template_text()
    llm.chat(conversations[:4], params[:4], chat_template=template, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.chat(conversations, params, chat_template=template, use_tqdm=False)
    elapsed = time.perf_counter() - t0
    return elapsed, sum(len(o.outputs[0].token_ids) for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=64, help="in-flight requests of the pipeline's client")
    args = ap.parse_args()
    rows = fusion_rows(args.prompts, args.max_tokens, "gemma3-270m")
    p_s, p_tok = run_pipeline(rows, args.concurrency)
    r_s, r_tok = run_raw(rows)
    p_tps, r_tps = p_tok / p_s, r_tok / r_s
    print(f"\nprompts={len(rows)} max_tokens={args.max_tokens} temperature=0 concurrency={args.concurrency}")
    print(f"{'path':<48}{'seconds':>9}{'tokens':>8}{'tokens/s':>10}")
    print(f"{'pipeline (Ray Data + vllm serve + HTTP client)':<48}{p_s:>9.1f}{p_tok:>8}{p_tps:>10.1f}")
    print(f"{'raw vllm.LLM.generate (same prompts)':<48}{r_s:>9.1f}{r_tok:>8}{r_tps:>10.1f}")
    ratio = p_tps / r_tps
    verdict = "MET" if ratio >= 0.8 else "NOT MET"
    print(f"pipeline / raw = {ratio:.2f}  goal (>= 0.80): {verdict}")


if __name__ == "__main__":
    main()
