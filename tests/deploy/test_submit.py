"""`fusion submit`: end to end through the Ray Jobs API of a real `ray start --head` on loopback, and the KubeRay
RayJob it builds for --k8s (rendered from helm/fusion-ray, checked against the RayJob CRD), its status following and
its one-line errors. The teacher is tests/fault_server.py (named for what it does) answering as an OpenAI endpoint;
--k8s talks to tests/fake_kube_api.py (no Kubernetes cluster here; it records the calls the real client makes)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ray_pipeline.deploy import manifests, rayjob
from ray_pipeline.deploy.k8s_submit import describe_status, follow_rayjob
from tests.conftest import REPO, read_jsonl
from tests.fake_kube_api import FakeKubeAPI
from tests.fault_server import FaultInjectingOpenAIServer
from tests.k8s_helpers import CRD_DIR
from tests.ray_head import free_port, token_auth
from tests.ray_head import ray_head as start_ray_head

FORWARDED = "FUSION_SUBMIT_TEST_KEY"      # the teacher's api_key_env: the job succeeds only if --env forwarded it


CLOSED = f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head on 127.0.0.1 (dashboard on, 2 CPUs, token auth, every port picked free), its own process group;
    teardown kills exactly that group (never `ray stop`, which would stop every Ray on the machine)."""
    auth = token_auth()
    with start_ray_head(auth, dashboard=True, drop_env=(FORWARDED,), timeout=120) as ports:
        yield {"address": f"http://127.0.0.1:{ports['dashboard-port']}", "auth": auth}


def _seeds(directory: Path) -> Path:
    rows = [{"instruction": f"Write a Python function number {i} that adds {i} to a list of integers."} for i in range(8)]
    path = directory / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _job(directory: Path, base_url: str, name: str = "submitted") -> Path:
    """A small IF job whose teacher key is read from $FUSION_SUBMIT_TEST_KEY (never written in the file)."""
    job = {
        "kind": "instruction_fusion", "name": name, "seed": 5,
        "seeds": [{"path": str(_seeds(directory))}],
        "teacher": {"kind": "openai", "model": "fault-model", "base_url": base_url, "api_key_env": FORWARDED,
                    "timeout_s": 5.0, "max_retries": 1, "concurrency": 8},
        "fusion": {"num_instructions": 3, "max_attempts": 12},
        "ray": {"num_actors": 1, "batch_size": 8},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.fixture
def cli(monkeypatch, capsys):
    """`fusion submit ...` in this process (the error and dry-run paths: no interpreter start per case)."""
    from ray_pipeline.cli import main

    def run(*args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        for name in unset:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.chdir(REPO)
        capsys.readouterr()
        code = main(["submit", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["fusion", "submit", *args], code, out, err)

    yield run
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # main() installs a handler for the CLI process


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fusion: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------------------------ --address, no cluster

def test_unreachable_address_is_one_line_and_fast(cli, tmp_path):
    job = _job(tmp_path, "http://127.0.0.1:9/v1")
    started = time.monotonic()
    proc = cli(str(job), "--address", f"http://{CLOSED}")
    _one_line_error(proc, "cannot reach the Ray dashboard", CLOSED)
    assert time.monotonic() - started < 10


def test_unset_env_is_an_error(cli, tmp_path):
    job = _job(tmp_path, "http://127.0.0.1:9/v1")
    proc = cli(str(job), "--address", f"http://{CLOSED}", "--env", "FUSION_SURELY_UNSET", unset=("FUSION_SURELY_UNSET",))
    _one_line_error(proc, "--env FUSION_SURELY_UNSET", "not set")


def test_bad_job_fails_before_anything_is_sent(cli, tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text("kind: instruction_fusion\nname: bad\nseeds: []\nteacher: embedded\nfusion: {num_instructions: 0}\n")
    line = _one_line_error(cli(str(job), "--address", f"http://{CLOSED}"), "bad.yaml")
    assert "dashboard" not in line          # the job file was checked first


def test_outside_job_with_relative_paths_is_refused(cli, tmp_path):
    (tmp_path / "data").mkdir()
    _seeds(tmp_path / "data")
    job = yaml.safe_load(_job(tmp_path, "http://127.0.0.1:9/v1").read_text())
    job["seeds"] = [{"path": "data/seeds.jsonl"}]
    path = tmp_path / "rel.yaml"
    path.write_text(yaml.safe_dump(job))
    _one_line_error(cli(str(path), "--address", f"http://{CLOSED}", "--dry-run"), "outside the project", "data/seeds.jsonl")


def test_address_dry_run_shows_the_submission(cli):
    proc = cli("jobs/quickstart.yaml", "--address", "head:8265", "--dry-run", "--output-dir", "/mnt/runs/q",
               "--env", "PATH")
    assert proc.returncode == 0, proc.stderr[-2000:]
    sub = json.loads(proc.stdout)
    assert sub["address"] == "http://head:8265"
    assert sub["entrypoint"] == "python -m ray_pipeline.cli run jobs/quickstart.yaml --output-dir /mnt/runs/q"
    assert sub["runtime_env"]["working_dir"] == str(REPO)
    assert {".venv*", "runs", ".git", "benchmarks/results"} <= set(sub["runtime_env"]["excludes"])
    assert sub["runtime_env"]["env_vars"] == {"PATH": "<from the environment>"}   # names only, never values
    _one_line_error(cli("jobs/quickstart.yaml", "--address", "ray://head:10001"), "dashboard", "8265")


# ------------------------------------------------------------------------------------------------- --k8s

def test_k8s_dry_run_prints_a_valid_rayjob(cli, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "secrets": {"openai": {"name": "team-openai", "key": "token", "env": "OPENAI_API_KEY"}},
        "jobs": [{"name": "sft-quickstart", "activeDeadlineSeconds": 3600, "runtimeEnv": {"env_vars": {"X": "1"}}}],
    }))
    proc = cli("jobs/sft_quickstart.yaml", "--k8s", "--dry-run", "--name", "sft-try-1", "--image",
               "registry.local:5000/fj:0.2.0", "--cpu-workers", "3", "--gpu-workers", "0", "--values", str(values))
    assert proc.returncode == 0, proc.stderr[-2000:]
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [o["kind"] for o in objs] == ["ConfigMap", "RayJob"]
    manifests.validate_objects(objs, crd_dir=CRD_DIR)
    cm, rj = objs
    assert cm["data"] == {"sft-quickstart.yaml": (REPO / "jobs" / "sft_quickstart.yaml").read_text()}
    spec = rj["spec"]
    assert rj["metadata"]["name"] == "sft-try-1" and cm["metadata"]["name"] == "sft-try-1-job"
    assert spec["entrypoint"] == "fusion run /etc/fusion/jobs/sft-quickstart.yaml --output-dir /data/runs/sft_quickstart"
    assert spec["activeDeadlineSeconds"] == 3600 and yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"PYTHONUNBUFFERED": "1", "X": "1"}}
    assert spec["shutdownAfterJobFinishes"] is True and "suspend" not in spec
    cluster = spec["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert (group["groupName"], group["minReplicas"], group["maxReplicas"]) == ("cpu", 0, 3)
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"] == "registry.local:5000/fj:0.2.0-cpu"
    assert {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "team-openai", "key": "token"}}} in head["containers"][0]["env"]
    assert {"name": "jobs", "configMap": {"name": "sft-try-1-job"}} in head["volumes"]
    assert head["volumes"][0] == {"name": "runs", "persistentVolumeClaim": {"claimName": "fusion-runs"}}
    assert "relative to itself" in proc.stderr      # the ../ray_pipeline seed path will not exist in the pod


