"""SFT formatting: messages, chat / alpaca segments, labels, truncation, stats."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.prompts import load_template
from ray_pipeline.core.model_files import default_cache_root
from ray_pipeline.training.sft_format import (
    IGNORE_INDEX,
    FormatStats,
    TokenizedExample,
    render_segments,
    to_messages,
    tokenize_example,
    tokenize_examples,
)
from tests.sft_helpers import tiny_tokenizer

from tests.paths import REPO
GEMMA_TEMPLATE = REPO / "ray_pipeline/data/gemma3_chat_template.jinja"
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
RECORD = {"instruction": "Add two numbers.", "input": "3 and 4", "output": "The answer is 7."}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def trainable_text(tokenizer, example: TokenizedExample) -> str:
    return tokenizer.decode([i for i, y in zip(example.input_ids, example.labels) if y != IGNORE_INDEX])


def assert_labels_are_ids_or_ignored(example: TokenizedExample) -> None:
    assert len(example.labels) == len(example.input_ids)
    assert all(y in (i, IGNORE_INDEX) for i, y in zip(example.input_ids, example.labels))


# ------------------------------------------------------------------ to_messages


def test_to_messages_joins_input_and_adds_system():
    assert to_messages(RECORD) == [
        {"role": "user", "content": "Add two numbers.\n\n3 and 4"},
        {"role": "assistant", "content": "The answer is 7."},
    ]
    messages = to_messages({**RECORD, "input": ""}, system_prompt="Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add two numbers."},
        {"role": "assistant", "content": "The answer is 7."},
    ]


def test_to_messages_rejects_a_record_without_instruction():
    with pytest.raises(ConfigError, match="x1"):
        to_messages({"id": "x1", "instruction": "  ", "output": "y"})


# ------------------------------------------------------------------ chat


def test_chat_segments_train_on_the_assistant_turn_and_its_end_marker(tok):
    messages = to_messages(RECORD, system_prompt="Be brief.")
    segments = render_segments(messages, "chat", tok)
    assert segments == [
        ("<bos><|system|>Be brief.<|end|>\n<|user|>Add two numbers.\n\n3 and 4<|end|>\n<|assistant|>", False),
        ("The answer is 7.<|end|>\n", True),
    ]
    assert "".join(text for text, _ in segments) == tok.apply_chat_template(messages, tokenize=False)

    example = tokenize_example(messages, tok, "chat", 256)
    assert_labels_are_ids_or_ignored(example)
    assert not example.truncated
    assert trainable_text(tok, example) == "The answer is 7.<|end|>\n"
    assert example.input_ids.count(tok.bos_token_id) == 1 and example.input_ids[0] == tok.bos_token_id
    assert example.input_ids == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False).input_ids
    # the trainable tokens are one contiguous block at the end
    first = next(k for k, y in enumerate(example.labels) if y != IGNORE_INDEX)
    assert all(y != IGNORE_INDEX for y in example.labels[first:])
    assert tok.convert_ids_to_tokens(example.input_ids[first - 1]) == "<|assistant|>"


def test_chat_multi_turn_trains_every_assistant_turn_and_nothing_after(tok):
    messages = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Add 3 and 4."},
        {"role": "assistant", "content": "The answer is 7."},
        {"role": "user", "content": "Thanks"},
    ]
    segments = render_segments(messages, "chat", tok)
    assert [text for text, trainable in segments if trainable] == ["Hi.<|end|>\n", "The answer is 7.<|end|>\n"]
    assert segments[-1] == ("<|user|>Thanks<|end|>\n", False)
    assert [trainable for _, trainable in segments] == [False, True, False, True, False]
    example = tokenize_example(messages, tok, "chat", 256)
    assert trainable_text(tok, example) == "Hi.<|end|>\nThe answer is 7.<|end|>\n"


def test_chat_without_template_or_with_unstable_template_is_a_config_error():
    with pytest.raises(ConfigError, match="no chat template"):
        render_segments(to_messages(RECORD), "chat", tiny_tokenizer(chat_template=None))
    # renders the number of messages first: a longer conversation does not extend a shorter one
    unstable = "{{ messages|length }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="not prefix-stable"):
        render_segments(to_messages(RECORD), "chat", tiny_tokenizer(chat_template=unstable))
    failing = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(ConfigError, match="roles must alternate"):
        render_segments(to_messages(RECORD), "chat", tiny_tokenizer(chat_template=failing))


def test_unknown_format_is_a_config_error(tok):
    with pytest.raises(ConfigError, match="unknown SFT format"):
        render_segments(to_messages(RECORD), "plain", tok)


def test_gemma_template_trains_on_the_model_turn_with_end_of_turn():
    tokenizer = tiny_tokenizer(chat_template=GEMMA_TEMPLATE.read_text())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    messages = to_messages({**RECORD, "output": "  The answer is 7.\n"}, system_prompt="Be brief.")
    segments = render_segments(messages, "chat", tokenizer)
    assert segments == [
        ("<bos><start_of_turn>user\nBe brief.\n\nAdd two numbers.\n\n3 and 4<end_of_turn>\n<start_of_turn>model\n", False),
        ("The answer is 7.<end_of_turn>\n", True),  # the template strips the content
    ]
    example = tokenize_example(messages, tokenizer, "chat", 256)
    assert trainable_text(tokenizer, example) == "The answer is 7.<end_of_turn>\n"
    assert example.input_ids.count(tokenizer.bos_token_id) == 1


def _gemma_dir() -> Path | None:
    found = sorted(p for p in (default_cache_root() / "models").glob("gemma3-270m-*") if (p / "tokenizer.json").is_file())
    return found[0] if found else None


@pytest.mark.slow
@pytest.mark.skipif(_gemma_dir() is None, reason="no converted Gemma 3 tokenizer in the fusion cache")
def test_real_gemma_tokenizer_chat_and_alpaca():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(_gemma_dir()))
    tokenizer.chat_template = GEMMA_TEMPLATE.read_text()
    messages = to_messages({**RECORD, "output": "print('hello {world}')\n"}, system_prompt="Be brief.")

    chat = tokenize_example(messages, tokenizer, "chat", 512)
    assert trainable_text(tokenizer, chat) == "print('hello {world}')<end_of_turn>\n"
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert [i for i, y in zip(chat.input_ids, chat.labels) if y != IGNORE_INDEX].count(end_of_turn) == 1
    assert chat.input_ids[0] == tokenizer.bos_token_id and chat.input_ids.count(tokenizer.bos_token_id) == 1
    assert chat.input_ids.count(end_of_turn) == 2  # user turn (not trained) + model turn (trained)

    alpaca = tokenize_example(messages, tokenizer, "alpaca", 512)
    # this tokenizer adds no BOS itself, but its chat template starts with one: alpaca gets exactly one
    assert alpaca.input_ids[0] == tokenizer.bos_token_id and alpaca.input_ids.count(tokenizer.bos_token_id) == 1
    assert trainable_text(tokenizer, alpaca) == "print('hello {world}')\n<eos>"
    assert alpaca.labels[-1] == tokenizer.eos_token_id


# ------------------------------------------------------------------ alpaca


def test_alpaca_prompt_is_the_stanford_prompt_and_versioned():
    template = load_template("sft_alpaca@v1")
    path = REPO / "ray_pipeline/prompts/sft_alpaca.v1.yaml"
    assert template.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    rendered = {m["role"]: m["content"] for m in template.render(instruction="I {x}", input="$y")}
    assert rendered == {
        "prompt_input": ALPACA_INPUT.format(instruction="I {x}", input="$y"),
        "prompt_no_input": ALPACA_NO_INPUT.format(instruction="I {x}"),
    }


def test_alpaca_segments_bos_prompt_and_response_with_eos(tok):
    messages = to_messages(RECORD, system_prompt="ignored in alpaca")
    segments = render_segments(messages, "alpaca", tok)
    prompt = ALPACA_NO_INPUT.format(instruction="Add two numbers.\n\n3 and 4")
    assert segments == [("<bos>", False), (prompt, False), ("The answer is 7.<eos>", True)]

    example = tokenize_example(messages, tok, "alpaca", 256)
    assert_labels_are_ids_or_ignored(example)
    assert example.input_ids[0] == tok.bos_token_id and example.input_ids.count(tok.bos_token_id) == 1
    assert trainable_text(tok, example) == "The answer is 7.<eos>"
    assert example.labels[-1] == tok.eos_token_id
    first = next(k for k, y in enumerate(example.labels) if y != IGNORE_INDEX)
    assert tok.decode(example.input_ids[1:first]) == prompt


def test_alpaca_input_variant_and_bos_rules():
    messages = [{"role": "user", "content": "Add two numbers.", "input": "3 and 4"}, {"role": "assistant", "content": "7"}]
    segments = render_segments(messages, "alpaca", tiny_tokenizer())
    assert segments[1] == (ALPACA_INPUT.format(instruction="Add two numbers.", input="3 and 4"), False)

    # adds no BOS itself, chat template starts with one -> BOS text prepended once
    assert render_segments(messages, "alpaca", tiny_tokenizer(add_bos=False))[0] == ("<bos>", False)
    # adds no BOS itself and has no chat template -> no BOS
    plain = tiny_tokenizer(add_bos=False, chat_template=None)
    segments = render_segments(messages, "alpaca", plain)
    assert [trainable for _, trainable in segments] == [False, True] and not segments[0][0].startswith("<bos>")
    assert plain.bos_token_id not in tokenize_example(messages, plain, "alpaca", 256).input_ids


# ------------------------------------------------------------------ truncation and stats


def test_truncation_keeps_the_head_and_counts(tok):
    long_answer = "The answer is 42. " * 20
    full = tokenize_example(to_messages({**RECORD, "output": long_answer}), tok, "chat", 10_000)
    prompt_len = next(k for k, y in enumerate(full.labels) if y != IGNORE_INDEX)
    cut = tokenize_example(to_messages({**RECORD, "output": long_answer}), tok, "chat", prompt_len + 5)
    assert cut.truncated and len(cut.input_ids) == prompt_len + 5
    assert cut.input_ids == full.input_ids[: prompt_len + 5] and cut.labels == full.labels[: prompt_len + 5]
    assert sum(y != IGNORE_INDEX for y in cut.labels) == 5
    # cut inside the prompt: nothing left to learn
    assert tokenize_example(to_messages({**RECORD, "output": long_answer}), tok, "chat", prompt_len) is None

    conversations = [
        to_messages({**RECORD, "output": "7"}),  # kept whole: "7<|end|>\n" is 3 tokens
        to_messages({**RECORD, "output": long_answer}),  # truncated, kept
        to_messages({**RECORD, "output": "   "}),  # empty response: dropped
        to_messages({**RECORD, "instruction": "word " * 200}),  # prompt alone overflows: dropped
    ]
    examples, stats = tokenize_examples(conversations, tok, "chat", prompt_len + 5)
    assert isinstance(stats, FormatStats)
    assert stats.to_dict() == {
        "examples_in": 4,
        "examples_out": 2,
        "truncated": 1,
        "dropped_no_response": 2,
        "tokens": sum(len(e.input_ids) for e in examples),
        "trainable_tokens": sum(y != IGNORE_INDEX for e in examples for y in e.labels),
    }
    assert [e.truncated for e in examples] == [False, True]
    assert all(len(e.input_ids) <= prompt_len + 5 for e in examples)
    assert stats.tokens == len(examples[0].input_ids) + prompt_len + 5
