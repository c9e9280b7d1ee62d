"""Packing: first-fit decreasing, the Arrow table, collation, and per-example attention in a packed batch."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
import torch

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.training.packing import _first_fit_bins, collate, pack_examples, sequences_table
from ray_pipeline.training.sft_format import IGNORE_INDEX, TokenizedExample, to_messages, tokenize_examples
from tests.sft_helpers import tiny_llama, tiny_tokenizer

torch.set_num_threads(1)


def example(n: int, start: int = 0, prompt: int = 1) -> TokenizedExample:
    """``n`` tokens with ids start..start+n-1; the first ``prompt`` have no loss."""
    ids = list(range(start, start + n))
    return TokenizedExample(input_ids=ids, labels=[IGNORE_INDEX] * prompt + ids[prompt:], truncated=False)


def naive_first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        slot = next((b for b, f in enumerate(free) if f >= lengths[i]), None)
        if slot is None:
            bins.append([])
            free.append(capacity)
            slot = len(bins) - 1
        bins[slot].append(i)
        free[slot] -= lengths[i]
    return bins


def split_pack(pack: dict[str, list[int]]) -> list[tuple[list[int], list[int]]]:
    """Cut a pack back into (input_ids, labels) per example where position_ids restart at 0."""
    starts = [k for k, p in enumerate(pack["position_ids"]) if p == 0] + [len(pack["input_ids"])]
    return [(pack["input_ids"][a:b], pack["labels"][a:b]) for a, b in zip(starts, starts[1:])]


# ------------------------------------------------------------------ pack_examples


def test_first_fit_decreasing_known_answer_and_against_a_naive_version():
    assert _first_fit_bins([5, 4, 3, 3, 2, 2, 1], 8) == [[0, 2], [1, 3, 6], [4, 5]]
    rng = random.Random(7)
    for _ in range(50):
        capacity = rng.randint(8, 64)
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(0, 60))]
        assert _first_fit_bins(lengths, capacity) == naive_first_fit_decreasing(lengths, capacity)


def test_pack_keeps_every_token_once_within_budget_and_positions_restart():
    rng = random.Random(3)
    examples = []
    for k in range(40):
        n = rng.randint(2, 30)
        examples.append(example(n, start=1000 * k, prompt=rng.randint(1, n - 1)))
    packs = pack_examples(examples, 32)
    assert pack_examples(examples, 32) == packs  # deterministic
    assert all(len(p["input_ids"]) <= 32 for p in packs)
    assert all(len(p["input_ids"]) == len(p["labels"]) == len(p["position_ids"]) for p in packs)
    assert len(packs) < len(examples)  # something was actually packed together
    recovered = sorted(part for p in packs for part in (tuple(map(tuple, x)) for x in split_pack(p)))
    expected = sorted((tuple(e.input_ids), (IGNORE_INDEX,) + tuple(e.labels[1:])) for e in examples)
    assert recovered == expected  # every example exactly once, labels unchanged but the first
    for p in packs:
        for ids, _ in split_pack(p):
            assert p["position_ids"][p["input_ids"].index(ids[0]) :][: len(ids)] == list(range(len(ids)))


def test_pack_masks_the_first_label_of_each_example():
    packs = pack_examples([example(3, 10, prompt=0), example(2, 20, prompt=0)], 8)
    assert packs == [
        {"input_ids": [10, 11, 12, 20, 21], "labels": [-100, 11, 12, -100, 21], "position_ids": [0, 1, 2, 0, 1]}
    ]


def test_pack_rejects_an_example_longer_than_the_budget():
    with pytest.raises(ConfigError, match="9 tokens"):
        pack_examples([example(4), example(9)], 8)


# ------------------------------------------------------------------ table and collate


def test_sequences_table_for_examples_and_packs():
    examples = [example(3, 10, prompt=1), example(4, 20, prompt=2)]
    table = sequences_table(examples)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("num_tokens").type == pa.int32()
    assert table.column_names == ["input_ids", "labels", "position_ids", "num_tokens", "num_trainable"]
    assert table.to_pylist() == [
        {"input_ids": [10, 11, 12], "labels": [-100, 11, 12], "position_ids": [0, 1, 2],
         "num_tokens": 3, "num_trainable": 2},
        {"input_ids": [20, 21, 22, 23], "labels": [-100, -100, 22, 23], "position_ids": [0, 1, 2, 3],
         "num_tokens": 4, "num_trainable": 2},
    ]
    packed = sequences_table(pack_examples(examples, 8)).to_pylist()
    assert packed == [
        {
            "input_ids": [20, 21, 22, 23, 10, 11, 12],
            "labels": [-100, -100, 22, 23, -100, 11, 12],
            "position_ids": [0, 1, 2, 3, 0, 1, 2],
            "num_tokens": 7,
            "num_trainable": 4,
        }
    ]


def test_collate_unpacked_pads_right_with_attention_mask():
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = collate(rows, 0, packed=False)
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_collate_packed_gives_positions_and_no_attention_mask():
    rows = [
        {"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, 4], "position_ids": [0, 1, 0, 1]},
        {"input_ids": [5, 6], "labels": [5, 6], "position_ids": [0, 1]},
    ]
    batch = collate(rows, 0, packed=True)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 1, 0, 1]]  # padding is a sequence of its own
    assert batch["labels"].tolist() == [[-100, 2, -100, 4], [-100, 6, -100, -100]]  # no target across a boundary


# ------------------------------------------------------------------ the model sees each packed example alone


@pytest.fixture(scope="module")
def tokenized():
    tok = tiny_tokenizer()
    rng = random.Random(5)
    words = "the answer is 42 add two numbers print sum of list hello".split()
    records = [
        {
            "instruction": " ".join(rng.choices(words, k=rng.randint(2, 12))),
            "input": " ".join(rng.choices(words, k=rng.randint(0, 4))),
            "output": " ".join(rng.choices(words, k=rng.randint(1, 15))),
        }
        for _ in range(9)
    ]
    examples, stats = tokenize_examples([to_messages(r) for r in records], tok, "chat", 64)
    assert stats.examples_out == 9
    return tok, examples


def per_example_mean_loss(model, examples) -> float:
    """Token-weighted mean of the losses of the examples run one at a time (no padding)."""
    total, count = 0.0, 0
    for e in examples:
        out = model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels]), use_cache=False)
        n = sum(y != IGNORE_INDEX for y in e.labels[1:])
        total, count = total + out.loss.item() * n, count + n
    return total / count


@pytest.mark.parametrize("attn, all_trainable", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_packed_batch_loss_equals_per_example_losses(tokenized, attn, all_trainable):
    tok, examples = tokenized
    if all_trainable:  # a trainable first token must not become the target of the previous example's last one
        examples = [TokenizedExample(e.input_ids, list(e.input_ids), False) for e in examples]
    model = tiny_llama(len(tok), attn_implementation=attn)
    packs = pack_examples(examples, 96)
    assert len(packs) >= 2 and any(p["position_ids"].count(0) >= 2 for p in packs)
    assert len({len(p["input_ids"]) for p in packs}) > 1  # the batch has padding
    rows = sequences_table(packs).to_pylist()  # through Arrow, as the trainer reads them
    batch = collate(rows, tok.pad_token_id, packed=True)
    with torch.no_grad():
        expected = per_example_mean_loss(model, examples)
        packed = model(**batch, use_cache=False).loss.item()
        # control: the same rows without restarting positions let examples see each other
        flat = {**batch, "position_ids": torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])}
        leaky = model(**flat, use_cache=False).loss.item()
    assert packed == pytest.approx(expected, abs=1e-5)
    assert abs(leaky - expected) > 1e-4


def test_padded_unpacked_batch_loss_equals_per_example_losses(tokenized):
    tok, examples = tokenized
    model = tiny_llama(len(tok))
    batch = collate(sequences_table(examples).to_pylist(), tok.pad_token_id, packed=False)
    with torch.no_grad():
        assert model(**batch).loss.item() == pytest.approx(per_example_mean_loss(model, examples), abs=1e-5)