def test_k8s_default_name_is_unique_and_valid():
    names = {rayjob.default_rayjob_name(rayjob.k8s_name("TaCIE_codealpaca_gsm8k.and-a-very-long-name-indeed"))}
    name = names.pop()
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47
    assert rayjob.k8s_name("123_job") == "job-123-job"


@pytest.mark.parametrize("args,needle", [
    (["--env", "PATH"], "Secret"),
    (["--output-dir", "runs/x"], "absolute path"),
    (["--image", "repo/fj:latest"], "latest"),
    (["--cpu-workers", "-1"], "--cpu-workers -1"),
    (["--values", "/nonexistent/values.yaml"], "file not found"),
])
def test_k8s_bad_flags_are_one_line(cli, args, needle):
    _one_line_error(cli("jobs/sft_quickstart.yaml", "--k8s", "--dry-run", *args), needle)


def test_k8s_options_need_k8s(cli):
    _one_line_error(cli("jobs/quickstart.yaml", "--address", "http://h:8265", "--image", "x:1"), "--image", "only with --k8s")


def test_k8s_without_a_cluster_is_one_line(cli, tmp_path):
    proc = cli("jobs/sft_quickstart.yaml", "--k8s", env={"KUBECONFIG": str(tmp_path / "none")}, unset=("KUBERNETES_SERVICE_HOST",))
    _one_line_error(proc, "no Kubernetes configuration")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://{CLOSED}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
    }))
    started = time.monotonic()
    proc = cli("jobs/sft_quickstart.yaml", "--k8s", env={"KUBECONFIG": str(kubeconfig)})
    _one_line_error(proc, "cannot reach the Kubernetes API", CLOSED)
    assert time.monotonic() - started < 20


# ---------------------------------------------------------------------------------------- status following

