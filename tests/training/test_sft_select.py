"""SFT rows selected by lineage from a hand-made TaCIE / IF run directory (the papers' ablations as job files)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ray_pipeline.jobs import parse_job
from ray_pipeline.training.config import SFTDataSource
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.training.data import load_sft_rows

# id, round, operation, parents, source, root_domain, kept
TACIE_ITEMS = [
    ("a1", 0, "seed", [], "alpaca", "general", True),
    ("a2", 0, "seed", [], "alpaca", "general", True),
    ("g1", 0, "seed", [], "gsm8k", "math", True),
    ("m1", 0, "seed", [], "math", "math", True),
    ("c1", 0, "seed", [], "code_alpaca", "code", True),
    ("d1", 0, "diversify", ["a1"], "alpaca", "general", True),
    ("e1", 1, "depth", ["g1"], "gsm8k", "math", True),
    ("f1", 1, "fusion_in_domain", ["a1", "a2"], "alpaca", "general", True),
    ("x1", 1, "fusion_cross_domain", ["c1", "g1"], "code_alpaca", "code", True),
    ("k1", 1, "depth", ["a2"], "alpaca", "general", False),          # filtered out (a near-duplicate)
    ("i1", 1, "fusion_in_domain", ["g1", "m1"], "gsm8k", "math", True),
    ("f2", 2, "fusion_in_domain", ["x1", "c1"], "code_alpaca", "code", True),  # in-domain, but math in its history
    ("e2", 2, "depth", ["f1"], "alpaca", "general", True),
    ("e3", 2, "depth", ["k1"], "alpaca", "general", True),           # its parent was filtered, not its history
]


def _text(item_id: str) -> str:
    return f"Instruction {item_id}: solve task {item_id} carefully."


def tacie_run(tmp_path: Path, items=TACIE_ITEMS, name: str = "tacie_test") -> Path:
    """A TaCIE run directory as the pipeline writes it: job.yaml, <name>.parquet (ITEM_SCHEMA), sft_messages.jsonl."""
    from ray_pipeline.methods.tacie.pipeline import ITEM_SCHEMA

    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "job.yaml").write_text(yaml.safe_dump({"kind": "tacie", "name": name}))
    rows = [{"id": i, "round": r, "operation": op, "parent_ids": parents, "source": src, "domain": dom,
             "root_domain": dom, "instruction": _text(i), "response": f"Answer {i}.", "kept": kept}
            for i, r, op, parents, src, dom, kept in items]
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), run / f"{name}.parquet")
    (run / "sft_messages.jsonl").write_text("".join(
        json.dumps({"id": r["id"], "messages": [{"role": "user", "content": r["instruction"]},
                                                {"role": "assistant", "content": r["response"]}]}) + "\n"
        for r in rows if r["kept"]))
    return run


def selected(run: Path, **select) -> tuple[set[str], dict]:
    rows, report = load_sft_rows([SFTDataSource(run=str(run), select=select)], seed=0)
    ids = {r["instruction"].split(":")[0].removeprefix("Instruction ") for r in rows}
    return ids, report[0].to_dict()


def test_operations_and_rounds_select_the_tacie_ablations(tmp_path):
    """TaCIE-LLaMA-3-id / -cd (tacie.txt section 3.3): in-domain vs cross-domain fusions only, no seeds."""
    run = tacie_run(tmp_path)
    ids, report = selected(run, operations=["fusion_in_domain"], rounds=[1, 2])
    assert ids == {"f1", "i1", "f2"}
    sel = report["selection"]
    assert sel["by_operation"] == {"fusion_in_domain": 3} and sel["by_round"] == {"1": 2, "2": 1}
    assert (sel["items"], sel["items_kept"], sel["items_selected"]) == (14, 13, 3)
    assert sel["criteria"] == {"operations": ["fusion_in_domain"], "rounds": [1, 2], "single_domain": False}
    assert selected(run, operations=["fusion_cross_domain"])[0] == {"x1"}
    # group names: every fusion, every depth evolution (k1 is not kept, so not a candidate)
    assert selected(run, operations=["fusion"])[0] == {"f1", "i1", "f2", "x1"}
    assert selected(run, operations=["depth"])[0] == {"e1", "e2", "e3"}
    # TaCIE-48k "seed": round 0 (seeds and their diversifications)
    assert selected(run, rounds=[0])[0] == {"a1", "a2", "g1", "m1", "c1", "d1"}
    assert selected(run, rounds=[2], operations=["depth"])[0] == {"e2", "e3"}


def test_single_domain_follows_every_ancestor(tmp_path):
    """tacie.txt section 3.2: "evolved instructions that only contains single-domain information among all of its
    evolution history": f2 is an in-domain fusion of code items, but x1 in its history holds a math seed."""
    run = tacie_run(tmp_path)
    ids, _ = selected(run, single_domain=True, rounds=[1, 2])
    assert ids == {"e1", "f1", "i1", "e2", "e3"}
    assert selected(run, single_domain=True, root_domains=["math"])[0] == {"g1", "m1", "e1", "i1"}
    assert selected(run, single_domain=True, root_domains=["code"])[0] == {"c1"}
    assert selected(run, root_domains=["code"])[0] == {"c1", "x1", "f2"}  # root domain alone: the first parent's


