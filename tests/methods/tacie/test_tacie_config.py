"""TaCIE job files: validation before any work, defaults, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ray_pipeline.jobs import load_job, parse_job
from ray_pipeline.methods.tacie.config import TaCIEJob
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.core.outputs import config_hash
from tests.conftest import CODE_ALPACA, REPO, fusion_cli, openai_teacher


def _tacie(**over):
    data = {"kind": "tacie", "name": "t", "seeds": [{"path": "seeds.jsonl"}], "teacher": "embedded"}
    data.update(over)
    return data


def test_defaults_follow_the_paper():
    job = parse_job(_tacie())
    assert isinstance(job, TaCIEJob)
    assert job.evolution.rounds == 6 and job.evolution.token_limit == 4000
    assert job.scorer.num_perturbations == 10 and job.scorer.drop_prob == 0.2
    assert job.collection.diversify == 3
    assert [b.name for b in job.filters.decontaminate] == ["humaneval", "mbpp", "gsm8k"]
    assert job.response.template == "tacie_response@v1"  # the paper gives no response prompt
    # setting only the sampling keeps TaCIE's response template
    assert parse_job(_tacie(response={"sampling": {"max_tokens": 64}})).response.template == "tacie_response@v1"


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"scorer": {"drop_prob": 1.5}}, "scorer.drop_prob"),
        ({"scorer": {"backend": "onnx"}}, "scorer.backend"),
        ({"collection": {"k_min": 9, "k_max": 3}}, "k_min must not exceed k_max"),
        ({"evolution": {"rounds": -1}}, "evolution.rounds"),
        ({"evolution": {"depth": 3}}, "evolution.depth"),
        ({"filters": {"ngram": 0}}, "filters.ngram"),
    ],
)
def test_bad_fields_name_the_field(over, needle):
    with pytest.raises(ConfigError) as err:
        parse_job(_tacie(**over), "job.yaml")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_relative_paths_resolve_against_the_job_file(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "scorer").mkdir()
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_tacie(
        filters={"decontaminate": ["gsm8k", {"name": "mine", "path": "bench/mine.jsonl"}]},
        scorer={"model": "scorer"},
    )))
    job = load_job(path)
    assert job.filters.decontaminate[1].path == str(tmp_path / "bench/mine.jsonl")
    assert job.scorer.model == str(tmp_path / "scorer")
    assert job.embedding.model == "all-MiniLM-L6-v2"  # a bundled name, not a path


def test_more_rounds_continue_the_same_run():
    a = parse_job(_tacie(evolution={"rounds": 2})).model_dump(mode="json")
    b = parse_job(_tacie(evolution={"rounds": 6})).model_dump(mode="json")
    c = parse_job(_tacie(evolution={"rounds": 2, "token_limit": 100})).model_dump(mode="json")
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_shipped_tacie_jobs_validate():
    for name in ("tacie_quickstart.yaml", "tacie_openai.yaml"):
        job = load_job(REPO / "jobs" / name)
        assert job.kind == "tacie"


def _bad_run(tmp_path: Path, **over) -> tuple:
    job = _tacie(
        seeds=[{"path": str(CODE_ALPACA), "limit": 8}],
        teacher=openai_teacher("http://127.0.0.1:9/v1"),
        output_dir=str(tmp_path / "run"),
        **over,
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return fusion_cli("run", str(path), timeout=300), tmp_path / "run"


@pytest.mark.parametrize(
    "over, needles",
    [
        ({"filters": {"decontaminate": [{"name": "humaneval", "path": "/nonexistent/he.jsonl.gz"}]}},
         ["humaneval", "he.jsonl.gz"]),
        ({"filters": {"decontaminate": []}, "scorer": {"model": "/nonexistent/scorer-model"}}, ["scorer-model"]),
        ({"filters": {"decontaminate": []}, "collection": {"template": "tacie_diversify@v9"}}, ["tacie_diversify@v9"]),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, over, needles):
    if not CODE_ALPACA.is_file():
        pytest.skip("../shared is absent")
    proc, run = _bad_run(tmp_path, **over)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fusion: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0]
    assert not run.exists(), "nothing is written when the job is rejected"


def test_validate_reports_what_the_run_would_use(tmp_path):
    if not CODE_ALPACA.is_file():
        pytest.skip("../shared is absent")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"prompt": "Write a function that adds two numbers."}) + "\n")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_tacie(
        seeds=[{"path": str(CODE_ALPACA), "limit": 8}],
        filters={"decontaminate": [{"name": "mine", "path": str(bench)}]},
    )))
    proc = fusion_cli("validate", str(path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["kind"] == "tacie" and out["seeds"]["seeds"] == 8
    assert out["decontaminate"] == {"mine": 1}
    assert out["templates"]["fusion"] == "tacie_fusion@v2" and out["templates"]["depth"] == "tacie_depth@v2"
    assert out["templates_not_from_papers"] == {"response": "tacie_response@v1 (project)"}
