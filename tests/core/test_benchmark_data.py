"""Where a named benchmark's data is and how its rows are read (core.benchmark_data)."""

from __future__ import annotations

import gzip
import json
import sys
import types

import pytest

from ray_pipeline.core.benchmark_data import (
    NAMED_BENCHMARKS, BenchmarkDataError, Location, NamedBenchmark, file_rows, load_prompts, local_path, locate, named,
    read_rows,
)


@pytest.fixture(autouse=True)
def _no_variables(monkeypatch):
    for bench in NAMED_BENCHMARKS.values():
        if bench.env:
            monkeypatch.delenv(bench.env, raising=False)


@pytest.fixture
def hub(monkeypatch):
    """A stand-in ``datasets`` package: records each load_dataset call and returns two rows."""
    calls = []

    def load_dataset(ref, config=None, split=None, **kwargs):
        calls.append((ref, config, split, kwargs))
        return [{"question": "q1"}, {"question": "q2"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_the_table():
    assert {"humaneval", "mbpp", "gsm8k", "multiple"} <= set(NAMED_BENCHMARKS)
    assert all(name == bench.name for name, bench in NAMED_BENCHMARKS.items())
    assert NAMED_BENCHMARKS["humaneval"].env == "HUMANEVAL_OVERRIDE_PATH"
    assert NAMED_BENCHMARKS["mbpp"].env == "MBPP_OVERRIDE_PATH"
    multiple = NAMED_BENCHMARKS["multiple"]
    assert multiple.per_language and not NAMED_BENCHMARKS["gsm8k"].per_language
    assert multiple.config_for("js") == "humaneval-js" and multiple.file_for("rs") == "humaneval-rs-reworded.jsonl"
    assert named("multiple") is None and named("multiple", "js") is multiple  # one data set per language
    assert named("mine") is None
    with pytest.raises(ValueError):
        named("humaneval", "js")


def test_resolution_order_path_hf_variable_hub(tmp_path, monkeypatch):
    data = tmp_path / "he.jsonl"
    data.write_text('{"prompt": "p"}\n')
    hub_loc = Location(hub="openai/openai_humaneval", split="test")
    assert locate("humaneval") == hub_loc
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(data))  # read at call time
    assert locate("humaneval") == Location(path=str(data), env="HUMANEVAL_OVERRIDE_PATH")
    assert locate("humaneval", hf="me/he", hf_config="c", split="train") == Location(hub="me/he", config="c", split="train")
    assert locate("humaneval", path="x.json", hf="me/he") == Location(path="x.json")
    assert local_path("humaneval") == str(data) and local_path("humaneval", "given.jsonl") == "given.jsonl"
    assert local_path("gsm8k") is None and local_path("mine") is None
    assert locate("gsm8k") == Location(hub="openai/gsm8k", config="main")
    assert locate("mine") is None and locate("mine", path="m.jsonl") == Location(path="m.jsonl")


def test_per_language_benchmark_directory_and_hub(tmp_path, monkeypatch):
    rev = NAMED_BENCHMARKS["multiple"].revision
    assert locate("multiple", language="js") == Location(hub="nuprl/MultiPL-E", config="humaneval-js", revision=rev)
    monkeypatch.setenv("FUSION_MULTIPLE_PATH", str(tmp_path))
    found = locate("multiple", language="js")
    assert found.path == str(tmp_path / "humaneval-js-reworded.jsonl") and found.env == "FUSION_MULTIPLE_PATH"
    assert local_path("multiple", tmp_path / "one.json", "js") == str(tmp_path / "one.json")  # a file stays itself
    assert locate("multiple") is None  # no language: not one data set


def test_file_shapes(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"test": [{"question": "q1"}], "train": [{"question": "t"}]}))
    (tmp_path / "b.jsonl").write_text('{"text": "t1"}\n\n{"prompt": "p2"}\n')
    (tmp_path / "c.json").write_text('{"prompt": "l1"}\n{"prompt": "l2"}\n')  # JSON lines in a .json file
    (tmp_path / "d.json").write_text(json.dumps({"data": [1, 2]}))
    with gzip.open(tmp_path / "e.jsonl.gz", "wt") as fh:
        fh.write('{"prompt": "z"}\n')
    with gzip.open(tmp_path / "f.json.gz", "wt") as fh:
        json.dump([{"body": "x"}], fh)
    assert file_rows(tmp_path / "a.json") == [{"question": "q1"}]
    assert file_rows(tmp_path / "a.json", "train") == [{"question": "t"}]
    assert file_rows(tmp_path / "b.jsonl") == [{"text": "t1"}, {"prompt": "p2"}]
    assert file_rows(tmp_path / "c.json") == [{"prompt": "l1"}, {"prompt": "l2"}]
    assert file_rows(tmp_path / "d.json") == [1, 2]
    assert file_rows(tmp_path / "e.jsonl.gz") == [{"prompt": "z"}]
    assert read_rows(Location(path=str(tmp_path / "f.json.gz"))) == [{"body": "x"}]


def test_bad_files_are_one_line_errors_naming_the_cause(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(BenchmarkDataError) as err:
        file_rows(missing)
    assert str(err.value) == f"{missing}: file not found"
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n{oops\n')
    with pytest.raises(BenchmarkDataError, match=r"bad.jsonl: line 2: invalid JSON: "):
        file_rows(tmp_path / "bad.jsonl")
    (tmp_path / "obj.json").write_text(json.dumps({"other": []}))
    with pytest.raises(BenchmarkDataError, match="JSON object holds no list under 'test', 'data' or 'rows'"):
        file_rows(tmp_path / "obj.json")


def test_load_prompts(tmp_path, monkeypatch, hub):
    (tmp_path / "b.jsonl").write_text('{"instruction": "i1", "text": "t1"}\n{"text": "t2", "prompt": "p2"}\n')
    assert load_prompts("mine", path=str(tmp_path / "b.jsonl")) == ["t1", "p2"]  # first of prompt, question, text
    assert load_prompts("mine", path=str(tmp_path / "b.jsonl"), field="text") == ["t1", "t2"]
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(tmp_path / "b.jsonl"))
    assert load_prompts("mbpp") == ["t1", "p2"]
    assert load_prompts("gsm8k") == ["q1", "q2"] and hub == [("openai/gsm8k", "main", "test", {})]
    # adding a benchmark is one row: its hub split and prompt field come from it
    monkeypatch.setitem(NAMED_BENCHMARKS, "new", NamedBenchmark("new", hub="me/new", split="train", fields=("question",)))
    assert load_prompts("new") == ["q1", "q2"] and hub[-1] == ("me/new", None, "train", {})


def test_load_prompts_failures_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(tmp_path / "gone.jsonl.gz"))
    with pytest.raises(BenchmarkDataError) as err:
        load_prompts("humaneval")
    assert str(err.value) == f"{tmp_path / 'gone.jsonl.gz'}: file not found"
    with pytest.raises(BenchmarkDataError, match="^no path or hf dataset given$"):
        load_prompts("mine")
    (tmp_path / "x.jsonl").write_text('{"body": "b"}\n')
    with pytest.raises(BenchmarkDataError, match=r"^row 1 has no text field \(prompt, question, text\)$"):
        load_prompts("mine", path=str(tmp_path / "x.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BenchmarkDataError, match="^no prompts found$"):
        load_prompts("mine", path=str(tmp_path / "empty.jsonl"))
    (tmp_path / "broken.jsonl.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(BenchmarkDataError) as err:
        load_prompts("mine", path=str(tmp_path / "broken.jsonl.gz"))
    assert "\n" not in str(err.value)
