"""helm/fusion-ray: lint, render (defaults and tests/values/ray-*.yaml), validate every object (Kubernetes schemas in
strict mode, KubeRay CRDs), and check what the chart promises: autoscaling from zero, RayJobs that run job files,
secrets by reference only, least-privilege RBAC, hardened pods, schedules that really submit, k8s/ up to date."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from ray_pipeline.jobs import parse_job
from ray_pipeline.deploy import manifests, rayjob
from ray_pipeline.core.errors import FusionError
from tests.k8s_helpers import CRD_DIR, ROOT, check_ids, run_checkov

CHART = ROOT / "helm" / "fusion-ray"
VALUES = sorted((ROOT / "tests" / "values").glob("ray-*.yaml"))
CASES = ["defaults"] + [p.stem for p in VALUES]
RELEASE = NAMESPACE = "fusion"
SECRETISH = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)
DATED = "/$(date -u +%Y-%m-%d)"


def values_of(case: str) -> dict[str, Any] | None:
    return None if case == "defaults" else yaml.safe_load((ROOT / "tests" / "values" / f"{case}.yaml").read_text())


@lru_cache(maxsize=None)
def _render(case: str) -> str:
    return json.dumps(manifests.render_chart(CHART, values_of(case), release=RELEASE, namespace=NAMESPACE))


def render(case: str) -> list[dict[str, Any]]:
    return json.loads(_render(case))


def merged_values(case: str) -> dict[str, Any]:
    return rayjob.deep_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values_of(case) or {})


def of_kind(objs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in kinds]


def rayjob_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, RayJob spec) of every RayJob and RayCronJob.jobTemplate."""
    for o in of_kind(objs, "RayJob"):
        yield f"RayJob/{o['metadata']['name']}", o["spec"]
    for o in of_kind(objs, "RayCronJob"):
        yield f"RayCronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]


def cluster_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in of_kind(objs, "RayCluster"):
        yield f"RayCluster/{o['metadata']['name']}", o["spec"]
    for label, spec in rayjob_specs(objs):
        if "rayClusterSpec" in spec:
            yield label, spec["rayClusterSpec"]