def test_sources_bound_the_whole_history(tmp_path):
    run = tacie_run(tmp_path)
    assert selected(run, sources=["gsm8k"])[0] == {"g1", "e1"}
    assert selected(run, sources=["gsm8k", "math"])[0] == {"g1", "m1", "e1", "i1"}
    assert selected(run, sources=["gsm8k", "code_alpaca"])[0] == {"g1", "c1", "e1", "x1", "f2"}


def test_selection_comes_before_sampling_and_is_reported(tmp_path):
    run = tacie_run(tmp_path)
    src = SFTDataSource(run=str(run), rows=5, select={"operations": ["fusion", "depth"]})
    rows, report = load_sft_rows([src], seed=3)
    mix = report[0].to_dict()
    assert (mix["rows_available"], mix["rows_taken"], len(rows)) == (7, 5, 5)
    taken = mix["selection"]["taken"]
    assert sum(taken["by_operation"].values()) == 5 and sum(taken["by_round"].values()) == 5
    assert set(taken["by_operation"]) <= {"fusion_in_domain", "fusion_cross_domain", "depth"}
    # a source without select reports no selection
    plain, report = load_sft_rows([SFTDataSource(run=str(run))], seed=0)
    assert len(plain) == 13 and "selection" not in report[0].to_dict()


def test_an_instruction_fusion_run_is_one_round_of_fusions(tmp_path):
    from ray_pipeline.methods.fusion.pipeline import _SCHEMA

    run = tmp_path / "if_run"
    run.mkdir()
    (run / "job.yaml").write_text(yaml.safe_dump({"kind": "instruction_fusion", "name": "if_test"}))
    attempts = [("h1", "ok", ["py", "py"], ["code", "code"]), ("h2", "ok", ["py", "other"], ["code", "code"]),
                ("h3", "ok", ["py", "gsm"], ["code", "math"]), ("h4", "invalid", ["py", "py"], ["code", "code"])]
    rows = [{"id": i, "attempt": n, "round": 3, "outcome": o, "instruction": _text(i), "response": f"Answer {i}.",
             "parent_ids": [f"s{n}", f"t{n}"], "parent_sources": s, "parent_domains": d}
            for n, (i, o, s, d) in enumerate(attempts)]
    pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), run / "if_test.parquet")
    (run / "sft_messages.jsonl").write_text("".join(
        json.dumps({"id": r["id"], "messages": [{"role": "user", "content": r["instruction"]},
                                                {"role": "assistant", "content": r["response"]}]}) + "\n"
        for r in rows if r["outcome"] == "ok"))
    ids, report = selected(run, operations=["fusion"], rounds=[1])
    assert ids == {"h1", "h2", "h3"} and report["selection"]["by_round"] == {"1": 3}
    assert selected(run, sources=["py"])[0] == {"h1"}  # both seeds from C_PI
    assert selected(run, single_domain=True)[0] == {"h1", "h2"}
    with pytest.raises(ConfigError, match=r"matched none of the run's 3 kept items"):
        selected(run, operations=["depth"])


