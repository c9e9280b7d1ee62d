"""Packing tokenized SFT examples into fixed-budget sequences, their Arrow table, and batch collation.

How packed examples are kept apart (transformers 5.19): a packed batch carries
``position_ids`` that restart at 0 for every example and NO ``attention_mask``.
``masking_utils.create_causal_mask`` (and the sliding-window / chunked variants)
then calls ``find_packed_sequence_indices(position_ids)`` -- a new sequence
starts wherever the position does not grow by exactly 1 -- and ANDs the causal
mask with "same sequence", for sdpa, eager and flex attention alike; flash
attention derives its varlen boundaries from the same ``position_ids``. The
detection runs only when the model gets ``attention_mask=None`` AND
``past_key_values is None``: since Llama/Gemma create a ``DynamicCache``
whenever ``use_cache`` is true (``config.use_cache`` defaults to True), a
packed batch must be run with ``use_cache=False`` or the examples attend to
each other silently. Right padding of a packed row gets positions ``0..k-1``,
so the padding is one more sequence of its own (its labels are -100).

Hugging Face models shift labels inside the model, so the last token of one
example would predict the first token of the next: every example's first
label in a pack is therefore ``IGNORE_INDEX`` (it is never a target unpacked
either).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.training.sft_format import IGNORE_INDEX, TokenizedExample

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

# Column names and Arrow types of a sequences table (pyarrow is imported only to build one,
# so the training loop and the GPU benchmark run where pyarrow is absent).
SEQUENCE_COLUMNS = (
    ("input_ids", "list<int32>"),
    ("labels", "list<int32>"),
    ("position_ids", "list<int32>"),
    ("num_tokens", "int32"),
    ("num_trainable", "int32"),
)


def sequence_schema() -> pa.Schema:
    import pyarrow as pa

    types = {"list<int32>": pa.list_(pa.int32()), "int32": pa.int32()}
    return pa.schema([(name, types[kind]) for name, kind in SEQUENCE_COLUMNS])


def _first_fit_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of ``lengths`` grouped into bins of total <= ``capacity``.

    Items go longest first (ties by index); each into the lowest-numbered bin it fits in, found
    in O(log n) with a max-segment-tree over the bins' free space (unopened bins are full-size).
    """
    n = len(lengths)
    size = 1
    while size < max(n, 1):
        size *= 2
    free = [0] * (2 * size)
    free[size : size + n] = [capacity] * n
    for node in range(size - 1, 0, -1):
        free[node] = max(free[2 * node], free[2 * node + 1])
    bins: list[list[int]] = []
    for index in sorted(range(n), key=lambda i: (-lengths[i], i)):
        need = lengths[index]
        node = 1
        while node < size:  # descend to the leftmost leaf with enough free space
            node = 2 * node if free[2 * node] >= need else 2 * node + 1
        slot = node - size
        if slot == len(bins):
            bins.append([])
        bins[slot].append(index)
        free[node] -= need
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def pack_examples(examples: Sequence[TokenizedExample], max_seq_len: int) -> list[dict[str, list[int]]]:
    """Pack examples into sequences of at most ``max_seq_len`` tokens (deterministic first-fit decreasing).

    Each pack is ``{"input_ids", "labels", "position_ids"}``; positions restart at 0 for every
    example and each example's first label is ``IGNORE_INDEX``. Every token appears exactly once.
    ConfigError if an example is longer than ``max_seq_len``.
    """
    lengths = [len(example.input_ids) for example in examples]
    too_long = [n for n in lengths if n > max_seq_len]
    if too_long:
        raise ConfigError(f"cannot pack an example of {max(too_long)} tokens into max_seq_len {max_seq_len}")
    if any(n == 0 for n in lengths):
        raise ConfigError("cannot pack an empty example")
    packs = []
    for members in _first_fit_bins(lengths, max_seq_len):
        pack: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
        for index in members:
            example = examples[index]
            pack["input_ids"] += example.input_ids
            pack["labels"] += [IGNORE_INDEX] + list(example.labels[1:])
            pack["position_ids"] += range(len(example.input_ids))
        packs.append(pack)
    return packs


def _row(item: TokenizedExample | Mapping[str, Sequence[int]]) -> tuple[list[int], list[int], list[int]]:
    if isinstance(item, TokenizedExample):
        input_ids, labels, positions = item.input_ids, item.labels, None
    else:
        input_ids, labels, positions = item["input_ids"], item["labels"], item.get("position_ids")
    input_ids, labels = list(input_ids), list(labels)
    positions = list(range(len(input_ids))) if positions is None else list(positions)
    if not len(input_ids) == len(labels) == len(positions):
        raise ValueError(f"row lengths differ: {len(input_ids)} ids, {len(labels)} labels, {len(positions)} positions")
    return input_ids, labels, positions


