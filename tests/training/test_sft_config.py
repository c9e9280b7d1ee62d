"""SFT jobs: presets, batch arithmetic, data mixing, and bad input stopped before any worker starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ray_pipeline.jobs import parse_job
from ray_pipeline.training.config import SFTDataSource
from ray_pipeline.core.errors import ConfigError
from tests.conftest import REPO, fusion_cli
from tests.sft_helpers import save_tiny_model, seed_rows

QUICKSTART_SEEDS = REPO / "ray_pipeline/data/seeds/quickstart.jsonl"


def sft(**over):
    job = {"kind": "sft", "name": "t", "data": {"sources": [{"path": str(QUICKSTART_SEEDS)}]}}
    job.update(over)
    return job


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ config
def test_presets_fill_what_the_job_does_not_set():
    job = parse_job(sft(training={"preset": "if", "per_device_batch_size": 8}, scaling={"num_workers": 4}))
    t = job.training
    assert (t.learning_rate, t.lr_scheduler, t.warmup_ratio, t.global_batch_size, t.epochs, t.precision) == (
        2e-5, "cosine", 0.1, 256, 2, "bf16")
    assert job.gradient_accumulation_steps == 256 // (8 * 4)
    tacie = parse_job(sft(training={"preset": "tacie", "epochs": 1})).training
    assert (tacie.learning_rate, tacie.global_batch_size, tacie.epochs) == (5e-6, 128, 1)  # the job's epochs win


@pytest.mark.parametrize("training,scaling,message", [
    ({"global_batch_size": 10, "per_device_batch_size": 4}, {}, "global_batch_size 10 is not a multiple of per_device_batch_size 4 x num_workers 1 = 4"),
    ({"global_batch_size": 256, "per_device_batch_size": 4}, {"num_workers": 3}, "not a multiple of per_device_batch_size 4 x num_workers 3 = 12"),
    ({"preset": "alpaca"}, {}, "unknown recipe 'alpaca'"),
    ({"strategy": "deepspeed_zero3", "lora": {"r": 8}}, {}, "lora with deepspeed_zero3"),
])
def test_bad_training_config_names_the_field(training, scaling, message):
    with pytest.raises(ConfigError, match="training") as err:
        parse_job(sft(training=training, scaling=scaling))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_source_needs_one_location_and_one_ratio():
    with pytest.raises(ConfigError, match="exactly one of 'run', 'path' or 'hf'"):
        parse_job(sft(data={"sources": [{"path": "a.jsonl", "run": "runs/x"}]}))
    with pytest.raises(ConfigError, match="at most one of 'fraction' or 'rows'"):
        parse_job(sft(data={"sources": [{"path": "a.jsonl", "fraction": 0.5, "rows": 3}]}))


# -------------------------------------------------------------------- data
def test_mixing_by_ratios_is_seeded_and_counts_every_source(tmp_path):
    from ray_pipeline.training.data import load_sft_rows

    extra = write_jsonl(tmp_path / "extra.jsonl", [{"messages": [{"role": "user", "content": q},
                                                                 {"role": "assistant", "content": a}]}
                                                   for q, a in ((r["instruction"], r["output"]) for r in seed_rows())])
    sources = [SFTDataSource(path=str(QUICKSTART_SEEDS), fraction=0.5), SFTDataSource(path=str(extra), fraction=2.5)]
    rows, report = load_sft_rows(sources, seed=1)
    assert [m.rows_available for m in report] == [24, 8]
    assert [m.rows_taken for m in report] == [12, 20]  # half the seeds; the extra set twice over plus 4
    extra_rows = [r["instruction"] for r in rows if r["source"] == "extra"]
    assert all(extra_rows.count(q) in (2, 3) for q in set(extra_rows)) and len(set(extra_rows)) == 8
    again, _ = load_sft_rows(sources, seed=1)
    assert again == rows
    other, _ = load_sft_rows(sources, seed=2)
    assert other != rows
    # the ablation: fraction 0 leaves a source out
    without, report = load_sft_rows([sources[0], SFTDataSource(path=str(extra), fraction=0)], seed=1)
    assert report[1].rows_taken == 0 and all(r["source"] == "quickstart" for r in without)


def test_a_run_directory_is_read_through_its_sft_file(tmp_path):
    from ray_pipeline.training.data import load_sft_rows

    run = tmp_path / "runs" / "fused"
    run.mkdir(parents=True)
    write_jsonl(run / "sft_messages.jsonl", [{"messages": [{"role": "user", "content": r["instruction"]},
                                                           {"role": "assistant", "content": r["output"]}]}
                                            for r in seed_rows()[:5]])
    rows, report = load_sft_rows([SFTDataSource(run=str(run))], seed=0)
    assert len(rows) == 5 and report[0].label == "fused" and rows[0]["output"] == seed_rows()[0]["output"]
    with pytest.raises(ConfigError, match="has no sft_messages.jsonl"):
        load_sft_rows([SFTDataSource(run=str(tmp_path))], seed=0)
    with pytest.raises(ConfigError, match="run directory .* not found"):
        load_sft_rows([SFTDataSource(run=str(tmp_path / "nope"))], seed=0)


# ------------------------------------------------------ bad input, via the CLI
def run_bad(tmp_path: Path, job: dict) -> tuple[int, str]:
    job.setdefault("output_dir", str(tmp_path / "out"))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = fusion_cli("run", str(path), timeout=300)
    assert not (tmp_path / "out").exists(), "nothing may be written when the input is bad"
    assert "Ray" not in result.stderr  # stopped before Ray (and any worker) started
    lines = [line for line in result.stderr.splitlines() if line.startswith("fusion: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return result.returncode, lines[0]


def test_bad_input_stops_before_any_worker_with_one_line(tmp_path, tiny):
    model = {"path": str(tiny)}
    cases = []
    # an empty mix
    cases.append((sft(model=model, data={"sources": [{"path": str(QUICKSTART_SEEDS), "fraction": 0}]}),
                  "the mix is empty"))
    # rows with neither an instruction nor a response
    junk = write_jsonl(tmp_path / "junk.jsonl", [{"text": "a", "label": 1}] * 4)
    cases.append((sft(model=model, data={"sources": [{"path": str(junk)}]}), "no instruction field (keys: label, text)"))
    # instructions without responses
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"instruction": "Say hi."}, {"instruction": "Add 1 and 2."}])
    cases.append((sft(model=model, data={"sources": [{"path": str(bare)}]}), "none of its 2 rows has a response"))
    # a model that is not a causal LM
    from transformers import BertConfig

    bert = tmp_path / "bert"
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    cfg.architectures = ["BertModel"]
    cfg.save_pretrained(bert)
    cases.append((sft(model={"path": str(bert)}), "model.path: " + str(bert) + " is not a causal language model (BertModel)"))
    cases.append((sft(model={"path": str(tmp_path / "missing-model")}), "model.path: " + str(tmp_path / "missing-model") + " not found"))
    # chat format but the model has no chat template
    bare_model = tmp_path / "no-template"
    save_tiny_model(bare_model)
    (bare_model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare_model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare_model / "tokenizer_config.json").write_text(json.dumps(config))
    cases.append((sft(model={"path": str(bare_model)}), "has no chat template"))
    # every case stops in the driver's preflight, before Ray and any worker
    from ray_pipeline.training.pipeline import preflight

    for job, expected in cases:
        with pytest.raises(ConfigError) as err:
            preflight(parse_job(job))
        assert expected in str(err.value) and "\n" not in str(err.value), (expected, str(err.value))
    # and through the command line: exit 2, one line, nothing written
    for job, expected in (cases[1], cases[3]):
        code, line = run_bad(tmp_path, job)
        assert code == 2 and expected in line, (expected, line)


def test_every_shipped_job_file_is_valid():
    from ray_pipeline.jobs import load_job

    files = sorted((REPO / "jobs").glob("*.yaml"))
    kinds = {load_job(f).kind for f in files}
    assert {"instruction_fusion", "tacie", "sft"} <= kinds
    quick = load_job(REPO / "jobs" / "sft_quickstart.yaml")
    assert Path(quick.data.sources[0].path) == QUICKSTART_SEEDS  # relative to the job file
    assert quick.data.sources[1].run == "runs/quickstart"  # relative to the current directory, like output_dir
    paper = load_job(REPO / "jobs" / "sft_if_paper.yaml")
    assert paper.gradient_accumulation_steps == 8 and paper.training.learning_rate == 2e-5