def test_the_paper_ablation_jobs_select_what_their_names_say(tmp_path):
    """jobs/sft_tacie_paper_{id,cd,seed}.yaml on the hand-made run: the paper's -id, -cd and seed sets."""
    from ray_pipeline.jobs import load_job
    from tests.conftest import REPO

    run = tacie_run(tmp_path)
    expected = {"id": {"f1", "i1"}, "cd": {"x1"}, "seed": {"a1", "a2", "g1", "m1", "c1", "d1"}}
    for name, ids in expected.items():
        source = load_job(REPO / "jobs" / f"sft_tacie_paper_{name}.yaml").data.sources[0]
        source.run = str(run)
        rows, report = load_sft_rows([source], seed=0)
        got = {r["instruction"].split(":")[0].removeprefix("Instruction ") for r in rows}
        assert got == ids, name
        assert report[0].rows_taken == (source.rows if source.rows is not None else len(ids))


def test_an_sft_source_filters_rows_by_language_as_a_seed_source_does():
    """The IF paper's IF-CLP trains on C_PI, the Python part of evol-codealpaca-v1 (Table 2 caption)."""
    from tests.conftest import REPO

    seeds = str(REPO / "ray_pipeline/data/seeds/quickstart.jsonl")
    pi, report = load_sft_rows([SFTDataSource(path=seeds, name="pi", languages=["Python"])], seed=0)
    npi, _ = load_sft_rows([SFTDataSource(path=seeds, name="npi", exclude_languages=["python"])], seed=0)
    assert {r["language"] for r in pi} == {"python"} and len(pi) == 7
    assert "python" not in {r["language"] for r in npi} and len(pi) + len(npi) == 24
    picked, _ = load_sft_rows([SFTDataSource(path=seeds, limit=5, sample="random")], seed=0)
    first, _ = load_sft_rows([SFTDataSource(path=seeds, limit=5)], seed=0)
    assert len(picked) == 5 and picked != first
    with pytest.raises(ConfigError, match="unknown language 'pyhton'"):
        parse_job({"kind": "sft", "name": "t", "data": {"sources": [{"path": seeds, "languages": ["pyhton"]}]}})
    with pytest.raises(ConfigError, match="sample: random needs a limit"):
        parse_job({"kind": "sft", "name": "t", "data": {"sources": [{"path": seeds, "sample": "random"}]}})


def test_bad_selections_are_one_line_errors(tmp_path):
    def job(source):
        return {"kind": "sft", "name": "t", "data": {"sources": [source]}}

    with pytest.raises(ConfigError, match=r"unknown operation 'fusion_cross' \(known: seed, diversify, depth") as err:
        parse_job(job({"run": "runs/x", "select": {"operations": ["fusion_cross"]}}))
    assert "data.sources.0.select.operations" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"select: needs a 'run:' source .* a file or hub dataset has no lineage"):
        parse_job(job({"path": "seeds.jsonl", "select": {"rounds": [1]}}))
    with pytest.raises(ConfigError, match="round -1 is negative"):
        parse_job(job({"run": "runs/x", "select": {"rounds": [-1]}}))
    with pytest.raises(ConfigError, match="select.unknown_field"):
        parse_job(job({"run": "runs/x", "select": {"unknown_field": 1}}))
    run = tacie_run(tmp_path)
    with pytest.raises(ConfigError, match=r"data.sources\[0\] \(tacie_test\): select .* matched none of the run's 13"):
        selected(run, operations=["fusion_cross_domain"], rounds=[2])
    # an item whose parent is missing: its history cannot be checked
    broken = tacie_run(tmp_path / "broken", items=TACIE_ITEMS + [("z1", 3, "depth", ["nope"], "alpaca", "general", True)])
    with pytest.raises(ConfigError, match="item z1 names parent nope, which is not in the run's item table"):
        selected(broken, single_domain=True)
    # a run directory without its item table
    (run / "tacie_test.parquet").unlink()
    with pytest.raises(ConfigError, match="select needs the run's item table"):
        selected(run, rounds=[0])