def sequences_table(examples_or_packs: Sequence[TokenizedExample | Mapping[str, Sequence[int]]]) -> pa.Table:
    """Arrow table (:func:`sequence_schema`) of examples or packs; unpacked rows get positions ``0..n-1``."""
    import pyarrow as pa

    rows = [_row(item) for item in examples_or_packs]
    columns = {
        "input_ids": [ids for ids, _, _ in rows],
        "labels": [labels for _, labels, _ in rows],
        "position_ids": [positions for _, _, positions in rows],
        "num_tokens": [len(ids) for ids, _, _ in rows],
        "num_trainable": [sum(label != IGNORE_INDEX for label in labels) for _, labels, _ in rows],
    }
    return pa.Table.from_pydict(columns, schema=sequence_schema())


def collate(rows: Sequence[Mapping[str, Sequence[int]]], pad_token_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest into a batch of int64 tensors.

    Always ``input_ids`` and ``labels`` (-100 on padding). Unpacked: ``attention_mask`` (1 token,
    0 padding). Packed: ``position_ids`` only (positions of the padding are ``0..k-1``, labels at
    position 0 are -100) and no attention mask, so that transformers masks attention per example;
    run the model with ``use_cache=False`` (see the module docstring).
    """
    import torch

    if not rows:
        raise ValueError("collate needs at least one row")
    triples = [_row(row) for row in rows]
    width = max(len(ids) for ids, _, _ in triples)
    input_ids, labels, extra = [], [], []
    for ids, row_labels, positions in triples:
        pad = width - len(ids)
        input_ids.append(ids + [pad_token_id] * pad)
        if packed:
            positions = positions + list(range(pad))
            labels.append([IGNORE_INDEX if p == 0 else y for p, y in zip(positions, row_labels + [IGNORE_INDEX] * pad)])
            extra.append(positions)
        else:
            labels.append(row_labels + [IGNORE_INDEX] * pad)
            extra.append([1] * len(ids) + [0] * pad)
    batch = {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    batch["position_ids" if packed else "attention_mask"] = torch.tensor(extra, dtype=torch.long)
    return batch


class Sequences:
    """The sequences a worker trains on, as flat int32 arrays and row offsets.

    Four bytes a token whatever the row count (a list of Python ints costs ten
    times that), built from a sequences table (:meth:`from_table`) or from plain
    lists (:meth:`from_lists`, no pyarrow needed).
    """

    COLUMNS = ("input_ids", "labels", "position_ids")

    def __init__(self, values: dict[str, np.ndarray], offsets: np.ndarray):
        self.values, self.offsets = values, offsets
        labels = values["labels"]
        trainable = np.add.reduceat((labels != IGNORE_INDEX).astype(np.int64), offsets[:-1]) if len(labels) else []
        lengths = np.diff(offsets)
        self.num_trainable = np.where(lengths > 0, trainable, 0).astype(np.int64) if len(offsets) > 1 else np.zeros(0, np.int64)
        self.lengths = lengths.astype(np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> dict[str, list[int]]:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return {name: self.values[name][start:end].tolist() for name in self.COLUMNS}

    @classmethod
    def from_table(cls, table: pa.Table) -> "Sequences":
        values, offsets = {}, None
        for name in cls.COLUMNS:
            column = table.column(name).combine_chunks()
            off = column.offsets.to_numpy().astype(np.int64)
            flat = column.values.to_numpy(zero_copy_only=False)[off[0]:off[-1]].astype(np.int32)
            values[name], off = flat, off - off[0]
            if offsets is not None and not np.array_equal(offsets, off):
                raise ValueError(f"sequences table: column {name} has rows of other lengths")
            offsets = off
        return cls(values, offsets)

    @classmethod
    def from_lists(cls, input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                   position_ids: Sequence[Sequence[int]] | None = None) -> "Sequences":
        lengths = [len(ids) for ids in input_ids]
        if position_ids is None:
            position_ids = [range(n) for n in lengths]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def flat(rows: Sequence[Sequence[int]]) -> np.ndarray:
            return np.fromiter((x for row in rows for x in row), dtype=np.int32, count=int(offsets[-1]))

        return cls({"input_ids": flat(input_ids), "labels": flat(labels), "position_ids": flat(position_ids)}, offsets)
