"""The TaCIE paper's benchmarks (GSM8K, IFEval, MT-Bench) through a whole eval job, against a teacher whose
answers are known (the fault server): verdicts, the paper's table, the judge's calls, the cache on a rerun."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import SHARED, fusion_cli, read_jsonl, require_shared
from tests.fault_server import FaultInjectingOpenAIServer

GSM8K_TEST = SHARED / "data/seeds/gsm8k/test.jsonl"
IFEVAL = SHARED / "data/bench/ifeval/input_data.jsonl"
MT_BENCH = SHARED / "data/bench/mt-bench/question.jsonl"


def _gsm8k_rows(n):
    return [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:n]]


def _responder(gsm8k):
    """The model answers GSM8K problem 0 right and 1 wrong; IFEval in lowercase; MT-Bench "first"/"second";
    the judge rates 8, except a judgment of a second turn about a writing question, which has no rating."""
    right = {row["question"].strip(): row["answer"].split("####")[-1].strip() for row in gsm8k[:1]}
    judged: list[str] = []

    def answer(messages):
        whole = " ".join(m["content"] for m in messages)
        last = messages[-1]["content"]
        if "impartial judge" in whole:
            judged.append(whole)
            if "<|The Start of Assistant A's Conversation with User|>" in last and "Compose" in last:
                return "The assistant did well."  # no [[rating]]: recorded, not a crash
            return "The answer is helpful. Rating: [[8]]"
        if len(messages) == 3:  # MT-Bench's second turn: [user, assistant, user]
            return "second"
        for question, number in right.items():
            if question in last:
                return f"Step by step. The answer is {number}."
        if gsm8k[1]["question"].strip() in last:
            return "The answer is 123456."
        return "first" if last.startswith(("Compose", "Draft", "Imagine")) else "all lowercase words here."

    return answer, judged


@pytest.mark.ray
def test_text_benchmarks_score_judge_tabulate_and_rerun_from_the_cache(tmp_path, shared_ray):
    require_shared()
    gsm8k = _gsm8k_rows(2)
    responder, judged = _responder(gsm8k)
    with FaultInjectingOpenAIServer(responder=responder) as srv:
        teacher = {"kind": "openai", "model": "fault-model", "base_url": srv.base_url, "api_key": "sk-test"}
        job = {
            "kind": "eval", "name": "text", "seed": 1, "output_dir": str(tmp_path / "run"),
            "models": [{"label": "m", "backend": teacher, "prompt": "chat"}],
            "benchmarks": [
                {"name": "gsm8k", "path": str(GSM8K_TEST), "limit": 2},
                {"name": "ifeval", "path": str(IFEVAL), "limit": 3},
                {"name": "mt_bench", "path": str(MT_BENCH), "tasks": ["81", "111"],  # writing, math
                 "judge": {**teacher, "model": "fault-judge"}},
            ],
        }
        path = tmp_path / "eval.yaml"
        path.write_text(yaml.safe_dump(job))
        first = fusion_cli("run", str(path), timeout=600, ray_address=shared_ray)  # the session's Ray head
        assert first.returncode == 0, first.stderr[-3000:]
        calls = srv.total_calls
        # 2 GSM8K + 3 IFEval + 2 x 2 MT-Bench turns from the model; 2 x 2 turns judged
        assert calls == 2 + 3 + 4 + 4
        run = tmp_path / "run"
        summary = json.loads((run / "summary.json").read_text())
        assert [c["title"] for c in summary["columns"]] == ["MT-Bench", "IFEval strict", "IFEval loose", "GSM8K"]
        cells = summary["models"]["m"]
        assert cells["gsm8k"]["pass@1"] == 0.5 and cells["gsm8k"]["tasks"] == 2
        assert cells["mt_bench"] == {"tasks": 2, "score": 8.0, "failed": 1, "turn1": 8.0, "turn2": 8.0}
        assert 0.0 <= cells["ifeval_strict"]["pass@1"] <= cells["ifeval_loose"]["pass@1"] <= 1.0
        details = summary["details"]["m"]
        assert set(details["ifeval"]) >= {"prompt_strict", "prompt_loose", "inst_strict", "inst_loose"}
        assert details["mt_bench"]["categories"] == {"math": 8.0, "writing": 8.0}
        tasks = {(t["suite"], t["task_id"]): t for t in read_jsonl(run / "results" / "m.jsonl")}
        right, wrong = tasks[("gsm8k", "gsm8k/0")]["samples"][0], tasks[("gsm8k", "gsm8k/1")]["samples"][0]
        assert right["passed"] and right["extracted"] == right["reference"]
        assert not wrong["passed"] and wrong["extracted"] == "123456"
        writing = tasks[("mt_bench", "81")]
        assert writing["ratings"] == [[8.0, None]] and writing["category"] == "writing"
        assert writing["samples"][0]["judgments"][1] == "The assistant did well."
        assert len(judged) == 4
        # both turns of the math question are judged against GPT-4's reference answer, the writing one's not
        assert sum("Reference Answer" in text for text in judged) == 2
        md = (run / "summary.md").read_text()
        assert "| Model | MT-Bench | IFEval strict | IFEval loose | GSM8K |" in md and "| m | 8.00 |" in md
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["judging"]["calls"] == 4 and manifest["judging"]["unrated_turns"] == 1
        # the estimate made before the run, beside what it spent: every call as counted
        estimate = manifest["estimate"]
        assert estimate["calls"]["expected"] == calls
        assert estimate["actual"]["calls_by_phase"] == {"generation:m": 2 + 3 + 4, "judge": 4}
        assert estimate["actual"]["prompt_tokens"] == manifest["generation"]["m"]["prompt_tokens"] + \
            manifest["judging"]["prompt_tokens"]
        samples = {s["task_id"]: s for s in read_jsonl(run / "samples" / "m.jsonl")}
        assert samples["81"]["answers"] == ["first", "second"]

        again = fusion_cli("run", str(path), timeout=600, ray_address=shared_ray)
        assert again.returncode == 0, again.stderr[-3000:]
        assert srv.total_calls == calls  # the model's and the judge's answers all came from the run's cache
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["judging"]["calls"] == 0 and manifest["generation"]["m"]["calls"] == 0
        assert json.loads((run / "summary.json").read_text()) == summary
