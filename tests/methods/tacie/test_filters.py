"""Near-duplicate removal and benchmark decontamination."""

from __future__ import annotations

import gzip
import json
import numpy as np
import pytest

from ray_pipeline.analysis import diversity
from ray_pipeline.core.benchmark_data import named
from ray_pipeline.methods.tacie import filters
from ray_pipeline.methods.tacie.config import BenchmarkSource, FilterConfig
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.methods.tacie.filters import Decontaminator, load_benchmark_prompts, near_duplicates, normalise_words
from tests.conftest import SHARED

EVALPLUS = SHARED / "data/bench/evalplus"
HUMANEVAL = EVALPLUS / "HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP = EVALPLUS / "MbppPlus-v0.2.0.jsonl.gz"
GSM8K_TEST = SHARED / "data/seeds/gsm8k/test.jsonl"


def _need(path):
    if not path.is_file():
        pytest.skip(f"{path} not found: data-backed test skipped")


def _angles(*degrees: float) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# ---------------------------------------------------------------- near duplicates
def test_near_duplicates_by_hand():
    # cos 5deg = 0.9962, cos 10deg = 0.9848, cos 20deg = 0.9397.
    X = _angles(0, 5, 20, 90, 95, 30)
    # 30deg is 10deg from the kept 20deg row and 30deg from the 0deg one.
    assert near_duplicates(X, 0.95) == [None, 0, None, None, 3, 2]
    assert near_duplicates(X, 0.99) == [None, 0, None, None, 3, None]
    assert near_duplicates(X, 0.999) == [None] * 6


def test_priority_order_decides_who_is_kept_and_points_at_the_most_similar():
    X = _angles(0, 5, 8)
    # Visit 2 first: kept; 1 (3deg away, cos 0.9986) and 0 (8deg, cos 0.9903) duplicate it; 0 is nearer
    # to 1 (5deg) but 1 was removed, so it points at 2.
    assert near_duplicates(X, 0.99, order=[2, 1, 0]) == [2, 2, None]
    # Both 0 and 2 kept (8deg apart, cos 0.9903 < 0.991); 1 is nearer to 2 (3deg) than to 0 (5deg).
    assert near_duplicates(X, 0.991, order=[0, 2, 1]) == [None, 2, None]
    with pytest.raises(ValueError):
        near_duplicates(X, 0.9, order=[0, 0, 1])


def test_threshold_one_removes_exact_repeats_only():
    X = np.repeat(np.random.default_rng(0).normal(size=(3, 384)).astype(np.float32), 2, axis=0)
    X[5] += 1e-2
    assert near_duplicates(X, 1.0) == [None, 0, None, 2, None, None]


def test_chunked_greedy_matches_a_plain_loop(monkeypatch):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(12, 16))
    X = diversity.unit_rows(centres[rng.integers(0, 12, 200)] + rng.normal(scale=0.15, size=(200, 16)))
    order = rng.permutation(200).tolist()

    def plain(threshold):
        kept, out = [], [None] * 200
        for i in order:
            sims = [float(X[i] @ X[j]) for j in kept]
            if sims and max(sims) >= threshold - 1e-6:
                out[i] = kept[int(np.argmax(sims))]
            else:
                kept.append(i)
        return out

    expected = plain(0.9)
    assert 0 < sum(e is None for e in expected) < 200  # some kept, some removed
    monkeypatch.setattr(filters, "_BLOCK", 7)
    monkeypatch.setattr(filters, "CHUNK_ELEMENTS", 30)  # kept rows compared 4 at a time
    monkeypatch.setattr(diversity, "CHUNK_ELEMENTS", 30)
    assert near_duplicates(X, 0.9, order=order) == expected


def test_near_duplicates_of_nothing():
    assert near_duplicates(np.zeros((0, 384), dtype=np.float32), 0.9) == []


# ---------------------------------------------------------------- decontamination
def test_normalise_words():
    assert normalise_words("def has_close_elements(numbers: List[float]) -> bool:\n  >>> F(3.5)") == [
        "def", "has_close_elements", "numbers", "list", "float", "bool", "f", "3", "5"
    ]


@pytest.fixture(scope="module")
def benchmarks():
    for path in (HUMANEVAL, MBPP, GSM8K_TEST):
        _need(path)
    return {
        "humaneval": load_benchmark_prompts(BenchmarkSource(name="humaneval", path=str(HUMANEVAL))),
        "mbpp": load_benchmark_prompts(BenchmarkSource(name="mbpp", path=str(MBPP))),
        "gsm8k": load_benchmark_prompts(BenchmarkSource(name="gsm8k", path=str(GSM8K_TEST))),
    }


def test_real_benchmarks_load(benchmarks):
    assert {k: len(v) for k, v in benchmarks.items()} == {"humaneval": 164, "mbpp": 378, "gsm8k": 1319}
    assert "def has_close_elements" in benchmarks["humaneval"][0]
    assert "shared elements" in benchmarks["mbpp"][0]
    assert benchmarks["gsm8k"][0].startswith("Janet")