def _follow(sequence):
    statuses = iter(sequence)
    lines: list[str] = []

    class Out:
        def write(self, text):
            lines.extend(t for t in text.splitlines() if t)

        def flush(self):
            pass

    code = follow_rayjob(lambda: next(statuses), "j", out=Out(), sleep=lambda s: None)
    return code, lines


def test_follow_prints_transitions_until_success():
    code, lines = _follow([
        {}, {"jobDeploymentStatus": "Initializing"}, {"jobDeploymentStatus": "Initializing"},
        {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    ])
    assert code == 0
    assert lines == ["rayjob/j: New", "rayjob/j: Initializing", "rayjob/j: Running, job PENDING",
                     "rayjob/j: Running, job RUNNING", "rayjob/j: Complete, job SUCCEEDED", "rayjob/j: SUCCEEDED"]


@pytest.mark.parametrize("final,expected", [
    ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "exit code 2"}, "FAILED"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, "STOPPED"),
    ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded",
      "message": "The RayJob has passed the activeDeadlineSeconds"}, "Failed"),
    ({"jobDeploymentStatus": "ValidationFailed", "message": "RayJob name should be no more than 47 characters"},
     "ValidationFailed"),
])
def test_follow_fails_on_every_other_ending(final, expected):
    code, lines = _follow([{"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
                           {"jobDeploymentStatus": "Retrying", "failed": 1, "message": "submitter failed"}, final])
    assert code == 1
    assert lines[-1] == f"rayjob/j: {expected}"
    assert "1 failed attempt(s): submitter failed" in lines[1]
    if final.get("message"):
        assert final["message"] in lines[-2]


def test_describe_status_keeps_messages_for_endings_only():
    assert describe_status({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "message": "x"}) == "Running, job RUNNING"
    assert describe_status(None) == "New"


# ---------------------------------------------------------------------------- --address, a real Ray cluster

@pytest.fixture(scope="module")
def submissions(ray_head, tmp_path_factory):
    """Two `fusion submit --address` processes at once on the cluster: a job that succeeds (its teacher key only
    forwarded with --env) and one whose teacher is unreachable."""
    tmp = tmp_path_factory.mktemp("submit")
    key = "sk-forwarded-" + secrets.token_hex(4)
    env = {**os.environ, **ray_head["auth"], FORWARDED: key, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    with FaultInjectingOpenAIServer(api_key=key) as srv:
        (tmp / "ok").mkdir()
        (tmp / "bad").mkdir()
        jobs = {"ok": _job(tmp / "ok", srv.base_url), "bad": _job(tmp / "bad", f"http://{CLOSED}/v1", name="doomed")}
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "ray_pipeline.cli", "submit", str(job), "--address", ray_head["address"],
                 "--output-dir", str(job.parent / "run"), "--env", FORWARDED],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, job in jobs.items()
        }
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=240)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        calls = srv.total_calls
    yield {"results": results, "runs": {n: j.parent / "run" for n, j in jobs.items()}, "key": key, "calls": calls}


