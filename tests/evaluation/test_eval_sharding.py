"""Sharded evaluation (--shard, --publish, fusion merge) and the sandbox's pod isolation.

The end-to-end test runs one eval job against the fault server as an
OpenAI-compatible endpoint that answers HumanEval+ prompts with the canonical
solution for some tasks and a wrong one for the others: unsharded, then as two
shards each published to a directory, then ``fusion merge``; the merged
per-task verdicts and pass@1 must be the unsharded run's. The shards score in
pod isolation, the unsharded run in bubblewrap where it exists, so the same
comparison shows that pod isolation gives bubblewrap's verdicts.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ray_pipeline.core.config import job_to_dict
from ray_pipeline.jobs import load_job, parse_job
from ray_pipeline.core.errors import FusionError
from ray_pipeline.evaluation import results
from ray_pipeline.evaluation import sandbox as sandbox_module
from ray_pipeline.evaluation.merge import merge_published
from ray_pipeline.evaluation.sandbox import Limits, Sandbox, SandboxError
from ray_pipeline.evaluation.sharding import parse_shard, select
from ray_pipeline.core.outputs import config_hash
from ray_pipeline.core.storage import SUCCESS, find_published, publish_run, resolve
from tests.conftest import SHARED, fusion_cli, needs_bwrap, openai_teacher, read_jsonl, require_shared, write_job

EVALPLUS = SHARED / "data/bench/evalplus"
MULTIPLE = SHARED / "data/bench/multipl-e"
HE_PATH = EVALPLUS / "HumanEvalPlus-v0.1.10.jsonl.gz"
#: HumanEval+ tasks of the end-to-end job: the fault server answers RIGHT ones with the canonical solution
TASKS = ["HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/7", "HumanEval/12"]
RIGHT = {"HumanEval/0", "HumanEval/4", "HumanEval/12"}
JS_RIGHT = "\n  return string.length;\n}\n"
HAS_BWRAP = shutil.which("bwrap") is not None
LIMITS = Limits(wall_s=6, cpu_s=2, memory_mb=512, disk_mb=64)


# ------------------------------------------------------------------ shard selection
def test_shards_partition_every_suite_and_bad_shards_are_one_line_errors():
    for size in range(0, 12):
        items = [f"task-{i}" for i in range(size)]
        for count in range(1, 6):
            shards = [select(items, (i, count)) for i in range(count)]
            together = [x for shard in shards for x in shard]
            assert sorted(together) == sorted(items) and len(together) == len(set(together))  # disjoint, all
            assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
            assert all(items.index(x) % count == i for i, shard in enumerate(shards) for x in shard)
            assert all(shard == sorted(shard, key=items.index) for shard in shards)  # order kept
    assert select(["a", "b"], None) == ["a", "b"]
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4) and parse_shard("0/1") == (0, 1)
    for bad, message in [("4/4", "must be in 0..3"), ("5/2", "I < N"), ("-1/2", "0..1"), ("0/0", "at least 1"),
                         ("1", "expected I/N"), ("a/b", "expected I/N"), ("1/2/3", "expected I/N")]:
        with pytest.raises(FusionError, match=message) as err:
            parse_shard(bad)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------ publish and merge (no Ray)
def _fake_run(path: Path, job: str, rows: list[dict], labels: list[str], k: list[int], n: int,
              shard: tuple[int, int] | None = None, temperature: float = 0.8) -> Path:
    """A finished eval run directory holding these task rows (what EvaluationRun writes)."""
    sampling = {"n": n, "temperature": temperature, "top_p": 0.95, "max_tokens": 64, "k": k}
    config = {"kind": "eval", "name": job, "sampling": sampling}
    if shard:
        config["shard"] = f"{shard[0]}/{shard[1]}"
    path.mkdir(parents=True)
    (path / "job.yaml").write_text(yaml.safe_dump(config))
    summary = results.summarise(rows, labels, k)
    manifest = {"job": job, "kind": "eval", "summary": summary, "sampling": sampling,
                "shard": {"index": shard[0], "count": shard[1]} if shard else None}
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "results").mkdir()
    for label in labels:
        (path / "results" / f"{label}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows if r["model"] == label))
    return path


def _scored_rows(seed: int = 0) -> list[dict]:
    """Task rows of two models on HumanEval+ (6 tasks) and JavaScript (4), n 3, Swift skipped."""
    rng = random.Random(seed)
    scored = []
    for model in ("base", "tuned"):
        for suite, count in (("humaneval", 6), ("multiple-js", 4)):
            for t in range(count):
                for sample in range(3):
                    base = rng.random() < 0.6
                    scored.append({"model": model, "suite": suite, "task_id": f"HumanEval/{t}", "sample": sample,
                                   "passed": base and rng.random() < 0.8, "base_passed": base, "status": "x",
                                   "wall_s": rng.random()})
        scored.append({"model": model, "suite": "multiple-swift", "task_id": "HumanEval_0_x", "sample": 0,
                       "passed": False, "base_passed": False, "status": "skipped", "skipped": "swiftc not found"})
    return results.task_rows(scored, [1, 2])


def _shard_rows(rows: list[dict], shard: tuple[int, int]) -> list[dict]:
    by_suite: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_suite.setdefault((r["model"], r["suite"]), []).append(r)
    return [r for group in by_suite.values() for r in select(group, shard)]


def test_merge_joins_shards_per_model_and_refuses_what_does_not_fit(tmp_path):
    rows = _scored_rows()
    labels = ["base", "tuned"]
    root = tmp_path / "published"
    for i in range(3):
        run = _fake_run(tmp_path / f"run{i}", "sweep", _shard_rows(rows, (i, 3)), labels, [1, 2], 3, shard=(i, 3))
        record = publish_run(run, str(root / "item" / f"shard-{i}"))
        assert record["shard"] == f"{i}/3" and "results/base.jsonl" in record["files"]
    # a half-published shard (copied, no _SUCCESS) of another job is never read
    half = _fake_run(tmp_path / "half", "other", rows[:1], ["base"], [1, 2], 3, shard=(0, 2))
    shutil.copytree(half, root / "other" / "shard-0")

    merged = merge_published(str(root))
    expected = results.summarise(rows, labels, [1, 2])
    assert merged["models"] == expected["models"] and merged["columns"] == expected["columns"]
    assert merged["models"]["base"]["swift"] == {"skipped": "swiftc not found", "tasks": 0}
    assert merged["merged"]["runs"] == 3
    out = root / "merged"
    assert json.loads((out / "summary.json").read_text())["models"] == expected["models"]
    assert "| Δ tuned vs base |" in (out / "summary.md").read_text() and "[1] swiftc not found" in merged["markdown"]
    assert sorted((r["model"], r["suite"], r["task_id"]) for r in read_jsonl(out / "tasks.jsonl")) == \
        sorted((r["model"], r["suite"], r["task_id"]) for r in rows)
    assert merge_published(str(root))["models"] == expected["models"]  # merged/ is not taken for a published run

    # the same tasks published twice with the same verdicts (other timings) count once
    again = [{**r, "samples": [{**s, "wall_s": 9.0} for s in r["samples"]]} for r in _shard_rows(rows, (0, 3))]
    publish_run(_fake_run(tmp_path / "again", "rerun", again, labels, [1, 2], 3), str(root / "rerun"))
    assert merge_published(str(root), out=str(tmp_path / "out2"))["models"] == expected["models"]

    # waiting for more runs than there are: one line, how many, which shard is missing, what is incomplete
    (root / "item" / "shard-2" / SUCCESS).unlink()
    with pytest.raises(FusionError) as err:
        merge_published(str(root), expect=4, wait_s=0.3)
    message = str(err.value)
    assert "3 of 4 expected published runs are complete" in message and "after waiting 0.3 s" in message
    assert "missing: sweep shard 2/3" in message and "item/shard-2" in message and "other/shard-0" in message

    # a task published twice with different verdicts
    flipped = [dict(r) for r in _shard_rows(rows, (1, 3))]
    flipped[0] = {**flipped[0], "passed": flipped[0]["passed"] + 1}
    publish_run(_fake_run(tmp_path / "flip", "flip", flipped, labels, [1, 2], 3), str(root / "flip"))
    with pytest.raises(FusionError, match=f"model base, benchmark {flipped[0]['suite']}, task "
                                          f"{flipped[0]['task_id']}: published twice with different results"):
        merge_published(str(root))
    shutil.rmtree(root / "flip")

    # one label sampled differently in two runs
    publish_run(_fake_run(tmp_path / "hot", "hot", rows[:1], ["base"], [1, 2], 3, temperature=1.2), str(root / "hot"))
    with pytest.raises(FusionError, match="model base: published runs differ in sampling or k") as err:
        merge_published(str(root))
    assert "temperature 1.2" in str(err.value) and "temperature 0.8" in str(err.value)
    with pytest.raises(FusionError, match="no published run"):
        merge_published(str(tmp_path / "nothing"))


def test_publish_is_idempotent_for_its_run_and_refuses_another(tmp_path):
    rows = _scored_rows()
    one = _fake_run(tmp_path / "one", "sweep", _shard_rows(rows, (0, 2)), ["base", "tuned"], [1], 3, shard=(0, 2))
    two = _fake_run(tmp_path / "two", "sweep", _shard_rows(rows, (1, 2)), ["base", "tuned"], [1], 3, shard=(1, 2))
    dest = tmp_path / "pub" / "shard-0"
    first = publish_run(one, str(dest))
    (one / "samples").mkdir()
    (one / "samples" / "base.jsonl").write_text("{}\n")
    (one / "results" / "tuned.jsonl").unlink()
    second = publish_run(one, str(dest))  # the same run again: replaced, stale files gone
    assert second["config_hash"] == first["config_hash"]
    assert (dest / "samples" / "base.jsonl").is_file() and not (dest / "results" / "tuned.jsonl").exists()
    assert json.loads((dest / SUCCESS).read_text())["files"] == second["files"]
    with pytest.raises(FusionError) as err:  # shard 1 of the same job is another config
        publish_run(two, str(dest))
    assert "already holds a published run of job sweep" in str(err.value) and "\n" not in str(err.value)
    assert first["config_hash"] in str(err.value)  # both configs named
    assert config_hash(yaml.safe_load((two / "job.yaml").read_text())) in str(err.value)
    complete, incomplete = find_published(resolve(str(tmp_path / "pub")))
    assert [c.path for c in complete] == [str(dest)] and incomplete == []
    with pytest.raises(FusionError, match="unsupported scheme ftp"):
        publish_run(one, "ftp://host/x")


# ------------------------------------------------------------------ end to end
def _responder(problems: dict[str, dict]):
    """Completions: the canonical solution for RIGHT tasks, a wrong body for the others; JavaScript strlen right."""

    def answer(messages: list[dict]) -> str:
        text = messages[-1]["content"]
        if "function strlen(" in text:
            return JS_RIGHT
        for task_id, record in problems.items():
            if f"def {record['entry_point']}(" in text:
                return record["canonical_solution"] if task_id in RIGHT else "    return None\n"
        return "    pass\n"

    return answer


def _eval_job(tmp_path: Path, base_url: str, name: str, isolation: str) -> Path:
    job = {
        "kind": "eval", "name": "shard_e2e", "seed": 5, "output_dir": str(tmp_path / name),
        "models": [{"label": "fake", "backend": openai_teacher(base_url), "prompt": "completion"}],
        "benchmarks": [{"name": "humaneval", "path": str(HE_PATH), "tasks": TASKS},
                       {"name": "multiple", "path": str(MULTIPLE), "languages": ["js", "swift"],
                        "tasks": ["HumanEval/23"]}],
        "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 128},
        "sandbox": {"parallel": 2, "isolation": isolation},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _verdicts(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    return {(r["suite"], r["task_id"]): [{k: v for k, v in s.items() if k != "wall_s"} for s in r["samples"]]
            for r in rows}


@pytest.mark.sandbox
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (MultiPL-E JavaScript)")
def test_two_published_shards_merge_to_the_unsharded_run(tmp_path, local_ray, monkeypatch):
    require_shared()
    from ray_pipeline.evaluation.evalplus_data import load_evalplus
    from ray_pipeline.evaluation.pipeline import run_evaluation
    from tests.fault_server import FaultInjectingOpenAIServer

    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")  # no swiftc, whatever the machine has
    problems = load_evalplus("humaneval", str(HE_PATH), task_ids=TASKS).problems
    with FaultInjectingOpenAIServer(responder=_responder(problems)) as srv:
        whole = load_job(_eval_job(tmp_path, srv.base_url, "whole", "bwrap" if HAS_BWRAP else "pod"))
        manifest = run_evaluation(whole)
        assert manifest["shard"] is None and manifest["sandbox"]["isolation"] == ("bwrap" if HAS_BWRAP else "pod")
        shard_jobs = [load_job(_eval_job(tmp_path, srv.base_url, f"shard{i}", "pod")) for i in range(2)]
        for i in range(2):  # the model's answers from the unsharded run's call cache: no second generation
            shutil.copytree(tmp_path / "whole" / "cache", tmp_path / f"shard{i}" / "cache")
        shard_manifests = [run_evaluation(job, shard=(i, 2)) for i, job in enumerate(shard_jobs)]
    assert [m["sandbox"]["isolation"] for m in shard_manifests] == ["pod", "pod"]
    assert [m["shard"] for m in shard_manifests] == [{"index": 0, "count": 2}, {"index": 1, "count": 2}]
    assert [m["suites"]["humaneval"]["tasks"] for m in shard_manifests] == [3, 2]
    assert [m["suites"]["multiple-js"]["tasks"] for m in shard_manifests] == [1, 0]  # a shard with none: fine
    assert [m["generation"]["fake"]["samples"] for m in shard_manifests] == [4, 2]
    assert [m["generation"]["fake"]["cache_hits"] for m in shard_manifests] == [4, 2]
    # how the model was asked, per benchmark, is recorded with the run
    modes = {"humaneval": "completion", "multiple": "completion"}
    assert manifest["generation"]["fake"]["prompt_by_benchmark"] == modes
    assert manifest["summary"]["prompt_modes"] == {"fake": modes}
    assert "Prompt modes: fake (humaneval completion, multiple completion)" in (tmp_path / "whole" / "summary.md").read_text()
    whole_rows = read_jsonl(tmp_path / "whole" / "results" / "fake.jsonl")
    shard_rows = [read_jsonl(tmp_path / f"shard{i}" / "results" / "fake.jsonl") for i in range(2)]
    assert set(_verdicts(shard_rows[1])) == {("humaneval", "HumanEval/2"), ("humaneval", "HumanEval/7")}

    # the right answers pass and the wrong ones fail, in both isolations
    whole_verdicts = _verdicts(whole_rows)
    assert {t: v[0]["passed"] for t, v in whole_verdicts.items()} == {
        **{("humaneval", t): t in RIGHT for t in TASKS}, ("multiple-js", "HumanEval_23_strlen"): True,
        ("multiple-swift", "HumanEval_23_strlen"): False}

    # a shard's run directory is not reused for another shard
    with pytest.raises(FusionError, match="holds a run of a different job"):
        run_evaluation(shard_jobs[0], shard=(1, 2))

    root = tmp_path / "results"
    for i in range(2):
        publish_run(tmp_path / f"shard{i}", str(root / "item" / f"shard-{i}"))
    merged = fusion_cli("merge", str(root), "--expect", "2", timeout=120)
    assert merged.returncode == 0, merged.stderr[-2000:]
    summary = json.loads((root / "merged" / "summary.json").read_text())
    unsharded = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["models"] == unsharded["models"] and summary["columns"] == unsharded["columns"]
    assert summary["models"]["fake"]["humaneval+"] == {"tasks": 5, "pass@1": 0.6}
    assert "swiftc" in summary["models"]["fake"]["swift"]["skipped"]
    assert _verdicts(read_jsonl(root / "merged" / "tasks.jsonl")) == whole_verdicts  # pod gives bwrap's verdicts
    assert "| fake | 60.0 | 60.0 | 100.0 | skipped[1] |" in merged.stdout

    too_many = fusion_cli("merge", str(root), "--expect", "3", "--wait-s", "0.5", timeout=120)
    assert too_many.returncode == 2 and too_many.stderr.count("\n") == 1, too_many.stderr
    assert "2 of 3 expected published runs are complete" in too_many.stderr


def test_shard_of_a_non_eval_job_is_a_one_line_error(tmp_path, code_alpaca):
    job = write_job(tmp_path, teacher=openai_teacher("http://127.0.0.1:9/v1"))
    r = fusion_cli("run", str(job), "--shard", "0/2", timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--shard 0/2: only eval jobs are sharded" in r.stderr and "instruction_fusion" in r.stderr
    assert not (tmp_path / "run").exists()


def test_run_hands_the_shard_to_the_evaluation_and_publishes_after_it(tmp_path, monkeypatch, capsys):
    import argparse

    import ray_pipeline.evaluation.pipeline as evaluation
    from ray_pipeline import cli

    calls = []

    def run_evaluation(job, address=None, force=False, shard=None):  # the run itself is the end-to-end test's
        calls.append(shard)
        run = _fake_run(job.run_dir(), job.name, _shard_rows(_scored_rows(), shard), ["base", "tuned"], [1], 3,
                        shard=shard)
        manifest = json.loads((run / "manifest.json").read_text())
        return {**manifest, "wall_time_s": 1.0, "generation": {m: {"samples": 1, "errors": 0} for m in ("base", "tuned")}}

    monkeypatch.setattr(evaluation, "run_evaluation", run_evaluation)
    job = tmp_path / "eval.yaml"
    job.write_text(yaml.safe_dump({"kind": "eval", "name": "ev", "models": ["embedded"],
                                   "benchmarks": [{"name": "humaneval"}], "output_dir": str(tmp_path / "run")}))
    args = argparse.Namespace(job=str(job), output_dir=None, address=None, force=False, shard="1/2",
                              publish=str(tmp_path / "pub"))
    assert cli._cmd_run(args) == 0 and calls == [(1, 2)]
    out = capsys.readouterr().out
    assert "ev (shard 1/2):" in out and f"-> {tmp_path / 'pub'} (_SUCCESS last)" in out
    assert json.loads((tmp_path / "pub" / SUCCESS).read_text())["shard"] == "1/2"
    with pytest.raises(FusionError, match="unsupported scheme ftp"):  # refused before the run
        cli._cmd_run(argparse.Namespace(**{**vars(args), "publish": "ftp://host/x"}))
    assert calls == [(1, 2)]


# ------------------------------------------------------------------ pod isolation
def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if marker in cmdline and state not in ("Z", "X"):
                found.append(f"{entry.name} {cmdline[:100]}")
    return found


@pytest.mark.sandbox
def test_pod_isolation_kills_every_process_of_a_program(tmp_path, monkeypatch):
    """At the timeout, and when the program ends: also children that left its process group and session."""
    monkeypatch.setattr(sandbox_module, "_cgroup_host", lambda: None)  # as in a pod: no cgroup sweeps up after it
    pod = Sandbox(isolation="pod", scratch_root=tmp_path)
    marker = f"fusion-pod-test-{uuid.uuid4().hex[:12]}"
    child = (f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import signal, time; "
             f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)', '{marker}'], start_new_session=True)")
    started = time.monotonic()
    timed = pod.run([sys.executable, "-c", f"{child}\nimport os, time\nos.setpgid(0, 0)\nprint('spawned', flush=True)\n"
                                           "time.sleep(60)\n"], limits=replace(LIMITS, wall_s=2.5))
    assert timed.timed_out and timed.exit_code is None and timed.stdout == "spawned\n"
    assert time.monotonic() - started < 2.5 + 2.0
    assert _processes_with(marker) == []
    ended = pod.run([sys.executable, "-c", f"{child}\nprint('bye')\n"], limits=LIMITS)  # a daemon left behind
    assert ended.ok and ended.stdout == "bye\n"
    assert _processes_with(marker) == []
    # a program that kills its supervisor fails; its process group goes too
    suicide = pod.run([sys.executable, "-c", "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\n"
                                             f"time.sleep(30)  # {marker}\n"], limits=LIMITS)
    assert not suicide.ok and not suicide.timed_out and suicide.signal == signal.SIGKILL
    assert _processes_with(marker) == []
    # a program that stops its supervisor: at the timeout it and every process below it are killed from here
    monkeypatch.setattr(sandbox_module, "_POD_STOP_S", 0.5)
    started = time.monotonic()
    frozen = pod.run([sys.executable, "-c", f"{child}\nimport os, signal, time\nos.kill(os.getppid(), signal.SIGSTOP)\n"
                                            "print('frozen', flush=True)\ntime.sleep(30)\n"],
                     limits=replace(LIMITS, wall_s=2.0))
    assert frozen.timed_out and frozen.stdout == "frozen\n"
    assert 2.0 + 0.5 <= time.monotonic() - started < 2.0 + 0.5 + 2.0  # the supervisor did not answer SIGTERM
    assert _processes_with(marker) == []
    # the CPU limit and exit codes as in bwrap mode
    spin = pod.run([sys.executable, "-c", "while True: pass"], limits=replace(LIMITS, cpu_s=1))
    assert spin.signal == signal.SIGKILL and not spin.timed_out
    assert pod.run(["/bin/sh", "-c", "exit 3"], limits=LIMITS).exit_code == 3
    assert list(tmp_path.iterdir()) == []  # the scratch directories are gone


@pytest.mark.sandbox
def test_pod_isolation_gives_an_empty_environment_and_its_own_work_directory(tmp_path, monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("FUSION_POD_TEST_SECRET", secret)
    pod = Sandbox(isolation="pod", env={"FROM_SANDBOX": "1"}, scratch_root=tmp_path)
    work = pod.new_workdir()
    source = ("import json, os\nopen('own.txt', 'w').write('mine')\n"
              "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))\n")
    try:
        out = pod.run([sys.executable, "/tmp/prog.py"], files={"prog.py": source}, env={"OUT": "/tmp/out"},
                      limits=LIMITS, work=work, read_back=["own.txt"])
        assert out.ok, out.stderr
        seen = json.loads(out.stdout)
        assert seen["cwd"] == str(work)  # /tmp in argv and env names the work directory, as in bwrap mode
        assert seen["env"] == {"PATH": sandbox_module.DEFAULT_PATH, "HOME": str(work), "TMPDIR": str(work),
                               "LANG": "C.UTF-8", "FROM_SANDBOX": "1", "OUT": f"{work}/out"}
        assert secret not in out.stdout + out.stderr
        assert out.files == {"own.txt": b"mine"}
    finally:
        pod.remove_workdir(work)


@pytest.mark.sandbox
def test_pod_isolation_needs_no_bwrap_and_the_environment_overrides_the_job(tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    Sandbox(isolation="pod").check()
    with pytest.raises(SandboxError, match="FUSION_SANDBOX_ISOLATION=pod") as err:
        Sandbox()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("FUSION_SANDBOX_ISOLATION", "pod")
    assert Sandbox().isolation == "pod" and Sandbox(isolation="bwrap").isolation == "pod"
    monkeypatch.setenv("FUSION_SANDBOX_ISOLATION", "chroot")
    with pytest.raises(SandboxError, match="FUSION_SANDBOX_ISOLATION='chroot': expected one of bwrap, pod"):
        Sandbox(isolation="pod")
    # how programs are isolated changes no verdict: not part of the job's identity
    job = parse_job({"kind": "eval", "name": "ev", "models": ["embedded"], "benchmarks": [{"name": "humaneval"}]})
    before = config_hash(job_to_dict(job))
    job.sandbox.isolation = "pod"
    assert job_to_dict(job)["sandbox"]["isolation"] == "pod" and config_hash(job_to_dict(job)) == before


@pytest.mark.sandbox
@needs_bwrap
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (MultiPL-E JavaScript)")
def test_pod_isolation_scores_like_bwrap():
    require_shared()
    from ray_pipeline.evaluation.benchmarks import make_executor
    from ray_pipeline.evaluation.evalplus_data import load_evalplus
    from ray_pipeline.evaluation.multiple_data import load_multiple

    he = load_evalplus("humaneval", str(HE_PATH), task_ids=["HumanEval/2"])
    problem = he.as_problems()[0]
    right = he.problems["HumanEval/2"]["prompt"] + he.problems["HumanEval/2"]["canonical_solution"]
    wrong = he.problems["HumanEval/2"]["prompt"] + "    return 0.5\n"
    strlen = next(p for p in load_multiple("js", str(MULTIPLE)) if p.task_id == "HumanEval_23_strlen")
    cfg = {"memory_mb": 2048, "timeout_s": None, "min_time_limit": 1.0, "gt_time_limit_factor": 4.0}
    specs = {"humaneval": {"name": "humaneval", "benchmark": "humaneval", "language": "python", "path": str(HE_PATH),
                           "task_ids": ["HumanEval/2"]},
             "js": {"name": "multiple-js", "benchmark": "multiple", "language": "js", "path": str(MULTIPLE),
                    "task_ids": [strlen.task_id]}}
    cases = [("humaneval", problem, right), ("humaneval", problem, wrong), ("js", strlen, JS_RIGHT),
             ("js", strlen, "\n  return 42;\n}\n")]
    verdicts = {}
    for isolation in ("bwrap", "pod"):
        executors = {name: make_executor(spec, {**cfg, "isolation": isolation}) for name, spec in specs.items()}
        assert {e.sandbox.isolation for e in executors.values()} == {isolation}
        verdicts[isolation] = [{**executors[s].score(p, sol).to_json(), "wall_s": None} for s, p, sol in cases]
    assert [v["passed"] for v in verdicts["pod"]] == [True, False, True, False]
    assert verdicts["pod"] == verdicts["bwrap"]


def test_shards_of_the_text_benchmarks_merge_to_the_whole_table(tmp_path):
    """GSM8K, IFEval and MT-Bench shards merge into the table (and details) of all their tasks."""
    from tests.evaluation.test_results_text import _scored

    rows = results.task_rows(_scored(), [1])
    root = tmp_path / "published"
    for i in range(2):
        run = _fake_run(tmp_path / f"run{i}", "tacie-sweep", _shard_rows(rows, (i, 2)), ["m"], [1], 1, shard=(i, 2))
        publish_run(run, str(root / "item" / f"shard-{i}"))
    merged = merge_published(str(root))
    whole = results.summarise(rows, ["m"], [1])
    assert merged["models"] == whole["models"] and merged["details"] == whole["details"]
    assert merged["models"]["m"]["mt_bench"]["score"] == pytest.approx(20 / 3)
    assert "| Model | MT-Bench | IFEval strict | IFEval loose | GSM8K |" in merged["markdown"]
