"""Parameter counts, FLOPs per token, the peak table and MFU (ray_pipeline.training.flops)."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.training.flops import (
    PEAK_TFLOPS,
    count_parameters,
    flops_per_token,
    matmul_parameters,
    mfu,
    peak_flops,
)

torch.set_num_threads(1)

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)

# One tiny config per supported layout: GQA, tied/untied lm_head, biases, head_dim != hidden/heads,
# Gemma 2/3's four norms per layer, Qwen3/Gemma3 q/k norms, Phi-3's fused projections.
TINY_CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**TINY),
    "llama-tied-biases": lambda: transformers.LlamaConfig(**TINY, tie_word_embeddings=True, attention_bias=True,
                                                          mlp_bias=True),
    "mistral": lambda: transformers.MistralConfig(**TINY),
    "qwen2": lambda: transformers.Qwen2Config(**TINY),
    "qwen3": lambda: transformers.Qwen3Config(**TINY, head_dim=12),
    "gemma": lambda: transformers.GemmaConfig(**TINY, head_dim=12),
    "gemma2": lambda: transformers.Gemma2Config(**TINY, head_dim=12),
    "gemma3": lambda: transformers.Gemma3TextConfig(**TINY, head_dim=12),
    "phi3": lambda: transformers.Phi3Config(**TINY),
}


def llama2_7b():
    return transformers.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                    num_attention_heads=32, num_key_value_heads=32)


def gemma3_270m():
    """The text config of Gemma 3 270M (as in its config.json)."""
    return transformers.Gemma3TextConfig(
        vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, sliding_window=512, tie_word_embeddings=True,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
    )


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_counts_from_config_match_the_built_model(name):
    config = TINY_CONFIGS[name]()
    model = transformers.AutoModelForCausalLM.from_config(config)
    distinct = {id(p): p.numel() for p in model.parameters()}
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))

    assert count_parameters(config) == count_parameters(model) == sum(distinct.values())
    assert matmul_parameters(config) == matmul_parameters(model) == linear_weights


def test_tied_lm_head_is_stored_once_but_counted_as_a_matmul():
    untied = transformers.LlamaConfig(**TINY)
    tied = transformers.LlamaConfig(**TINY, tie_word_embeddings=True)
    embedding = TINY["vocab_size"] * TINY["hidden_size"]

    assert count_parameters(untied) - count_parameters(tied) == embedding
    assert matmul_parameters(untied) == matmul_parameters(tied)
    norms = 5 * TINY["hidden_size"]  # 2 per layer + the final norm
    assert count_parameters(tied) - matmul_parameters(tied) == norms  # the shared matrix is the lm_head
    assert count_parameters(untied) - matmul_parameters(untied) == embedding + norms


def test_published_parameter_counts():
    # Llama-2-7B: 6,738,415,616 parameters; Gemma 3 270M: 268,098,176.
    assert count_parameters(llama2_7b()) == 6_738_415_616
    assert matmul_parameters(llama2_7b()) == 6_738_415_616 - 32000 * 4096 - 65 * 4096  # no embedding, no norms
    assert count_parameters(gemma3_270m()) == 268_098_176


def test_flops_per_token_formula_on_llama2_7b():
    n = 6_607_077_376
    assert flops_per_token(llama2_7b(), 4096) == 6 * n + 12 * 32 * 4096 * 4096
    assert flops_per_token(llama2_7b(), 1) == 6 * n + 12 * 32 * 4096


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_flops_per_token_equals_the_matmul_flops_of_a_training_step(name):
    """Eager attention runs every matmul the formula counts: forward + backward, measured by torch."""
    config = TINY_CONFIGS[name]()
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    batch, seq_len = 3, 20
    ids = torch.randint(3, TINY["vocab_size"], (batch, seq_len))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()

    assert counter.get_total_flops() == batch * seq_len * flops_per_token(config, seq_len)


def test_sliding_window_layers_count_only_the_window():
    config = gemma3_270m()
    n = matmul_parameters(config)
    per_key = 12 * 4 * 256  # 12 * heads * head_dim

    assert n == 268_042_240
    # 15 sliding layers see min(seq_len, 512) keys, 3 global layers see seq_len.
    assert flops_per_token(config, 2048) == 6 * n + per_key * (15 * 512 + 3 * 2048)
    assert flops_per_token(config, 256) == 6 * n + per_key * 18 * 256
    mistral = transformers.MistralConfig(**TINY, sliding_window=8)  # one window on every layer
    assert flops_per_token(mistral, 20) == 6 * matmul_parameters(mistral) + 12 * 4 * 8 * 2 * 8


def test_multimodal_config_uses_its_text_config():
    text = gemma3_270m()
    full = transformers.Gemma3Config(text_config=text.to_dict(), tie_word_embeddings=True)
    assert count_parameters(full) == count_parameters(text)
    assert flops_per_token(full, 1024) == flops_per_token(text, 1024)


def test_unsupported_configs_and_bad_seq_len_are_config_errors():
    with pytest.raises(ConfigError, match="mixture of experts"):
        flops_per_token(transformers.MixtralConfig(**TINY), 16)
    with pytest.raises(ConfigError, match="lacks"):
        count_parameters(transformers.GPT2Config())
    with pytest.raises(ConfigError, match="seq_len"):
        flops_per_token(llama2_7b(), 0)


@pytest.mark.parametrize(
    ("device", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100 80GB PCIe", 312),
        ("NVIDIA L40S", 362),
        ("NVIDIA L40", 181),
        ("NVIDIA A10G", 125),
        ("NVIDIA L4", 121),
    ],
)
def test_peak_flops_of_known_devices(device, tflops):
    assert peak_flops(device) == tflops * 1e12
    assert peak_flops(device.lower(), "float16") == tflops * 1e12
    assert peak_flops(device, torch.bfloat16) == tflops * 1e12


def test_peak_flops_unknown_device_float32_and_bad_dtype():
    assert peak_flops("cpu") is None
    assert peak_flops("Intel(R) Xeon(R) Platinum") is None
    assert peak_flops("NVIDIA H100 80GB HBM3", "float32") is None
    with pytest.raises(ConfigError, match="dtype"):
        peak_flops("NVIDIA H100 80GB HBM3", "int8")
    assert set(PEAK_TFLOPS) >= {"H100", "H100 PCIe", "H200", "A100", "L40S", "A10G", "L4"}


def test_mfu():
    per_token = flops_per_token(llama2_7b(), 4096)
    peak = peak_flops("NVIDIA A100-SXM4-80GB")
    # 8 A100s at 3,000 tokens/s each.
    value = mfu(24_000, per_token, peak, 8)
    assert value == pytest.approx(3_000 * per_token / 312e12)
    assert 0.4 < value < 0.5
    assert mfu(24_000, per_token, None, 8) is None
    with pytest.raises(ValueError):
        mfu(1.0, per_token, peak, 0)