def test_submit_runs_the_job_on_the_cluster(submissions):
    proc, run, key = submissions["results"]["ok"], submissions["runs"]["ok"], submissions["key"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^Ray job raysubmit_\w+: SUCCEEDED$", proc.stdout, re.M), proc.stdout[-2000:]
    assert "last lines:" in proc.stdout and "3 SFT rows from 3/3 fused instructions" in proc.stdout
    assert submissions["calls"] >= 6                  # 3 fusions + 3 responses reached the teacher, with the key
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["fused"] == 3
    assert len(read_jsonl(run / "sft_messages.jsonl")) == 3
    assert pq.read_table(run / "submitted.parquet").num_rows == manifest["counts"]["attempts"]
    assert key not in (run / "job.yaml").read_text() + (run / "manifest.json").read_text()
    # the job file (outside the project) travelled in the job's environment, not as a file put into the project
    assert "FUSION_SUBMITTED_JOB" in proc.stdout and not (REPO / ".fusion-submit").exists()


def test_failing_job_reports_failed(submissions):
    proc = submissions["results"]["bad"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = re.search(r"^Ray job raysubmit_\w+: (\w+)", proc.stdout, re.M)
    assert status and status.group(1) == "FAILED", proc.stdout[-2000:]
    tail = proc.stdout.split("last lines:", 1)[1]
    assert "fusion: error:" in tail and "unreachable" in tail     # the job's own one-line error, in the last lines
    assert not (submissions["runs"]["bad"] / "manifest.json").exists()


# ------------------------------------------------------------------- --k8s against a fake API (tests/fake_kube_api.py)

def _role_rules() -> dict[tuple[str, str], set[str]]:
    """The verbs the chart's Role grants its scheduler (the identity that runs `fusion submit --k8s`)."""
    objs = manifests.render_chart(REPO / "helm" / "fusion-ray", None, release="fusion", namespace="fusion")
    (role,) = [o for o in objs if o["kind"] == "Role"]
    return {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


@pytest.fixture
def fake_kube(monkeypatch, tmp_path):
    from ray_pipeline.deploy import k8s_submit

    monkeypatch.setattr(k8s_submit, "POLL_S", 0.01)

    def start(**kwargs):
        api = FakeKubeAPI(**kwargs).__enter__()
        config = tmp_path / f"kubeconfig-{len(started)}"
        config.write_text(yaml.safe_dump(api.kubeconfig(namespace="team")))
        started.append(api)
        return api, {"KUBECONFIG": str(config)}

    started: list[FakeKubeAPI] = []
    yield start
    for api in started:
        api.__exit__(None, None, None)


def test_k8s_creates_owns_and_follows(cli, fake_kube):
    api, env = fake_kube(statuses=[{}, {"jobDeploymentStatus": "Initializing"},
                                   {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
                                   {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}])
    proc = cli("jobs/sft_quickstart.yaml", "--k8s", "--name", "sft-e2e", env=env, unset=("KUBERNETES_SERVICE_HOST",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = [(r["verb"], r["resource"], r["name"]) for r in api.requests]
    assert calls[:3] == [("create", "configmaps", "sft-e2e-job"), ("create", "rayjobs", "sft-e2e"),
                         ("patch", "configmaps", "sft-e2e-job")]
    assert all(c == ("get", "rayjobs", "sft-e2e") for c in calls[3:]) and len(calls) >= 7
    assert {r["namespace"] for r in api.requests} == {"team"}           # the kubeconfig context's namespace
    rules = _role_rules()
    assert all(r["verb"] in rules[(r["group"], r["resource"])] for r in api.requests), "a call the Role does not allow"
    rj = api.objects[("rayjobs", "team", "sft-e2e")]
    cm = api.objects[("configmaps", "team", "sft-e2e-job")]
    assert cm["metadata"]["ownerReferences"] == [{"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "sft-e2e",
                                                  "uid": rj["metadata"]["uid"]}]
    manifests.validate_objects([{k: v for k, v in rj.items() if k != "status"}], crd_dir=CRD_DIR)
    assert "rayjob/sft-e2e: Initializing" in proc.stdout and "rayjob/sft-e2e: SUCCEEDED" in proc.stdout


def test_k8s_failed_rayjob_exits_1_and_no_follow_returns_at_once(cli, fake_kube):
    api, env = fake_kube(statuses=[{"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "exit 2"}])
    proc = cli("jobs/sft_quickstart.yaml", "--k8s", "--name", "sft-bad", "--namespace", "ml", env=env)
    assert proc.returncode == 1 and "rayjob/sft-bad: FAILED" in proc.stdout
    assert {r["namespace"] for r in api.requests} == {"ml"}
    api.requests.clear()
    proc = cli("jobs/sft_quickstart.yaml", "--k8s", "--name", "sft-nf", "--no-follow", env=env)
    assert proc.returncode == 0 and "kubectl -n team get rayjob sft-nf" in proc.stdout
    assert [r["verb"] for r in api.requests] == ["create", "create", "patch"]


def test_k8s_api_refusals_are_one_line(cli, fake_kube):
    api, env = fake_kube()
    assert cli("jobs/sft_quickstart.yaml", "--k8s", "--name", "twice", "--no-follow", env=env).returncode == 0
    _one_line_error(cli("jobs/sft_quickstart.yaml", "--k8s", "--name", "twice", env=env), "already exists", "--name")
    _, env = fake_kube(crd_installed=False)
    _one_line_error(cli("jobs/sft_quickstart.yaml", "--k8s", "--name", "nocrd", env=env), "KubeRay operator")


def test_k8s_worker_groups_follow_the_job_file(cli, tmp_path):
    """SFT on 4 GPUs gets a GPU group of up to 4 and no CPU group; flags still win."""
    job = yaml.safe_load((REPO / "jobs" / "sft_if_paper.yaml").read_text())
    job["scaling"]["num_workers"] = 4
    job["training"]["per_device_batch_size"] = 4
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(job))

    def groups(*extra: str) -> dict:
        proc = cli(str(path), "--k8s", "--dry-run", "--name", "sft-gpu", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rj = [d for d in yaml.safe_load_all(proc.stdout) if d][1]
        manifests.validate_objects([rj], crd_dir=CRD_DIR)
        return {g["groupName"]: (g["minReplicas"], g["maxReplicas"]) for g in rj["spec"]["rayClusterSpec"]["workerGroupSpecs"]}

    assert groups() == {"gpu": (0, 4)}
    assert groups("--gpu-workers", "2", "--cpu-workers", "1") == {"cpu": (0, 1), "gpu": (0, 2)}
    assert groups("--gpu-workers", "2") == {"gpu": (0, 2)}
