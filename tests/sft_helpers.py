"""Tiny, offline tokenizer and model builders for the SFT tests.

``tiny_tokenizer()`` is a byte-level BPE trained on a few strings (any text
encodes, and decoding gives the text back), wrapped in a
``PreTrainedTokenizerFast`` with ``<bos>``/``<eos>``/``<pad>``/``<unk>`` and a
small chat template::

    <bos><|user|>{user}<|end|>\\n<|assistant|>{assistant}<|end|>\\n

``tiny_llama(vocab_size)`` is a 2-layer Llama built from a config (random
weights, fp32, eval mode).
"""

from __future__ import annotations

from functools import lru_cache

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
_CORPUS = [
    "Write a Python function that returns the largest number in a list.",
    "def largest(xs):\n    return max(xs)\n",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\n### Input:\n### Response:\n",
    "The answer is 42. Add two numbers and print the sum of the list.",
    "You are a helpful assistant. Hello, how are you today?",
]


@lru_cache(maxsize=None)
def _tokenizer_json(add_bos: bool) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if add_bos:
        bos = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
        )
    return tok.to_str()


def tiny_tokenizer(add_bos: bool = True, chat_template: str | None = CHAT_TEMPLATE):
    """A fresh byte-level BPE ``PreTrainedTokenizerFast`` (~300 ids); ``add_bos``: it prepends ``<bos>`` itself."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(add_bos)),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llama(vocab_size: int, seed: int = 0, attn_implementation: str = "sdpa"):
    """A 2-layer Llama from a config (hidden 32, 4 heads, GQA 2 kv heads), fp32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn_implementation)
    return model.eval()


def save_tiny_model(directory, seed: int = 0, tie_word_embeddings: bool = False):
    """A tiny Llama + tokenizer saved in Hugging Face format at ``directory`` (what an SFT job loads)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


CONVERSATIONS = [
    ("Write a Python function that returns the largest number in a list.", "def largest(xs):\n    return max(xs)"),
    ("Add two numbers and print the sum.", "a, b = 2, 3\nprint(a + b)"),
    ("Say hello.", "Hello!"),
    ("Reverse a string s in Python.", "s[::-1]"),
    ("What is the answer?", "The answer is 42."),
    ("Print the numbers from 1 to 3, one per line, using a loop over range(1, 4).", "for i in range(1, 4):\n    print(i)"),
    ("Return the length of a list.", "len(xs)"),
    ("Square a number x.", "x * x"),
]


def seed_rows():
    """The conversations above as seed records (what the SFT data reader yields)."""
    return [{"instruction": q, "input": "", "output": a} for q, a in CONVERSATIONS]
