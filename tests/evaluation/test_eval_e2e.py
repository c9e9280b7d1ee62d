"""Evaluation end to end: the scoring stage on known solutions, and a job on the embedded model."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from ray_pipeline.evaluation.evalplus_data import load_evalplus
from ray_pipeline.evaluation.multiple_data import load_multiple
from ray_pipeline.evaluation.execution_stage import ExecutionStage
from tests.conftest import SHARED, fusion_cli, needs_bwrap, read_jsonl, require_shared

EVALPLUS = SHARED / "data/bench/evalplus"
MULTIPLE = SHARED / "data/bench/multipl-e"
HE_PATH = EVALPLUS / "HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP_PATH = EVALPLUS / "MbppPlus-v0.2.0.jsonl.gz"
SANDBOX = {"parallel": 2, "num_actors": 1, "memory_mb": 2048, "timeout_s": None, "min_time_limit": 1.0,
           "gt_time_limit_factor": 4.0}


@pytest.mark.sandbox
@needs_bwrap
def test_score_stage_passes_right_solutions_and_fails_wrong_ones_and_skips_missing_toolchains(monkeypatch):
    require_shared()
    import pandas as pd

    he = load_evalplus("humaneval", str(HE_PATH), task_ids=["HumanEval/0", "HumanEval/2"])
    problems = {p.task_id: p for p in he.as_problems()}
    js = load_multiple("js", str(MULTIPLE), limit=None)
    strlen = next(p for p in js if p.task_id == "HumanEval_23_strlen")
    swift = next(p for p in load_multiple("swift", str(MULTIPLE)) if p.task_id == "HumanEval_23_strlen")
    right = he.problems["HumanEval/2"]["prompt"] + he.problems["HumanEval/2"]["canonical_solution"]
    wrong = he.problems["HumanEval/2"]["prompt"] + "    return 0.5\n"
    rows = [
        ("humaneval", problems["HumanEval/2"], right, ""),
        ("humaneval", problems["HumanEval/2"], wrong, ""),
        ("humaneval", problems["HumanEval/0"], "", "api_error: HTTP 500 after 7 attempts"),
        ("multiple-js", strlen, "\n  return string.length;\n}\n", ""),
        ("multiple-js", strlen, "\n  return 42;\n}\n", ""),
        ("multiple-swift", swift, "\n  return string.count\n}\n", ""),
    ]
    specs = {
        "humaneval": {"name": "humaneval", "benchmark": "humaneval", "language": "python", "path": str(HE_PATH),
                      "task_ids": ["HumanEval/0", "HumanEval/2"]},
        "multiple-js": {"name": "multiple-js", "benchmark": "multiple", "language": "js", "path": str(MULTIPLE),
                        "task_ids": [strlen.task_id]},
        "multiple-swift": {"name": "multiple-swift", "benchmark": "multiple", "language": "swift",
                           "path": str(MULTIPLE), "task_ids": [swift.task_id]},
    }
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no swiftc on this PATH, whatever the machine has
    stage = ExecutionStage(specs, SANDBOX)
    batch = pd.DataFrame([{"suite": s, "problem": json.dumps(p.to_json()), "solution": sol, "generation_error": err}
                          for s, p, sol, err in rows])
    out = stage(batch).to_dict("records")
    assert [r["passed"] for r in out] == [True, False, False, True, False, False]
    assert out[0]["status"] == "pass" and out[0]["base_status"] == "pass"
    assert out[1]["status"] == "fail" and out[1]["base_passed"] is False
    assert out[2]["status"] == "generation_error" and "HTTP 500" in out[2]["detail"]
    assert out[3]["status"] == "OK" and out[3]["exit_code"] == 0
    assert out[4]["status"] == "AssertionError"
    assert out[5]["status"] == "skipped" and "swiftc" in out[5]["skipped"]
    assert all(r["node"] for r in out)


def _eval_job(tmp_path, **over):
    job = {
        "kind": "eval",
        "name": "eval_e2e",
        "seed": 3,
        "output_dir": str(tmp_path / "run"),
        "models": [{"label": "gemma-base", "backend": "embedded", "prompt": "completion"}],
        "benchmarks": [
            {"name": "humaneval", "path": str(HE_PATH), "tasks": ["HumanEval/0", "HumanEval/23"]},
            {"name": "mbpp", "path": str(MBPP_PATH), "limit": 2},
            {"name": "multiple", "path": str(MULTIPLE), "languages": ["js", "cpp", "swift"],
             "tasks": ["HumanEval/23"]},
        ],
        "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 64},
        "sandbox": {"parallel": 2},
    }
    job.update(over)
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@needs_bwrap
@pytest.mark.vllm
def test_eval_job_on_the_embedded_model_writes_the_tables_and_resumes_from_its_cache(tmp_path, served_gemma):
    """Gemma 3 270M behind the run's shared vLLM server (``served_gemma``): the code benchmarks in completion
    mode, and the TaCIE paper's GSM8K, IFEval and MT-Bench as chat, the same model answering and judging."""
    require_shared()
    bench = SHARED / "data/bench"
    text = [
        {"name": "gsm8k", "path": str(SHARED / "data/seeds/gsm8k/test.jsonl"), "limit": 1, "prompt": "chat"},
        {"name": "ifeval", "path": str(bench / "ifeval/input_data.jsonl"), "limit": 1, "max_tokens": 64,
         "prompt": "chat"},
        # a math question: both turns judged with GPT-4's reference answer
        {"name": "mt_bench", "path": str(bench / "mt-bench/question.jsonl"), "tasks": ["111"], "max_tokens": 64,
         "judge": {**served_gemma, "max_retries": 1}, "judge_max_tokens": 96},
    ]
    job = _eval_job(tmp_path, models=[{"label": "gemma-base", "backend": served_gemma, "prompt": "completion"}])
    spec = yaml.safe_load(job.read_text())
    spec["benchmarks"] += text
    job.write_text(yaml.safe_dump(spec))
    first = fusion_cli("run", str(job), timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    titles = [c["title"] for c in summary["columns"]]
    assert titles == ["MT-Bench", "IFEval strict", "IFEval loose", "GSM8K",
                      "HumanEval", "HumanEval+", "MBPP", "MBPP+", "JavaScript", "C++", "Swift"]
    cells = summary["models"]["gemma-base"]
    for key in ("humaneval", "humaneval+", "mbpp", "mbpp+", "js", "cpp"):
        assert 0.0 <= cells[key]["pass@1"] <= 1.0 and cells[key]["tasks"] > 0
    assert cells["humaneval+"]["pass@1"] <= cells["humaneval"]["pass@1"]
    if shutil.which("swiftc") is None:
        assert "swiftc" in cells["swift"]["skipped"]
    assert cells["gsm8k"]["tasks"] == 1 and 0.0 <= cells["gsm8k"]["pass@1"] <= 1.0
    assert 0.0 <= cells["ifeval_strict"]["pass@1"] <= cells["ifeval_loose"]["pass@1"] <= 1.0
    mt = cells["mt_bench"]
    assert mt["tasks"] == 1 and (mt["score"] is None or 1.0 <= mt["score"] <= 10.0)
    tasks = read_jsonl(run / "results" / "gemma-base.jsonl")
    assert {(t["suite"], t["task_id"]) for t in tasks} == {
        ("humaneval", "HumanEval/0"), ("humaneval", "HumanEval/23"), ("mbpp", "Mbpp/2"), ("mbpp", "Mbpp/3"),
        ("multiple-js", "HumanEval_23_strlen"), ("multiple-cpp", "HumanEval_23_strlen"),
        ("multiple-swift", "HumanEval_23_strlen"), ("gsm8k", "gsm8k/0"), ("ifeval", "1000"), ("mt_bench", "111")}
    mt_task = next(t for t in tasks if t["suite"] == "mt_bench")
    assert len(mt_task["ratings"][0]) == 2 and all(mt_task["samples"][0]["judgments"])
    statuses = {t["suite"]: t["samples"][0]["status"] for t in tasks}
    assert statuses["humaneval"] in ("pass", "fail", "timeout")
    assert statuses["multiple-js"] in ("OK", "SyntaxError", "Exception", "AssertionError", "ReferenceError", "Timeout")
    if shutil.which("swiftc") is None:
        assert statuses["multiple-swift"] == "skipped"
    samples = read_jsonl(run / "samples" / "gemma-base.jsonl")
    assert len(samples) == 9 and all(s["answer"] or s["generation_error"] for s in samples)
    he = next(s for s in samples if s["task_id"] == "HumanEval/23")
    assert he["solution"].lstrip().startswith("def strlen")  # the prompt + completion, sanitised
    md = (run / "summary.md").read_text()
    assert ("| Model | MT-Bench | IFEval strict | IFEval loose | GSM8K | HumanEval | HumanEval+ | MBPP | MBPP+ | "
            "JavaScript | C++ | Swift |") in md
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["generation"]["gemma-base"]["calls"] == 6 + 1 + 1 + 2  # MT-Bench: two turns
    judging = manifest["judging"]
    assert judging["calls"] == 2 and 0 <= judging["unrated_turns"] <= 2  # a small judge may omit [[n]]: recorded
    assert "gemma-base: pass@1 MT-Bench" in first.stdout and "HumanEval" in first.stdout

    again = fusion_cli("run", str(job), timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["generation"]["gemma-base"]["calls"] == 0  # every answer came from the run's cache
    assert manifest["generation"]["gemma-base"]["cache_hits"] == 10
    assert manifest["judging"]["calls"] == 0 and manifest["judging"]["cache_hits"] == 2  # and every judgment
    assert json.loads((run / "summary.json").read_text()) == summary

    compared = fusion_cli("compare", str(run), str(run / "summary.json"), "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr
    assert "| Δ run/gemma-base vs gemma-base |" in compared.stdout  # the second copy is named by its run
    assert (tmp_path / "cmp" / "compare.md").is_file()


def test_bad_eval_inputs_are_one_line_errors_before_any_work(tmp_path):
    require_shared()
    missing = _eval_job(tmp_path, benchmarks=[{"name": "humaneval", "path": str(tmp_path / "nope.jsonl.gz")}])
    r = fusion_cli("validate", str(missing))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope.jsonl.gz" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "HumanEval_0_x", "language": "js"}\nnot json\n')
    (tmp_path / "ml").mkdir()
    shutil.copy(bad, tmp_path / "ml" / "humaneval-js-reworded.jsonl")
    malformed = _eval_job(tmp_path, benchmarks=[{"name": "multiple", "path": str(tmp_path / "ml"), "languages": ["js"]}])
    r = fusion_cli("run", str(malformed))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "humaneval-js-reworded.jsonl" in r.stderr
    assert not (tmp_path / "run").exists()  # nothing written
    r = fusion_cli("compare", str(tmp_path))
    assert r.returncode == 2 and "no summary.json" in r.stderr

