"""``fusion validate`` offline: hub ids checked as far as this machine allows, the rest named, never a failure."""

from __future__ import annotations

import json

import pytest
import yaml

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.jobs import JOBS, check_references, load_job, parse_job
from ray_pipeline.jobs import validate_job as _validate_job
from tests.conftest import REPO, fusion_cli

QUICKSTART_SEEDS = REPO / "ray_pipeline/data/seeds/quickstart.jsonl"


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """Hugging Face caches that hold nothing (this machine's own caches must not decide the test)."""
    from huggingface_hub import constants

    hub, datasets = tmp_path / "hf-hub", tmp_path / "hf-datasets"
    hub.mkdir()
    datasets.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(datasets))
    for env in ("HUMANEVAL_OVERRIDE_PATH", "MBPP_OVERRIDE_PATH", "FUSION_MULTIPLE_PATH"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr("ray_pipeline.evaluation.evalplus_data.evalplus_cached", lambda dataset: False)
    return hub


def validate_job(job, full):
    """``fusion validate`` with the kind's full preflight replaced by ``full``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(f"{JOBS[job.kind].module}.validate", full)
        return _validate_job(job)


def _if_job(seeds):
    return parse_job({"kind": "instruction_fusion", "name": "t", "seeds": seeds, "teacher": "embedded",
                      "fusion": {"num_instructions": 2}})


def test_a_hub_dataset_is_checked_offline_as_far_as_the_cache_allows(empty_hf_cache):
    job = _if_job([{"hf": "theblackcat102/evol-codealpaca-v1"}, {"path": str(QUICKSTART_SEEDS)}])
    refs = check_references(job)
    assert "hub dataset theblackcat102/evol-codealpaca-v1 exists (seeds[0].hf; split train)" in refs.not_checked
    assert not refs.complete
    report = validate_job(job, full=lambda j: pytest.fail("the full preflight needs the hub dataset"))
    assert report["offline_check"].startswith("partial")
    assert report["seeds"]["seeds"] == 24  # the local source was still read
    assert report["templates"] == {"fusion.template": "if_fusion@v2", "response.template": "if_response@v2"}
    # the same id in the local hub cache: checked, and the full preflight runs
    (empty_hf_cache / "datasets--theblackcat102--evol-codealpaca-v1").mkdir()
    refs = check_references(job)
    assert refs.complete and not refs.not_checked
    assert any("theblackcat102/evol-codealpaca-v1 (cached, in the local Hugging Face cache" in c for c in refs.checked)
    assert validate_job(job, full=lambda j: {"full": True})["full"] is True


def test_a_malformed_hub_id_is_a_one_line_error(empty_hf_cache):
    with pytest.raises(ConfigError, match=r"seeds\[0\].hf: 'evol codealpaca' is neither a local path nor a "
                                          r"Hugging Face hub id") as err:
        check_references(_if_job([{"hf": "evol codealpaca"}]))
    assert "\n" not in str(err.value)
    sft = parse_job({"kind": "sft", "name": "t", "model": {"path": "meta llama/x"},
                     "data": {"sources": [{"path": str(QUICKSTART_SEEDS)}]}})
    with pytest.raises(ConfigError, match="model.path: 'meta llama/x' is neither"):
        check_references(sft)


def test_an_sft_run_that_has_not_happened_yet_is_named_not_failed(tmp_path, empty_hf_cache):
    job = parse_job({"kind": "sft", "name": "t", "model": {"path": "meta-llama/Meta-Llama-3-8B"},
                     "data": {"sources": [{"path": str(QUICKSTART_SEEDS), "name": "seeds"},
                                          {"run": str(tmp_path / "runs/tacie"), "select": {"rounds": [0]}}]}})
    report = validate_job(job, full=lambda j: pytest.fail("the model and the run are not here"))
    assert report["not_checked_offline"] == [
        "hub model meta-llama/Meta-Llama-3-8B exists (model.path)",
        f"run directory {tmp_path / 'runs/tacie'} exists (data.sources[1].run; made by its data job, which has not "
        "run here)",
    ]
    assert report["data"]["rows"] == 24 and [s["label"] for s in report["data"]["sources"]] == ["seeds"]


def test_every_shipped_job_validates_offline(empty_hf_cache):
    """No job file in jobs/ fails `fusion validate` for want of the network; the paper jobs name their hub ids."""
    not_checked = {}
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        job = load_job(path)
        report = validate_job(job, full=lambda j: {"full": True})
        not_checked[path.name] = report["not_checked_offline"]
    assert "hub dataset theblackcat102/evol-codealpaca-v1 exists (seeds[0].hf; split train)" in not_checked["if_paper.yaml"]
    assert "API model gpt-4-1106-preview exists (teacher.model; served by the OpenAI API, reached at run time)" in \
        not_checked["if_paper.yaml"]
    tacie = " ".join(not_checked["tacie_paper.yaml"])
    for hub_id in ("tatsu-lab/alpaca", "openai/gsm8k", "sahil2801/CodeAlpaca-20k", "meta-llama/Meta-Llama-3-8B-Instruct",
                   "ShareGPT_V3_unfiltered_cleaned_split.json"):
        assert hub_id in tacie, hub_id
    assert not_checked["quickstart.yaml"] == []


def test_validate_on_the_command_line_names_what_it_could_not_check(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
           "HF_HUB_OFFLINE": "1"}
    proc = fusion_cli("validate", str(REPO / "jobs" / "if_paper.yaml"), timeout=120, extra_env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not checked offline: hub dataset theblackcat102/evol-codealpaca-v1 exists" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["kind"] == "instruction_fusion" and out["offline_check"].startswith("partial")
    assert out["templates_not_from_papers"] == {"response.template": "if_response@v2 (authors_code)"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"kind": "instruction_fusion", "name": "t", "teacher": "embedded",
                                   "seeds": [{"hf": "not a/hub id"}], "fusion": {"num_instructions": 2}}))
    proc = fusion_cli("validate", str(bad), timeout=120)
    assert proc.returncode == 2 and "seeds[0].hf: 'not a/hub id' is neither a local path" in proc.stderr
