"""Parameter counts, training FLOPs per token and model FLOPs utilisation (MFU).

Accounting of PaLM (Chowdhery et al. 2022, appendix B) and Megatron-LM
(Narayanan et al. 2021, section 5.1): one trained token costs ::

    flops_per_token = 6 * N + 12 * sum over layers l of (n_heads * head_dim * ctx_l)

* ``N`` (:func:`matmul_parameters`): weights that multiply activations, i.e. every
  linear projection (q, k, v, o with grouped-query k/v, the 3 matrices of the gated
  MLP) and the lm_head, counted even when it is tied to the input embedding. The
  embedding lookup, norms and biases do no matmul and are not in ``N``.
  6 = 2 FLOPs per multiply-add x 3 (forward, backward to inputs, backward to weights).
* The attention term is Q.K^T and scores.V: 2 matmuls x 2 FLOPs x 3 passes against
  ``ctx_l`` keys per query. ``ctx_l = seq_len``, or ``min(seq_len, sliding_window)``
  on a sliding-window layer. As in PaLM the causal mask is not credited (a query is
  counted against all ``ctx_l`` keys) and activation recomputation is not counted.

``MFU = tokens_per_second * flops_per_token / (peak_flops * num_devices)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray_pipeline.core.errors import ConfigError

# Dense (no 2:4 sparsity) bf16/fp16 tensor-core peak in TFLOP/s, from NVIDIA datasheets,
# keyed by a substring of torch.cuda.get_device_name(); the longest matching key wins.
PEAK_TFLOPS: dict[str, float] = {
    "H100": 989.0,  # SXM (device name "NVIDIA H100 80GB HBM3")
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "A10G": 125.0,
    "A10": 125.0,
    "L4": 121.0,
}

_HALF_DTYPES = frozenset({"bfloat16", "bf16", "float16", "fp16", "half"})
_FULL_DTYPES = frozenset({"float32", "fp32", "float", "tf32"})
_MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
# model_type -> (hidden-size norms per layer, per-head q/k norms)
_NORM_LAYOUT = {"gemma2": (4, False), "gemma3_text": (4, True), "gemma3": (4, True), "qwen3": (2, True)}


@dataclass(frozen=True)
class _Shape:
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    attention_bias: bool
    qkv_bias: bool
    mlp_bias: bool


def _is_module(obj: Any) -> bool:
    return callable(getattr(obj, "named_parameters", None)) and callable(getattr(obj, "modules", None))


def _text_config(config: Any) -> Any:
    """The decoder config: ``config.get_text_config()`` for multimodal configs, else ``config``."""
    if _is_module(config):
        config = config.config
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _shape(config: Any) -> _Shape:
    """The dimensions of a Llama-style decoder (Llama, Mistral, Qwen2/3, Gemma 1-3, Phi-3)."""
    text = _text_config(config)
    if any(getattr(text, name, None) for name in _MOE_FIELDS):
        raise ConfigError(f"FLOPs accounting supports dense decoders only; {text.model_type!r} is a mixture of experts")
    missing = [
        name
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if not isinstance(getattr(text, name, None), int)
    ]
    if missing:
        raise ConfigError(f"model config {getattr(text, 'model_type', type(text).__name__)!r} lacks {', '.join(missing)}")
    heads = text.num_attention_heads
    # Tied unless the config says otherwise (PretrainedConfig's default).
    tied = bool(getattr(config, "tie_word_embeddings", getattr(text, "tie_word_embeddings", True)))
    model_type = str(getattr(text, "model_type", ""))
    return _Shape(
        model_type=model_type,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vocab=text.vocab_size,
        tied=tied,
        attention_bias=bool(getattr(text, "attention_bias", False)),
        qkv_bias=model_type == "qwen2",  # Qwen2 always has q/k/v biases (no o bias)
        mlp_bias=bool(getattr(text, "mlp_bias", False)),
    )


def _numel(param: Any) -> int:
    """Full element count, also for a ZeRO-3 partitioned parameter (local numel 0)."""
    return int(getattr(param, "ds_numel", None) or param.numel())


def _layer_matmul(s: _Shape) -> int:
    attention = s.hidden * s.head_dim * (2 * s.heads + 2 * s.kv_heads)  # q, o + k, v
    return attention + 3 * s.hidden * s.intermediate  # gate, up, down


def count_parameters(model_or_config: Any) -> int:
    """All parameters the model stores (a tied embedding once).

    A model (``torch.nn.Module``): the sum over its distinct parameters, full size
    also under ZeRO-3. A config: computed from it for Llama-style decoders
    (embedding, attention with GQA, gated MLP, biases, RMSNorms incl. Gemma 2/3's
    4 norms per layer and Qwen3/Gemma3 q/k norms, final norm, untied lm_head).
    See :func:`matmul_parameters` for the non-embedding count of the FLOPs formula.
    """
    if _is_module(model_or_config):
        return sum(_numel(p) for p in model_or_config.parameters())  # parameters() skips tied duplicates
    s = _shape(model_or_config)
    norms_per_layer, qk_norm = _NORM_LAYOUT.get(s.model_type, (2, False))
    layer = _layer_matmul(s) + norms_per_layer * s.hidden + (2 * s.head_dim if qk_norm else 0)
    if s.attention_bias:
        layer += s.head_dim * (s.heads + 2 * s.kv_heads) + s.hidden
    elif s.qkv_bias:
        layer += s.head_dim * (s.heads + 2 * s.kv_heads)
    if s.mlp_bias:
        layer += 2 * s.intermediate + s.hidden
    embeddings = s.vocab * s.hidden * (1 if s.tied else 2)
    return s.layers * layer + s.hidden + embeddings


def matmul_parameters(model_or_config: Any) -> int:
    """``N`` of ``6N``: the weights of every linear projection, lm_head included even when tied.

    Excludes the embedding lookup, norms and biases. A model: the sum of the weights of
    its ``torch.nn.Linear`` modules. A config: ``layers * (hidden * head_dim *
    (2 * heads + 2 * kv_heads) + 3 * hidden * intermediate) + vocab * hidden``.
    """
    if _is_module(model_or_config):
        import torch

        return sum(_numel(m.weight) for m in model_or_config.modules() if isinstance(m, torch.nn.Linear))
    s = _shape(model_or_config)
    return s.layers * _layer_matmul(s) + s.vocab * s.hidden


def _attention_contexts(config: Any, seq_len: int) -> list[int]:
    """Keys per query on each layer: ``seq_len``, capped by the window on sliding layers."""
    text = _text_config(config)
    layers = text.num_hidden_layers
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None)
    if not window:
        return [seq_len] * layers
    if layer_types is None:  # Mistral-style: one window on every layer
        return [min(seq_len, window)] * layers
    return [min(seq_len, window) if kind == "sliding_attention" else seq_len for kind in layer_types]


def flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token for sequences of ``seq_len`` tokens.

    ``6 * N + 12 * sum_l(n_heads * head_dim * ctx_l)`` (PaLM appendix B / Megatron-LM
    accounting; see the module docstring). ``config``: a transformers config (or a model).
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
    s = _shape(config)
    attention = 12 * s.heads * s.head_dim * sum(_attention_contexts(config, seq_len))
    return float(6 * matmul_parameters(config) + attention)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).lower().removeprefix("torch.")


def peak_flops(device_name: str, dtype: str = "bfloat16") -> float | None:
    """Dense peak FLOP/s of one device for ``dtype`` from :data:`PEAK_TFLOPS`.

    ``device_name`` as ``torch.cuda.get_device_name()`` reports it; the longest key
    it contains (case-insensitive) wins, so "H100 PCIe" beats "H100" and "L40S"
    beats "L4". None for an unknown device (e.g. a CPU) and for float32, whose
    peak depends on whether TF32 is enabled.
    """
    name = _dtype_name(dtype)
    if name in _FULL_DTYPES:
        return None
    if name not in _HALF_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r} for peak FLOPs (expected bfloat16, float16 or float32)")
    device = " ".join(str(device_name).lower().split())
    matches = [key for key in PEAK_TFLOPS if key.lower() in device]
    if not matches:
        return None
    return PEAK_TFLOPS[max(matches, key=len)] * 1e12


def mfu(tokens_per_second: float, flops_per_token: float, peak: float | None, num_devices: int) -> float | None:
    """Model FLOPs utilisation: ``tokens_per_second * flops_per_token / (peak * num_devices)``.

    ``tokens_per_second`` is the throughput of all ``num_devices`` together; ``peak``
    is one device's FLOP/s (:func:`peak_flops`). None when the peak is unknown.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    if peak is None or peak <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak * num_devices)
