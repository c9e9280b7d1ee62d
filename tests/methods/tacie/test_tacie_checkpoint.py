"""TaCIE pipeline pieces that need no teacher: checkpoints, cut-off answers, JSON safety."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ray_pipeline.core.errors import FusionError
from ray_pipeline.core.outputs import RunDir
from ray_pipeline.prompts.parsing import cut_off
from ray_pipeline.methods.tacie.pipeline import _Checkpoint, _json_safe, _new_item


def _items(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        v = rng.normal(size=384).astype(np.float32)
        out.append(_new_item(
            id=f"{i:016x}", round=i % 3, operation="seed" if i < 2 else "depth_constraint", source="s",
            domain="code", root_domain="code", language="python", instruction=f"task {i} <b>&", response="r",
            background=["bg"], objectives=[f"o{i}"], constraints=[], q=0.5, uncertainty=float("nan") if i == 1 else 0.1,
            instruction_tokens=7, n_fusions=i, evolvable=i != 1, status="ok", embedding=v / np.linalg.norm(v),
            teacher_model="m",
        ))
    return out


def test_checkpoint_round_trip_and_latest_round_wins(tmp_path):
    ck = _Checkpoint(RunDir(tmp_path))
    assert ck.load() is None
    items = _items(5)
    attempts = [{"round": 0, "operation": "decompose", "item_id": "a", "parent_ids": [], "outcome": "ok", "reason": "",
                 "raw": "x", "cache_key": "k", "cached": False, "prompt_tokens": 1, "completion_tokens": 2,
                 "latency_s": 0.1, "node": "n"}]
    ck.save(0, items[:3], attempts, {"rounds": [{"round": 0}], "used_pairs": []})
    ck.save(1, items, attempts, {"rounds": [{"round": 0}, {"round": 1}], "used_pairs": [["a", "b"]]})
    round_no, loaded, got_attempts, state = ck.load()
    assert round_no == 1 and len(loaded) == 5 and got_attempts == attempts
    assert state["used_pairs"] == [["a", "b"]] and len(state["rounds"]) == 2
    for a, b in zip(items, loaded):
        assert a["id"] == b["id"] and a["objectives"] == b["objectives"] and a["n_fusions"] == b["n_fusions"]
        assert np.allclose(a["embedding"], b["embedding"])
        assert (math.isnan(a["uncertainty"]) and math.isnan(b["uncertainty"])) or a["uncertainty"] == b["uncertainty"]


def test_a_state_naming_a_missing_round_is_a_one_line_error(tmp_path):
    ck = _Checkpoint(RunDir(tmp_path))
    ck.save(0, _items(2), [], {"rounds": [], "used_pairs": []})
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
    assert json.loads(json.dumps(_json_safe(data))) == {"a": None, "b": [1.0, None], "c": {"d": 2}}