def pod_specs(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, pod spec) of every pod the objects make: Ray heads and workers, RayJob submitters, CronJob pods."""
    for label, spec in cluster_specs(objs):
        yield f"{label} head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{label} worker {group['groupName']}", group["template"]["spec"]
    for label, spec in rayjob_specs(objs):
        yield f"{label} submitter", spec["submitterPodTemplate"]["spec"]
    for o in of_kind(objs, "CronJob"):
        yield f"CronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# ------------------------------------------------------------------------------------------ lint, validity

def test_values_files_exist():
    assert {"ray-api-fusion", "ray-gpu-vllm-sft", "ray-raycronjob"} <= {p.stem for p in VALUES}


@pytest.mark.parametrize("case", CASES)
def test_lint_clean(case):
    assert manifests.lint_chart(CHART, values_of(case)) == []


@pytest.mark.parametrize("case", CASES)
def test_every_object_validates(case):
    objs = render(case)
    assert objs
    manifests.validate_objects(objs, crd_dir=CRD_DIR)   # strict built-ins, KubeRay CRD schemas
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), names


def test_validation_catches_a_misspelt_rayjob_field():
    """The CRD check is real: a field KubeRay does not know fails (as the API server would refuse it)."""
    objs = render("defaults")
    rj = of_kind(objs, "RayJob")[0]
    rj["spec"]["shutdownAfterJobFinish"] = rj["spec"].pop("shutdownAfterJobFinishes")
    with pytest.raises(FusionError, match="shutdownAfterJobFinish"):
        manifests.validate_objects([rj], crd_dir=CRD_DIR)


# --------------------------------------------------------------------------------------------- semantics

@pytest.mark.parametrize("case", CASES)
def test_worker_groups_autoscale_from_zero(case):
    specs = list(cluster_specs(render(case)))
    assert specs, "no RayCluster spec rendered"
    for label, spec in specs:
        assert spec["enableInTreeAutoscaling"] is True, label
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0, label
        assert spec["rayVersion"] == "2.60.0"
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", f"{label}: work must go to workers"
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] == 0 and group["replicas"] == 0, (label, group["groupName"])
            assert group["maxReplicas"] > 0, (label, group["groupName"])


def test_default_cluster_has_cpu_and_gpu_groups():
    (rc,) = of_kind(render("defaults"), "RayCluster")
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["containers"][0]["image"].endswith("-gpu") and groups["cpu"]["template"]["spec"]["containers"][0]["image"].endswith("-cpu")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]


def test_gpu_values_place_gpu_workers_on_their_pool():
    objs = render("ray-gpu-vllm-sft")
    jobs = {o["metadata"]["name"]: o["spec"] for o in of_kind(objs, "RayJob")}
    assert set(jobs) == {"fusion-if-vllm", "fusion-sft-codellama"}
    for name, spec in jobs.items():
        groups = {g["groupName"]: g for g in spec["rayClusterSpec"]["workerGroupSpecs"]}
        gpu = groups["gpu-l4"]
        assert (gpu["minReplicas"], gpu["maxReplicas"]) == (0, 4)
        pod = gpu["template"]["spec"]
        assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
        assert any(t["key"] == "cloud.google.com/gke-spot" for t in pod["tolerations"])
        assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    # the SFT job's own cluster has no CPU group (a job-level rayCluster override, false wins over the default)
    assert "cpu" not in {g["groupName"] for g in jobs["fusion-sft-codellama"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert jobs["fusion-sft-codellama"]["suspend"] is True and "suspend" not in jobs["fusion-if-vllm"]
    sft = parse_job(yaml.safe_load(_config_map_text(objs, "fusion-sft-codellama-job", "sft-codellama.yaml")))
    assert sft.training.strategy == "deepspeed_zero2" and sft.scaling.num_workers == 4 and sft.scaling.use_gpu


def _config_map_text(objs, name, key):
    (cm,) = [o for o in of_kind(objs, "ConfigMap") if o["metadata"]["name"] == name]
    return cm["data"][key]


@pytest.mark.parametrize("case", CASES)
def test_rayjobs_run_job_files(case):
    objs = render(case)
    values = merged_values(case)
    specs = list(rayjob_specs(objs))
    assert specs or not values["jobs"]
    cluster_names = {o["metadata"]["name"] for o in of_kind(objs, "RayCluster")}
    config_maps = {o["metadata"]["name"]: o["data"] for o in of_kind(objs, "ConfigMap")}
    for label, spec in specs:
        m = re.fullmatch(r"fusion run (\S+) --output-dir /data/runs/([a-z0-9-]+)(/\$\(date -u \+%Y-%m-%d\))?",
                         spec["entrypoint"])
        assert m, (label, spec["entrypoint"])
        assert bool(m.group(3)) == (label.startswith("RayCronJob")), label   # schedules write dated run dirs
        assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
        assert spec["activeDeadlineSeconds"] > 0
        sub = spec["submitterPodTemplate"]["spec"]
        assert sub["restartPolicy"] == "Never" and sub["containers"][0]["name"] == "ray-job-submitter"
        job_path = m.group(1)
        if "clusterSelector" in spec:
            assert spec["clusterSelector"] == {"ray.io/cluster": next(iter(cluster_names))}
            assert "rayClusterSpec" not in spec and not spec.get("backoffLimit") and not spec.get("shutdownAfterJobFinishes")
            head = of_kind(objs, "RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]
        else:
            assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
            assert spec["backoffLimit"] >= 0
            head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        mounts = {v["mountPath"]: v["name"] for v in head["containers"][0]["volumeMounts"]}
        assert mounts["/data/runs"] == "runs"
        if job_path.startswith("/etc/fusion/jobs/"):
            # the head (where the driver runs) mounts the ConfigMap that holds this very file, and it is a valid job
            volume = next(v for v in head["volumes"] if v["name"] == mounts["/etc/fusion/jobs"])
            sources = [s["configMap"]["name"] for s in volume.get("projected", {}).get("sources", [])]
            sources += [volume["configMap"]["name"]] if "configMap" in volume else []
            key = job_path.rsplit("/", 1)[1]
            texts = [config_maps[s][key] for s in sources if key in config_maps.get(s, {})]
            assert len(texts) == 1, (label, sources)
            parse_job(yaml.safe_load(texts[0]), key)
        else:
            assert (ROOT / "jobs" / Path(job_path).name).is_file(), f"{job_path} is not a job file the image has"


def test_default_install_spends_nothing():
    objs = render("defaults")
    assert all(spec.get("suspend") is True for _, spec in rayjob_specs(objs))
    assert all(o["spec"]["suspend"] is True for o in of_kind(objs, "CronJob", "RayCronJob"))


@pytest.mark.parametrize("case", CASES)
def test_secrets_only_by_reference(case):
    objs = render(case)
    assert not of_kind(objs, "Secret")
    assert "sk-" not in _render(case)
    for role, pod in pod_specs(objs):
        for c in pod["containers"]:
            for env in c.get("env", []):
                if "valueFrom" in env:
                    assert set(env["valueFrom"]) == {"secretKeyRef"}, (role, env)
                else:
                    assert not SECRETISH.search(env["name"]), f"{role}: {env['name']} has a literal value"
            assert "envFrom" not in c, role


def test_openai_key_comes_from_the_named_secret():
    api = render("ray-api-fusion")
    refs = {json.dumps(e["valueFrom"]["secretKeyRef"], sort_keys=True)
            for role, pod in pod_specs(api) for c in pod["containers"] for e in c.get("env", [])
            if e["name"] == "OPENAI_API_KEY"}
    assert refs == {json.dumps({"key": "api-key", "name": "openai-credentials"}, sort_keys=True)}
    gpu = render("ray-gpu-vllm-sft")     # secrets.openai.name "" leaves the variable out
    assert not [e for _, pod in pod_specs(gpu) for c in pod["containers"] for e in c.get("env", [])
                if e["name"] == "OPENAI_API_KEY"]


@pytest.mark.parametrize("case", CASES)
def test_rbac_is_least_privilege(case):
    objs = render(case)
    assert not of_kind(objs, "ClusterRole", "ClusterRoleBinding")
    roles, crons = of_kind(objs, "Role"), of_kind(objs, "CronJob")
    if not crons:
        assert not roles and not of_kind(objs, "RoleBinding", "ServiceAccount")   # RayCronJob needs none
        return
    (role,) = roles
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {("ray.io", "rayjobs"): {"create", "get", "list", "watch"},
                     ("", "configmaps"): {"create", "get", "patch"}}
    assert "*" not in json.dumps(role["rules"])
    (binding,) = of_kind(objs, "RoleBinding")
    (sa,) = of_kind(objs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    assert sa["automountServiceAccountToken"] is False
    for cron in crons:
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == sa["metadata"]["name"] and pod["automountServiceAccountToken"] is True


@pytest.mark.parametrize("case", CASES)
def test_pods_are_hardened(case):
    for role, pod in pod_specs(render(case)):
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, role
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, role
        for c in pod["containers"]:
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"], role
            assert not csc.get("privileged"), role
            assert "latest" not in c["image"] and re.search(r":\d+\.\d+\.\d+-(cpu|gpu)$", c["image"]), c["image"]
            assert c["resources"]["limits"] and c["resources"]["requests"], role
        if "worker" in role or "submitter" in role:
            assert pod["automountServiceAccountToken"] is False, role
        if role.startswith("CronJob"):
            assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("case", ["defaults", "ray-api-fusion"])
def test_cronjob_submits_a_rayjob_that_the_chart_would_make(case, tmp_path):
    """The CronJob's pod runs `fusion submit <job> --k8s --values <its settings> --no-follow`; replaying exactly that
    (its job file, its values file) yields a valid RayJob on the release's runs volume with a dated run directory."""
    objs = render(case)
    (cron,) = of_kind(objs, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    cmd = pod["containers"][0]["command"]
    assert cmd[:2] == ["fusion", "submit"] and "--k8s" in cmd and "--no-follow" in cmd
    assert cmd[cmd.index("--namespace") + 1] == NAMESPACE
    job_path, values_path = cmd[2], cmd[cmd.index("--values") + 1]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cms = {o["metadata"]["name"]: o["data"] for o in of_kind(objs, "ConfigMap")}

    def mounted(path: str) -> str:
        directory, key = path.rsplit("/", 1)
        return cms[volumes[mounts[directory]]["configMap"]["name"]][key]

    values_file = tmp_path / "values.yaml"
    values_file.write_text(mounted(values_path))
    if job_path.startswith("/etc/fusion/jobs/"):
        job_file = tmp_path / Path(job_path).name
        job_file.write_text(mounted(job_path))
    else:
        job_file = ROOT / "jobs" / Path(job_path).name     # baked into the image from jobs/
    built = rayjob.build_objects(job_file, namespace=NAMESPACE, values_file=str(values_file))
    manifests.validate_objects(built, crd_dir=CRD_DIR)
    rj = rayjob.find(built, "RayJob")
    assert rj["spec"]["entrypoint"].endswith(DATED)
    head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["persistentVolumeClaim"]["claimName"] == "fusion-runs"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_raycronjob_joins_the_shared_cluster():
    objs = render("ray-raycronjob")
    (rcj,) = of_kind(objs, "RayCronJob")
    (rc,) = of_kind(objs, "RayCluster")
    assert rcj["spec"]["schedule"] == "30 1 * * *" and rcj["spec"]["timeZone"] == "America/New_York"
    assert rcj["spec"]["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": rc["metadata"]["name"]}
    assert len(rcj["metadata"]["name"]) <= 36
    assert not of_kind(objs, "RayJob", "CronJob")    # runOnInstall false on a shared cluster: nothing now


def test_notes_say_how_to_start_and_watch():
    notes = manifests.chart_notes(CHART, None, RELEASE, NAMESPACE)
    assert "kubectl -n fusion create secret generic fusion-openai" in notes
    assert "patch rayjob fusion-if-openai" in notes and "patch cronjob fusion-if-openai-weekly" in notes
    assert "RayCronJob=true" in manifests.chart_notes(CHART, values_of("ray-raycronjob"), RELEASE, NAMESPACE)


# ------------------------------------------------------------------------------------------- bad values

BAD_VALUES = [
    ({"image": {"tag": "latest"}}, "latest"),
    ({"jobs": [{"name": "if_openai", "jobFile": "/app/jobs/if_openai.yaml"}]}, "jobs"),
    ({"rayCluster": {"cpuWorkers": {"minReplicas": -1}}}, "minReplicas"),
    ({"schedules": [{"name": "x", "job": "if-openai", "schedule": "0 3 * * 1", "mode": "hourly"}]}, "mode"),
    ({"secrets": {"openai": {"name": "s", "key": "k", "env": "OPENAI_API_KEY", "value": "sk-live"}}}, "value"),
    ({"env": [{"name": "OPENAI_API_KEY", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}, "env"),
    ({"jobs": [{"name": "a", "jobFile": "/app/jobs/x.yaml",
                "env": [{"name": "T", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}]}, "env"),
    ({"storage": {"accessModes": ["ReadWriteAlways"]}}, "accessModes"),
    ({"replicas": 3}, "replicas"),
    ({"schedules": [{"name": "x", "job": "if-openai", "schedule": "every monday"}]}, "schedule"),
    ({"jobs": [{"name": "a", "jobFile": "/app/jobs/if_openai.yaml", "outputDir": "/data/runs/a; rm -rf /"}]}, "outputDir"),
    # template checks (beyond the schema)
    ({"jobs": [{"name": "a"}], "schedules": []}, "give jobFile"),
    ({"jobs": [{"name": "a", "jobFile": "/x.yaml", "config": "kind: sft"}], "schedules": []}, "not both"),
    ({"rayCluster": {"enabled": False}, "jobs": [{"name": "a", "jobFile": "/x.yaml", "cluster": "shared"}],
      "schedules": []}, "rayCluster.enabled"),
    ({"jobs": [{"name": "a", "jobFile": "/x.yaml", "cluster": "shared", "backoffLimit": 2}], "schedules": []},
     "backoffLimit"),
    ({"schedules": [{"name": "x", "job": "nope", "schedule": "@daily"}]}, "nope"),
]


@pytest.mark.parametrize("bad,needle", BAD_VALUES, ids=[n for _, n in BAD_VALUES])
def test_bad_values_are_refused(bad, needle):
    with pytest.raises(FusionError, match=re.escape(needle)) as err:
        manifests.render_chart(CHART, bad, release=RELEASE, namespace=NAMESPACE)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------- k8s/

def _render_script():
    spec = importlib.util.spec_from_file_location("render_k8s", ROOT / "scripts" / "render_k8s.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k8s_manifests_are_up_to_date():
    script = _render_script()
    files = script.render()
    assert set(files) == script.generated(ROOT / "k8s"), "run make manifests (python scripts/render_k8s.py)"
    for name, text in files.items():
        assert (ROOT / "k8s" / name).read_text() == text, f"k8s/{name} is stale: run make manifests"
    on_disk = [doc for name in sorted(files) for doc in yaml.safe_load_all((ROOT / "k8s" / name).read_text()) if doc]
    assert len(on_disk) == len(render("defaults"))
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in on_disk)
    manifests.validate_objects(on_disk, crd_dir=CRD_DIR)
    assert (ROOT / "k8s" / "README.md").is_file()


def test_k8s_check_notices_a_stale_file(tmp_path, monkeypatch):
    script = _render_script()
    out = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", out)
    monkeypatch.setattr(script, "OUT", out)
    monkeypatch.setattr("sys.argv", ["render_k8s.py", "--check"])
    assert script.main() == 0
    (out / "50-rayjobs.yaml").write_text((out / "50-rayjobs.yaml").read_text().replace("backoffLimit: 1", "backoffLimit: 5"))
    assert script.main() == 1


@pytest.mark.checkov
def test_checkov_finds_nothing_in_k8s():
    """checkov's Kubernetes checks over k8s/ (it knows the built-in kinds; the Ray pods are checked above): nothing
    fails, and every skip (annotations on the CronJob) says why."""
    report = run_checkov([ROOT / "k8s"], "kubernetes")
    assert report["failed"] == [], check_ids(report["failed"])
    assert report["passed_count"] > 50
    assert all(s["check_result"].get("suppress_comment") for s in report["skipped"]), check_ids(report["skipped"])
