"""Evaluation without running programs: pass@k, job config, answer post-processing, tables."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from ray_pipeline.core.config import VLLMTeacherConfig, job_to_dict
from ray_pipeline.evaluation.config import EvalJob
from ray_pipeline.jobs import load_job, parse_job
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.evaluation import postprocess, results
from ray_pipeline.evaluation.generation import request_rows
from ray_pipeline.evaluation.passk import mean_pass_at_k, pass_at_k
from ray_pipeline.evaluation.problems import Problem
from ray_pipeline.core.outputs import config_hash


# ------------------------------------------------------------------- pass@k
@pytest.mark.parametrize("n,c,k", [(n, c, k) for n in (1, 2, 5, 10, 20) for c in range(0, n + 1, max(1, n // 4))
                                   for k in (1, 2, 5, 10) if k <= n])
def test_pass_at_k_equals_the_combinatorial_definition(n, c, k):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_is_the_chance_that_some_drawn_sample_passes():
    # brute force: every k-subset of 6 samples, 2 of which pass
    samples = [True, True, False, False, False, False]
    for k in (1, 2, 3):
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(6, 2, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_large_n_is_stable_and_bad_arguments_are_refused():
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    assert pass_at_k(200, 0, 100) == 0.0
    assert pass_at_k(1, 1, 1) == 1.0
    assert mean_pass_at_k([(1, 1), (1, 0), (1, 0), (1, 1)], 1) == 0.5
    assert mean_pass_at_k([], 1) is None
    for bad in ((2, 3, 1), (2, 1, 3), (2, 1, 0)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


# ------------------------------------------------------------------- config
def _job(**over):
    data = {"kind": "eval", "name": "ev", "models": ["embedded"], "benchmarks": [{"name": "humaneval"}]}
    data.update(over)
    return parse_job(data)


def test_eval_job_shorthands_and_defaults():
    job = _job(models=["embedded", "runs/sft_quickstart/model", {"label": "api", "backend": {"kind": "openai", "model": "gpt-4o"}, "prompt": "chat"}],
               benchmarks=[{"name": "multiple", "languages": ["JavaScript", "rust", "c++"]}])
    assert isinstance(job, EvalJob)
    assert [m.label for m in job.models] == ["embedded", "sft_quickstart-model", "api"]
    assert job.models[0].backend.kind == "embedded"
    assert isinstance(job.models[1].backend, VLLMTeacherConfig) and job.models[1].backend.model == "runs/sft_quickstart/model"
    assert job.models[2].prompt == "chat"
    assert job.benchmarks[0].languages == ["js", "rs", "cpp"]
    assert job.sampling.n == 1 and job.sampling.temperature == 0.0 and job.sampling.k == [1]


@pytest.mark.parametrize("over,message", [
    ({"sampling": {"n": 2, "k": [1, 5], "temperature": 0.8}}, "k: [5] not in 1..n=2"),
    ({"sampling": {"n": 4}}, "need temperature > 0"),
    ({"benchmarks": [{"name": "multiple", "languages": ["cobol"]}]}, "unknown ['cobol']"),
    ({"benchmarks": [{"name": "humaneval"}, {"name": "humaneval"}]}, "'humaneval' listed twice"),
    ({"models": ["embedded", "embedded"]}, "label 'embedded' used twice"),
    ({"benchmarks": [{"name": "apps"}]}, "benchmarks.0.name"),
    ({"models": []}, "models"),
])
def test_bad_eval_configs_are_one_line_errors(over, message):
    with pytest.raises(ConfigError) as err:
        _job(**over)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_paths_resolve_against_the_job_file_and_parallelism_does_not_change_the_hash(tmp_path):
    (tmp_path / "ckpt").mkdir()
    job_file = tmp_path / "eval.yaml"
    job_file.write_text(json.dumps({"kind": "eval", "name": "ev", "models": ["./ckpt"],
                                    "benchmarks": [{"name": "mbpp", "path": "data/mbpp.jsonl.gz"}]}))
    job = load_job(job_file)
    assert job.models[0].backend.model == str(tmp_path / "ckpt")
    assert job.benchmarks[0].path == str(tmp_path / "data/mbpp.jsonl.gz")
    a = job_to_dict(job)
    job.sandbox.parallel, job.sandbox.num_actors = 8, 3
    assert config_hash(job_to_dict(job)) == config_hash(a)
    job.sandbox.memory_mb = 512  # a limit changes verdicts, so it is part of the job
    assert config_hash(job_to_dict(job)) != config_hash(a)


# -------------------------------------------------------------- generation
HE = Problem("humaneval", "python", "HumanEval/2", 'def truncate_number(number: float) -> float:\n    """Frac."""\n',
             "truncate_number", ("\ndef ", "\nclass ", "\nif __name__"))
JS = Problem("multiple", "js", "HumanEval_23_strlen", "//Return length\nfunction strlen(string){\n", "strlen",
             ("\nfunction ", "\n/*", "\n//", "\nconsole.log"), "const assert = require('node:assert');\n")


def test_requests_are_seeded_per_sample_and_differ_between_modes():
    job = _job(models=["embedded", {"label": "c", "backend": "embedded", "prompt": "chat"}],
               sampling={"n": 3, "temperature": 0.8, "k": [1, 2]})
    plain = request_rows([HE, JS], job.models[0], job.sampling, 7, "m", {})
    chat = request_rows([HE], job.models[1], job.sampling, 7, "m", {})
    assert len(plain) == 6 and len(chat) == 3
    seeds = [json.loads(r["sampling"])["seed"] for r in plain]
    assert len(set(seeds)) == 6
    assert seeds == [json.loads(r["sampling"])["seed"] for r in request_rows([HE, JS], job.models[0], job.sampling, 7, "m", {})]
    first = json.loads(plain[0]["messages"])
    assert first == HE.prompt.strip() + "\n"  # evalplus's base prompt: a plain completion
    assert json.loads(plain[3]["messages"]) == JS.prompt.strip()  # MultiPL-E strips the prompt
    assert json.loads(plain[3]["sampling"])["stop"] == list(JS.stop)
    msgs = json.loads(chat[0]["messages"])
    assert msgs[0]["role"] == "user" and "self-contained Python script" in msgs[0]["content"]
    assert HE.prompt.strip() in msgs[0]["content"] and json.loads(chat[0]["sampling"])["stop"] == []
    assert len({r["cache_key"] for r in plain + chat}) == 9


def test_a_benchmark_prompt_mode_overrides_the_models():
    """The IF paper (Table 3): MultiPL-E in completion mode, HumanEval/MBPP as instructions, for the same model."""
    from ray_pipeline.evaluation.generation import PREFIX, to_sample

    job = _job(models=[{"label": "tuned", "backend": "embedded", "prompt": "chat"}, "embedded"],
               benchmarks=[{"name": "humaneval"}, {"name": "multiple", "languages": ["js"], "prompt": "completion"}])
    tuned, base = job.models
    assert job.prompt_modes(tuned) == {"humaneval": "chat", "multiple": "completion"}
    assert job.prompt_modes(base) == {"humaneval": "completion", "multiple": "completion"}
    rows = request_rows([HE, JS], tuned, job.sampling, 7, "m", {}, job.prompt_modes(tuned))
    he, js = (json.loads(r["messages"]) for r in rows)
    assert he[0]["role"] == "user" and HE.prompt.strip() in he[0]["content"]  # chat: the model's own mode
    assert js == JS.prompt.strip() and json.loads(rows[1]["sampling"])["stop"] == list(JS.stop)  # completion
    # the answers are read back in the mode they were asked in
    answer = {f"{PREFIX}_text": "  return string.length;\n}\n\nconsole.log(1)", f"{PREFIX}_error": "",
              f"{PREFIX}_finish_reason": "stop", f"{PREFIX}_completion_tokens": 9}
    sample = to_sample({**rows[1], **answer}, job.prompt_modes(tuned))
    assert sample["solution"] == "  return string.length;\n}\n"
    with pytest.raises(ConfigError, match="benchmarks.0.prompt"):
        _job(benchmarks=[{"name": "humaneval", "prompt": "instruct"}])


def test_solutions_from_completions_and_chat_answers():
    sol = postprocess.solution_from_completion(HE, "    return number % 1.0\n\n\ndef extra():\n    pass\n")
    assert "return number % 1.0" in sol and "def extra" not in sol and sol.startswith("def truncate_number")
    chat = "Sure!\n```python\nimport math\n\ndef truncate_number(number):\n    return number - math.floor(number)\n```\nDone."
    sol = postprocess.solution_from_chat(HE, chat)
    assert "import math" in sol and "Sure" not in sol and "```" not in sol
    # MultiPL-E: cut at the earliest stop token, the stop token dropped
    assert postprocess.solution_from_completion(JS, "  return string.length;\n}\n\nconsole.log(1)\n//x") == "  return string.length;\n}\n"
    answer = "```javascript\n//Return length\nfunction strlen(string){\n  return string.length;\n}\n```"
    assert postprocess.solution_from_chat(JS, answer) == "\n  return string.length;\n}\n"
    assert postprocess.cut_at_stop("abc", ()) == "abc"


# ------------------------------------------------------------------ tables
def _scored(model, suite, task, sample, passed, base=None, skipped=""):
    return {"model": model, "suite": suite, "task_id": task, "sample": sample, "passed": passed,
            "base_passed": passed if base is None else base, "status": "x", "skipped": skipped}


def test_task_rows_and_summary_follow_the_papers_layout():
    rng = random.Random(0)
    scored = []
    truth: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for model in ("base", "sft"):
        for suite in ("humaneval", "multiple-js"):
            for t in range(5):
                base = [rng.random() < 0.6 for _ in range(4)]
                plus = [b and rng.random() < 0.7 for b in base]
                for i in range(4):
                    scored.append(_scored(model, suite, f"HumanEval/{t}", i, plus[i], base[i]))
                truth.setdefault((model, suite), []).append((4, sum(plus), sum(base)))
        scored.append(_scored(model, "multiple-swift", "HumanEval_0_x", 0, False, skipped="swiftc not found"))
    tasks = results.task_rows(scored, [1, 2])
    assert len(tasks) == 2 * (5 + 5 + 1)
    summary = results.summarise(tasks, ["base", "sft"], [1, 2])
    assert [c["title"] for c in summary["columns"]] == ["HumanEval", "HumanEval+", "JavaScript", "Swift"]
    for model in ("base", "sft"):
        he = truth[(model, "humaneval")]
        cells = summary["models"][model]
        assert cells["humaneval"]["pass@2"] == pytest.approx(sum(pass_at_k(n, b, 2) for n, _, b in he) / 5)
        assert cells["humaneval+"]["pass@1"] == pytest.approx(sum(c / n for n, c, _ in he) / 5)
        assert cells["humaneval+"]["pass@1"] <= cells["humaneval"]["pass@1"]
        assert cells["swift"] == {"skipped": "swiftc not found", "tasks": 0}
    md = results.to_markdown(summary, "t")
    assert "| Model | HumanEval | HumanEval+ | JavaScript | Swift |" in md
    assert "skipped[1]" in md and "[1] swiftc not found" in md and "| Δ sft vs base |" in md
    base_he = 100 * summary["models"]["base"]["humaneval"]["pass@1"]
    assert f"| base | {base_he:.1f} |" in md


def test_compare_merges_runs_and_renames_clashing_labels():
    one = {"k": [1], "columns": [{"key": "humaneval", "title": "HumanEval"}],
           "models": {"m": {"humaneval": {"pass@1": 0.25, "tasks": 4}}}}
    two = {"k": [1, 10], "columns": [{"key": "java", "title": "Java"}, {"key": "humaneval", "title": "HumanEval"}],
           "models": {"m": {"humaneval": {"pass@1": 0.5, "pass@10": 0.9, "tasks": 4}, "java": {"pass@1": 0.1, "pass@10": 0.2, "tasks": 3}}}}
    merged = results.compare([("run1", one), ("run2", two)])
    assert list(merged["models"]) == ["m", "run2/m"]
    assert [c["key"] for c in merged["columns"]] == ["humaneval", "java"]
    assert merged["k"] == [1]  # pass@10 is not in every run
    md = results.to_markdown(merged)
    assert "| Δ run2/m vs m | +25.0 | – |" in md


def test_a_rerun_with_every_answer_cached_needs_no_teacher(tmp_path):
    from contextlib import contextmanager

    from ray_pipeline.core.config import RayConfig
    from ray_pipeline.evaluation.generation import PREFIX, to_sample
    from ray_pipeline.teachers.base import ChatResult
    from ray_pipeline.teachers.calls import TeacherCalls

    @contextmanager
    def no_teacher():
        raise RuntimeError("the teacher was started")
        yield

    job = _job()
    first = request_rows([HE], job.models[0], job.sampling, 7, "m", {})
    cache = {first[0]["cache_key"]: ChatResult(text="    return number % 1.0\n", finish_reason="stop",
                                               prompt_tokens=30, completion_tokens=9)}
    rows = request_rows([HE], job.models[0], job.sampling, 7, "m", cache)
    with TeacherCalls(None, RayConfig(), tmp_path, start=no_teacher) as calls:
        answered = calls.run(rows, PREFIX)
        assert answered[0][f"{PREFIX}_text"] == "    return number % 1.0\n" and answered[0][f"{PREFIX}_cached"]
        assert answered[0][f"{PREFIX}_completion_tokens"] == 9 and answered[0][f"{PREFIX}_error"] == ""
        assert "return number % 1.0" in to_sample(answered[0], "completion")["solution"]
        assert calls.tally.cache_hits == 1 and calls.tally.calls == 0 and not calls.started
        with pytest.raises(RuntimeError, match="the teacher was started"):  # a row the cache lacks needs it
            calls.run(first, PREFIX)


def test_multiple_data_comes_from_fusion_multiple_path_when_a_benchmark_gives_none(tmp_path, monkeypatch):
    from ray_pipeline.core.errors import EvaluationError
    from ray_pipeline.evaluation.multiple_data import load_multiple

    row = {"name": "HumanEval_0_x", "language": "js", "prompt": "function x() {", "tests": "console.assert(x() === 1);", "stop_tokens": ["\n}"]}
    (tmp_path / "humaneval-js-reworded.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("FUSION_MULTIPLE_PATH", str(tmp_path))
    assert [p.task_id for p in load_multiple("js")] == ["HumanEval_0_x"]
    with pytest.raises(EvaluationError, match="humaneval-php-reworded.jsonl"):  # the variable's directory, not the hub
        load_multiple("php")