def test_pasted_benchmark_prompt_is_caught_and_paraphrase_is_not(benchmarks):
    dec = Decontaminator(benchmarks, n=13)
    pasted = "Please complete the following Python function carefully.\n\n" + benchmarks["humaneval"][0] + "\nExplain your code."
    paraphrase = (
        "Write a Python function that takes a list of floats and a threshold and returns True when "
        "some pair of the numbers differs by less than the threshold, otherwise False."
    )
    gsm = benchmarks["gsm8k"][0]
    reworded = "A farmer has ducks that lay 16 eggs daily; she uses 7 and sells the rest for $2 each. Daily income?"
    assert dec.match(pasted) == "humaneval"
    assert dec.match(paraphrase) is None
    assert dec.match("Solve: " + gsm.upper()) == "gsm8k"  # case and spacing do not hide it
    assert dec.match(reworded) is None
    matches = dec.match_all([pasted, paraphrase, gsm, reworded, benchmarks["mbpp"][5], benchmarks["mbpp"][6]])
    assert matches == ["humaneval", None, "gsm8k", None, "mbpp", "mbpp"]
    assert dec.counts(matches) == {"humaneval": 1, "mbpp": 2, "gsm8k": 1}
    # Only the first 12 words of a prompt: no 13-gram in common.
    assert dec.match(" ".join(normalise_words(benchmarks["humaneval"][0])[:12])) is None


def test_short_prompts_match_as_a_whole_and_benchmark_order_breaks_ties():
    dec = Decontaminator({"first": ["seven eight nine", "one two three four five"], "second": ["one two three", "", "x"]}, n=5)
    assert dec.match("so: one two three four five six") == "first"
    assert dec.match("one two three!") == "second"  # 3-word prompt of 'second', shorter than n
    assert dec.match("one two four three") is None  # not contiguous
    assert dec.match("say seven, eight... nine") == "first"
    assert dec.match("an x here") == "second"  # one-word prompt: the word itself
    assert dec.match("nothing relevant") is None  # the empty prompt matches nothing
    assert dec.counts([None, "second", "second"]) == {"first": 0, "second": 2}


# ---------------------------------------------------------------- loading
def test_named_benchmark_reads_the_evalplus_override_variable(monkeypatch):
    _need(MBPP)
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(MBPP))
    prompts = load_benchmark_prompts(BenchmarkSource(name="mbpp"))
    assert len(prompts) == 378


def test_unreadable_prompts_are_a_config_error_naming_the_field(tmp_path):
    # reading files and rows is core.benchmark_data's (tests/core/test_benchmark_data.py); here: the job's errors
    (tmp_path / "b.jsonl").write_text('{"instruction": "i1", "text": "t1"}\n\n{"text": "t2", "prompt": "p2"}\n')
    with gzip.open(tmp_path / "c.json.gz", "wt") as fh:
        json.dump([{"body": "x"}], fh)
    assert load_benchmark_prompts(BenchmarkSource(name="b", path=str(tmp_path / "b.jsonl"))) == ["t1", "p2"]
    assert load_benchmark_prompts(BenchmarkSource(name="b", path=str(tmp_path / "b.jsonl"), field="text")) == ["t1", "t2"]
    assert load_benchmark_prompts(BenchmarkSource(name="c", path=str(tmp_path / "c.json.gz"), field="body")) == ["x"]
    with pytest.raises(ConfigError, match=r"^decontamination benchmark 'c': row 1 has no text field \(prompt, question, text\); set filters"):
        load_benchmark_prompts(BenchmarkSource(name="c", path=str(tmp_path / "c.json.gz")))
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n{oops\n')
    with pytest.raises(ConfigError, match="line 2: invalid JSON"):
        load_benchmark_prompts(BenchmarkSource(name="bad", path=str(tmp_path / "bad.jsonl")))


def test_missing_file_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    missing = tmp_path / "nope.jsonl.gz"
    with pytest.raises(ConfigError) as err:
        load_benchmark_prompts(BenchmarkSource(name="humaneval", path=str(missing)))
    assert str(err.value) == (
        f"decontamination benchmark 'humaneval': {missing}: file not found; "
        "set filters.decontaminate[].path or HUMANEVAL_OVERRIDE_PATH, or remove it"
    )
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(missing))
    with pytest.raises(ConfigError, match="file not found"):
        load_benchmark_prompts(BenchmarkSource(name="humaneval"))
    with pytest.raises(ConfigError, match=r"^decontamination benchmark 'mine': no path or hf dataset given; set filters.decontaminate\[\].path, or remove it$"):
        load_benchmark_prompts(BenchmarkSource(name="mine"))
    # MultiPL-E is one data set per language: to decontamination a label like any other
    monkeypatch.setenv("FUSION_MULTIPLE_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"^decontamination benchmark 'multiple': no path or hf dataset given; set filters.decontaminate\[\].path, or remove it$"):
        load_benchmark_prompts(BenchmarkSource(name="multiple"))


def test_hub_offline_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import huggingface_hub.constants

    # The libraries read the variables at import; another test may have imported them first.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as err:
        load_benchmark_prompts(BenchmarkSource(name="humaneval"))
    message = str(err.value)
    assert message.startswith("decontamination benchmark 'humaneval': ")
    assert "openai/openai_humaneval" in message
    assert message.endswith("; set filters.decontaminate[].path or HUMANEVAL_OVERRIDE_PATH, or remove it")
    assert "\n" not in message


def test_default_filter_config_names_the_three_benchmarks():
    cfg = FilterConfig()
    assert [b.name for b in cfg.decontaminate] == ["humaneval", "mbpp", "gsm8k"]
    assert all(named(b.name) is not None for b in cfg.decontaminate)  # each a row of core.benchmark_data's table
