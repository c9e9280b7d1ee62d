"""The evaluation-sweep chart's pods, run here: the commands, job files and environment that
helm/fusion-eval renders are executed as they are (paths of the pod's volumes mapped to temporary
directories), against the fault server as the model's OpenAI-compatible endpoint. This is the seam
between the chart and the CLI: every shard pod's `fusion run --shard --publish`, then the merge pod's
`fusion merge`, must produce one table of the whole sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_pipeline.deploy.manifests import render_chart
from tests.conftest import REPO, SHARED, openai_teacher, require_shared

HE_PATH = SHARED / "data/bench/evalplus/HumanEvalPlus-v0.1.10.jsonl.gz"
TASKS = ["HumanEval/0", "HumanEval/2", "HumanEval/4"]
RIGHT = {"HumanEval/0", "HumanEval/4"}


def _responder(problems: dict[str, dict]):
    def answer(messages: list[dict]) -> str:
        text = messages[-1]["content"]
        for task_id, record in problems.items():
            if f"def {record['entry_point']}(" in text:
                return record["canonical_solution"] if task_id in RIGHT else "    return None\n"
        return "    pass\n"

    return answer


def _run_pod(container: dict, volumes: dict[str, Path], index: int | None, files: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a container's command + args here: $(VAR) expanded as the kubelet does, pod paths mapped to ours."""

    def local(text: str) -> str:
        if index is not None:
            text = text.replace("$(JOB_COMPLETION_INDEX)", str(index))
        for pod_path, here in volumes.items():
            text = text.replace(pod_path, str(here))
        return text

    argv = [local(a) for a in container["command"] + container.get("args", [])]
    assert argv[0] == "fusion", argv
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = local(var["value"])
    for pod_path, text in files.items():
        target = Path(local(pod_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(local(text))
    return subprocess.run([sys.executable, "-m", "ray_pipeline.cli", *argv[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.ray
@pytest.mark.sandbox
def test_the_charts_shard_and_merge_pods_make_one_table(tmp_path):
    require_shared()
    from ray_pipeline.evaluation.evalplus_data import load_evalplus
    from tests.fault_server import FaultInjectingOpenAIServer

    problems = load_evalplus("humaneval", str(HE_PATH), task_ids=TASKS).problems
    with FaultInjectingOpenAIServer(responder=_responder(problems)) as srv:
        values = {
            "sweep": {
                "name": "contract",
                "models": [{"label": "fake", "backend": openai_teacher(srv.base_url), "prompt": "completion"}],
                "benchmarks": [{"name": "humaneval", "path": str(HE_PATH), "tasks": TASKS}],
                "sampling": [{"name": "greedy", "n": 1, "temperature": 0.0, "max_tokens": 128, "k": [1]}],
                "shards": 2,
                "sandbox": {"parallel": 2},
                "ray": {"batch_size": 8},
            },
            "merge": {"waitSeconds": 30},
        }
        objects = render_chart(REPO / "helm/fusion-eval", values, release="contract", namespace="evals")
        jobs = [o for o in objects if o["kind"] == "Job"]
        items = [j for j in jobs if j["spec"].get("completionMode") == "Indexed"]
        (merge,) = [j for j in jobs if j not in items]
        assert len(items) == 1 and items[0]["spec"]["completions"] == 2
        config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
        volumes = {"/results": tmp_path / "results", "/scratch": tmp_path / "scratch",
                   "/home/fusion": tmp_path / "home", "/etc/fusion": tmp_path / "etc"}

        item = items[0]["spec"]["template"]["spec"]
        (container,) = item["containers"]
        (job_volume,) = [v for v in item["volumes"] if "configMap" in v]
        job_files = {f"/etc/fusion/{k}": v for k, v in config_maps[job_volume["configMap"]["name"]]["data"].items()}
        for index in range(2):  # the Indexed Job's two pods, one after the other
            volumes["/scratch"] = tmp_path / f"scratch-{index}"
            pod = _run_pod(container, volumes, index, job_files)
            assert pod.returncode == 0, pod.stderr[-3000:]
    # every shard published, each with its own half of the tasks
    published = sorted((tmp_path / "results").rglob("_SUCCESS"))
    assert [p.parent.name for p in published] == ["shard-0", "shard-1"]
    shard_tasks = [{r["task_id"] for r in map(json.loads, (p.parent / "results" / "fake.jsonl").read_text().splitlines())}
                   for p in published]
    assert shard_tasks == [{"HumanEval/0", "HumanEval/4"}, {"HumanEval/2"}]
    manifests = [json.loads((p.parent / "manifest.json").read_text()) for p in published]
    assert [m["sandbox"]["isolation"] for m in manifests] == ["pod", "pod"]  # the pod's env, not bubblewrap

    (merge_container,) = merge["spec"]["template"]["spec"]["containers"]
    merged = _run_pod(merge_container, volumes, None, {})
    assert merged.returncode == 0, merged.stderr[-3000:]
    summary = json.loads(next((tmp_path / "results").rglob("merged/summary.json")).read_text())
    assert summary["models"]["fake"]["humaneval+"] == {"tasks": 3, "pass@1": pytest.approx(2 / 3)}
    assert "| fake |" in merged.stdout
