"""TaCIE pieces that need no teacher: the item's Arrow rows, checkpoints, cut-off answers, JSON safety."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_pipeline.core.errors import FusionError
from ray_pipeline.core.outputs import RunDir
from ray_pipeline.prompts.parsing import cut_off
from ray_pipeline.methods.tacie.attempts import ATTEMPT_SCHEMA, Attempt
from ray_pipeline.methods.tacie.checkpoints import Checkpoint, RunState
from ray_pipeline.methods.tacie.items import ITEM_COLUMNS, ITEM_SCHEMA, TaCIEItem, items_from_table, items_table
from ray_pipeline.methods.tacie.metrics import json_safe
from ray_pipeline.methods.tacie.operations import (
    Decompose,
    DepthEvolution,
    Diversify,
    Embed,
    Evolution,
    Respond,
    Score,
    TaskFusion,
)


def _items(n: int) -> list[TaCIEItem]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        v = rng.normal(size=384).astype(np.float32)
        out.append(TaCIEItem(
            id=f"{i:016x}", round=i % 3, operation="seed" if i < 2 else "depth_constraint", source="s",
            domain="code", root_domain="code", language="python", instruction=f"task {i} <b>&", response="r",
            background=["bg"], objectives=[f"o{i}"], constraints=[], q=0.5, uncertainty=float("nan") if i == 1 else 0.1,
            instruction_tokens=7, n_fusions=i, evolvable=i != 1, status="ok", embedding=v / np.linalg.norm(v),
            teacher_model="m",
        ))
    return out


def test_item_schema_is_the_items_fields_in_order():
    """One home: the Parquet columns are the dataclass fields, in order, with the types files have always had."""
    assert ITEM_SCHEMA.names == list(ITEM_COLUMNS) == [
        "id", "round", "operation", "parent_ids", "source", "domain", "root_domain", "language", "instruction",
        "response", "background", "objectives", "constraints", "decomposition_outcome", "q", "uncertainty",
        "instruction_tokens", "n_fusions", "n_objectives", "evolvable", "status", "embedding", "kept",
        "removed_reason", "teacher_model", "template", "template_sha256",
    ]
    assert str(ITEM_SCHEMA.field("embedding").type) == "list<item: float>"
    assert str(ITEM_SCHEMA.field("q").type) == "double" and str(ITEM_SCHEMA.field("round").type) == "int64"
    assert ATTEMPT_SCHEMA.names == ["round", "operation", "item_id", "parent_ids", "outcome", "reason", "raw",
                                    "cache_key", "cached", "prompt_tokens", "completion_tokens", "latency_s", "node"]


def test_items_round_trip_through_arrow():
    items = _items(4) + [TaCIEItem(id="e", round=0, operation="seed", source="s", domain="d", root_domain="d",
                                   language="en", instruction="no embedding yet")]
    back = items_from_table(items_table(items))
    assert [b.embedding is None for b in back] == [False] * 4 + [True]
    for a, b in zip(items, back):
        for name in ITEM_COLUMNS:
            x, y = getattr(a, name), getattr(b, name)
            if name == "embedding":
                assert (x is None and y is None) or np.array_equal(np.asarray(x, dtype=np.float32), y)
            elif isinstance(x, float) and math.isnan(x):
                assert math.isnan(y)
            else:
                assert x == y, name
    assert _parquet_bytes(items_table(back)) == _parquet_bytes(items_table(items))  # NaN q / u included


def _parquet_bytes(table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_n_obj_of_eq7_is_at_least_one():
    item = _items(1)[0]
    assert item.n_obj == 1  # one parsed objective, n_objectives not recorded
    item.n_objectives = 3
    assert item.n_obj == 3
    item.objectives, item.n_objectives = [], 0
    assert item.n_obj == 1


@pytest.mark.parametrize("op", [Decompose, Diversify, DepthEvolution, TaskFusion, Respond, Score, Embed])
def test_operations_declare_item_fields(op):
    assert op.inputs and op.outputs
    assert set(op.inputs) | set(op.outputs) <= set(ITEM_COLUMNS)
    assert Evolution  # depth evolution and task fusion share one teacher batch


def _attempt(**kw) -> Attempt:
    fields = {"round": 0, "operation": "decompose", "item_id": "a", "parent_ids": [], "outcome": "ok", "reason": "",
              "raw": "x", "cache_key": "k", "cached": False, "prompt_tokens": 1, "completion_tokens": 2,
              "latency_s": 0.1, "node": "n"}
    return Attempt(**(fields | kw))


def test_checkpoint_round_trip_and_latest_round_wins(tmp_path):
    ck = Checkpoint(RunDir(tmp_path))
    assert ck.load() is None
    items = _items(5)
    attempts = [_attempt()]
    ck.save(0, items[:3], attempts, RunState(rounds=[{"round": 0}]))
    ck.save(1, items, attempts, RunState(config_hash="h", rounds=[{"round": 0}, {"round": 1}], used_pairs={("a", "b")}))
    resumed = ck.load()
    assert resumed.round == 1 and len(resumed.items) == 5 and resumed.attempts == attempts
    assert resumed.state.used_pairs == {("a", "b")} and len(resumed.state.rounds) == 2
    assert json.loads(ck.state_path.read_text())["used_pairs"] == [["a", "b"]]
    for a, b in zip(items, resumed.items):
        assert a.id == b.id and a.objectives == b.objectives and a.n_fusions == b.n_fusions
        assert np.allclose(a.embedding, b.embedding)
        assert (math.isnan(a.uncertainty) and math.isnan(b.uncertainty)) or a.uncertainty == b.uncertainty
    assert ck.resume("h") is not None and ck.resume("another job") is None


def test_a_state_naming_a_missing_round_is_a_one_line_error(tmp_path):
    ck = Checkpoint(RunDir(tmp_path))
    ck.save(0, _items(2), [], RunState())
    state = json.loads(ck.state_path.read_text())
    state["round"] = 3
    ck.state_path.write_text(json.dumps(state))
    with pytest.raises(FusionError, match="checkpoint unreadable") as err:
        ck.load()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "answer, finish, piece, cut",
    [
        ("Background:\n1. x\nRewritten Prompt: Write a function that sorts a list and", "length",
         "Write a function that sorts a list and", True),
        ("Rewritten Prompt: Write a function that sorts a list.\nInstruction: next example begins", "length",
         "Write a function that sorts a list.", False),
        ("Rewritten Prompt: Write a function that sorts a list.", "stop", "Write a function that sorts a list.", False),
        ("anything", "length", "", False),
    ],
)
def test_cut_off_answers(answer, finish, piece, cut):
    assert cut_off(answer, finish, piece) is cut


def test_json_safe_turns_nan_into_null():
    data = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}}
    assert json.loads(json.dumps(json_safe(data))) == {"a": None, "b": [1.0, None], "c": {"d": 2}}
