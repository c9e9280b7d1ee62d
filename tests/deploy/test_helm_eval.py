"""The evaluation-sweep chart (helm/fusion-eval) and `fusion sweep`.

Renders the chart with its defaults and with every tests/values/eval-*.yaml, then checks what a cluster
would get: helm lint, strict Kubernetes 1.31 schemas, hardened pods, deny-by-default NetworkPolicy, one
Indexed Job per sweep item, every item's job file accepted by the project's own job schema, checkov (one
run over all renders), values the schema rejects, and the CLI (render to files, unreachable cluster).
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_pipeline import cli
from ray_pipeline.evaluation.config import EvalJob
from ray_pipeline.jobs import load_job, parse_job
from ray_pipeline.deploy import manifests, sweep
from ray_pipeline.core.errors import FusionError
from tests import k8s_helpers

from tests.paths import REPO as ROOT
CHART = ROOT / "helm" / "fusion-eval"
VALUES_FILES = sorted((ROOT / "tests" / "values").glob("eval-*.yaml"))
RELEASE, NAMESPACE = "fusion-eval", "evals"
ALL_LANGUAGES = ["java", "js", "cpp", "php", "swift", "rs"]
ALIASES = {"javascript": "js", "c++": "cpp", "rust": "rs"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def effective(values: dict[str, Any]) -> dict[str, Any]:
    """Values merged over the chart's defaults as Helm merges them (maps deep, lists replaced)."""
    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for key, value in over.items():
                out[key] = merge(base.get(key), value) if key in base else value
            return out
        return over
    return merge(chart_defaults(), values)


class Render:
    def __init__(self, name: str, values: dict[str, Any]):
        self.name, self.values, self.eff = name, values, effective(values)
        self.objects = sweep.render(CHART, values, RELEASE, NAMESPACE)
        self.notes = manifests.chart_notes(CHART, values, RELEASE, NAMESPACE)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def jobs(self, component: str | None = None) -> list[dict[str, Any]]:
        return [j for j in self.kind("Job")
                if component is None or j["metadata"]["labels"]["fusion-eval/component"] == component]

    def expected_items(self) -> set[tuple[str, str, str]]:
        """(model label, benchmark key, sampling name) of the whole product."""
        sw = self.eff["sweep"]
        benches = []
        for b in sw["benchmarks"]:
            if b["name"] == "multiple":
                benches += [f"multiple-{ALIASES.get(lang, lang)}" for lang in b.get("languages") or ALL_LANGUAGES]
            else:
                benches.append(b["name"])
        return {(m["label"], b, s["name"]) for m in sw["models"] for b in benches for s in sw["sampling"]}


@pytest.fixture(scope="module")
def renders() -> dict[str, Render]:
    assert len(VALUES_FILES) >= 3, "tests/values/eval-*.yaml: at least three realistic values files"
    found = {"defaults": Render("defaults", {})}
    for path in VALUES_FILES:
        found[path.stem] = Render(path.stem, yaml.safe_load(path.read_text()))
    return found


def pod_specs(r: Render) -> list[tuple[str, dict[str, Any]]]:
    return [(j["metadata"]["name"], j["spec"]["template"]["spec"]) for j in r.jobs()]


# --- the chart as a whole -------------------------------------------------------------------------------------

def test_lint_is_clean_for_defaults_and_every_values_file(renders: dict[str, Render]) -> None:
    for r in renders.values():
        assert manifests.lint_chart(CHART, r.values) == [], r.name


def test_every_object_is_a_valid_kubernetes_1_31_object(renders: dict[str, Render]) -> None:
    for r in renders.values():
        manifests.validate_objects(r.objects, kube_version="1.31")  # strict: unknown fields are errors
        assert {o["kind"] for o in r.objects} <= {"ServiceAccount", "NetworkPolicy", "PersistentVolumeClaim",
                                                  "ConfigMap", "Job"}, r.name
        assert all(o["metadata"]["namespace"] == NAMESPACE for o in r.objects), r.name
    # the validator is live: a typo in a pod spec is reported
    bad = copy.deepcopy(renders["defaults"].jobs("item")[0])
    bad["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(FusionError, match="securityContex"):
        manifests.validate_objects([bad])


def test_no_secret_objects_and_credentials_only_by_reference(renders: dict[str, Render]) -> None:
    for r in renders.values():
        assert not r.kind("Secret"), r.name
        for name, spec in pod_specs(r):
            for env in spec["containers"][0]["env"]:
                if env["name"] in ("OPENAI_API_KEY", "HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    assert "value" not in env and set(env["valueFrom"]) == {"secretKeyRef"}, (r.name, name)
    endpoint = {e["name"]: e for e in renders["eval-endpoint"].jobs("item")[0]["spec"]["template"]["spec"]
                ["containers"][0]["env"]}
    assert endpoint["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "vllm-qwen-api-key", "key": "api-key"}
    merge_env = {e["name"] for e in renders["eval-endpoint"].jobs("merge")[0]["spec"]["template"]["spec"]
                 ["containers"][0]["env"]}
    assert "OPENAI_API_KEY" not in merge_env  # the merge pod runs no model


# --- hardening ------------------------------------------------------------------------------------------------

def test_every_pod_is_hardened(renders: dict[str, Render]) -> None:
    for r in renders.values():
        pod = r.eff["pod"]
        image = r.eff["image"]
        tag = image.get("tag") or "0.1.0"
        want_image = f"{image['repository']}:{tag}" + (f"@{image['digest']}" if image.get("digest") else "")
        sa = r.kind("ServiceAccount")
        assert len(sa) == 1 and sa[0]["automountServiceAccountToken"] is False, r.name
        assert not [o for o in r.objects if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
        jobs = r.jobs()
        assert jobs, r.name
        for job in jobs:
            name, spec = job["metadata"]["name"], job["spec"]["template"]["spec"]
            where = (r.name, name)
            assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["ttlSecondsAfterFinished"] >= 0, where
            assert spec["restartPolicy"] == "Never", where
            assert spec["serviceAccountName"] == sa[0]["metadata"]["name"], where
            assert spec["automountServiceAccountToken"] is False, where
            assert spec["enableServiceLinks"] is False, where
            for key in ("hostNetwork", "hostPID", "hostIPC", "initContainers", "hostAliases"):
                assert key not in spec, where
            psc = spec["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532 and psc["fsGroup"] == 65532, where
            assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            gpu = any(k == r.eff["gpu"]["resourceName"] for c in spec["containers"]
                      for k in c["resources"].get("limits", {}))
            runtime = pod["runtimeClassName"]
            if gpu and r.eff["gpu"].get("runtimeClassName") is not None:
                runtime = r.eff["gpu"]["runtimeClassName"]
            assert spec.get("runtimeClassName") == (runtime or None), where
            assert len(spec["containers"]) == 1, where
            c = spec["containers"][0]
            assert c["image"] == want_image and ":latest" not in c["image"], where
            assert c["imagePullPolicy"] == (image.get("pullPolicy")
                                            or ("IfNotPresent" if image.get("digest") else "Always")), where
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, where
            assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), where
            assert "ports" not in c, where
            # writable places are emptyDirs with a size limit; everything else is read-only
            volumes = {v["name"]: v for v in spec["volumes"]}
            for mount in c["volumeMounts"]:
                vol = volumes[mount["name"]]
                if "emptyDir" in vol:
                    assert vol["emptyDir"]["sizeLimit"], where
                elif mount["name"] != "results":
                    assert mount.get("readOnly") is True, (where, mount)
                assert "hostPath" not in vol, where
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/home/fusion"} <= mounts, where
            if job["metadata"]["labels"]["fusion-eval/component"] == "item":
                assert {"/scratch", "/etc/fusion", "/dev/shm"} <= mounts, where
                assert volumes["dshm"]["emptyDir"]["medium"] == "Memory", where


def test_gpu_pods_only_for_local_checkpoints_with_their_pool(renders: dict[str, Render]) -> None:
    paper = renders["eval-if-paper"]
    for job in paper.jobs("item"):
        spec = job["spec"]["template"]["spec"]
        res = spec["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == 1 and res["requests"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64", "cloud.google.com/gke-accelerator": "nvidia-l4",
                                        "fusion/pool": "eval-gpu"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert "nodeAffinity" in spec["affinity"]
        models = {v["name"]: v for v in spec["volumes"]}["models"]["persistentVolumeClaim"]
        assert models == {"claimName": "fusion-models", "readOnly": True}
    for job in renders["eval-endpoint"].jobs() + renders["defaults"].jobs():
        res = job["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert "nvidia.com/gpu" not in res["limits"], job["metadata"]["name"]
    store = renders["eval-objectstore"]
    for job in store.jobs("item"):
        spec = job["spec"]["template"]["spec"]
        gpu = job["metadata"]["labels"]["fusion-eval/model"] == "deepseek-coder-1.3b-instruct"
        assert ("nvidia.com/gpu" in spec["containers"][0]["resources"]["limits"]) == gpu
        assert spec["runtimeClassName"] == ("kata-qemu-nvidia-gpu" if gpu else "kata")


def test_runtime_class_can_be_switched_off(renders: dict[str, Render]) -> None:
    values = copy.deepcopy(renders["eval-objectstore"].values)
    values["pod"]["runtimeClassName"] = ""
    values["gpu"]["runtimeClassName"] = ""
    objects = sweep.render(CHART, values, RELEASE, NAMESPACE)
    jobs = [o for o in objects if o["kind"] == "Job"]
    assert jobs and all("runtimeClassName" not in j["spec"]["template"]["spec"] for j in jobs)
    assert all(j["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor" for j in renders["defaults"].jobs())


def test_network_policy_denies_all_but_the_configured_egress(renders: dict[str, Render]) -> None:
    dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    for r in renders.values():
        policies = r.kind("NetworkPolicy")
        assert len(policies) == 1, r.name
        spec = policies[0]["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"], r.name
        assert spec["ingress"] == [], r.name
        expected = ([dns] if r.eff["networkPolicy"]["allowDNS"] else []) + r.eff["networkPolicy"]["allowEgress"]
        assert spec["egress"] == expected, r.name
        selector = spec["podSelector"]["matchLabels"]
        for job in r.jobs():  # every sweep and merge pod is selected
            labels = job["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), (r.name, job["metadata"]["name"])
    assert renders["defaults"].kind("NetworkPolicy")[0]["spec"]["egress"] == []
    endpoint = renders["eval-endpoint"].kind("NetworkPolicy")[0]["spec"]["egress"]
    assert len(endpoint) == 2 and endpoint[1]["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert endpoint[1]["to"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "vllm-qwen"}}


# --- the sweep ------------------------------------------------------------------------------------------------

def test_one_indexed_job_per_item_with_unique_short_names(renders: dict[str, Render]) -> None:
    counts = {}
    for r in renders.values():
        sw = r.eff["sweep"]
        items, shards = r.expected_items(), sw["shards"]
        jobs = r.jobs("item")
        counts[r.name] = len(jobs)
        assert len(jobs) == len(items), r.name
        got = {(j["metadata"]["labels"]["fusion-eval/model"], j["metadata"]["labels"]["fusion-eval/benchmark"],
                j["metadata"]["labels"]["fusion-eval/sampling"]) for j in jobs}
        assert got == {(re.sub(r"[^A-Za-z0-9_.-]+", "-", m), b, s) for m, b, s in items}, r.name
        names = [o["metadata"]["name"] for o in r.objects if o["kind"] in ("Job", "ConfigMap")]
        assert len(set(j["metadata"]["name"] for j in r.jobs())) == len(r.jobs()), r.name
        for name in names:
            assert len(name) <= 63 and DNS_LABEL.match(name), (r.name, name)
        for job in jobs:
            spec = job["spec"]
            assert spec["completionMode"] == "Indexed" and spec["completions"] == shards, r.name
            assert spec["parallelism"] == min(shards, sw.get("parallelism") or shards), r.name
            assert spec["backoffLimitPerIndex"] == r.eff["job"]["backoffLimitPerIndex"], r.name
            assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2], r.name
            if r.eff["job"].get("maxFailedIndexes") is not None:
                assert spec["maxFailedIndexes"] == r.eff["job"]["maxFailedIndexes"], r.name
            volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
            assert volumes["job"]["configMap"]["name"] == job["metadata"]["name"], r.name
        merge = r.jobs("merge")
        assert len(merge) == 1, r.name
        args = merge[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--expect") + 1] == str(len(items) * shards), r.name
        assert f"{len(items)} Indexed Job(s) x {shards} shard(s) = {len(items) * shards} pod run(s)" in r.notes
        assert f"job/{merge[0]['metadata']['name']}" in r.notes and "merged/summary.md" in r.notes
    # 1x(2+6)x1, 2x(2+6)x1, 1x2x2, 2x(1+2)x1
    assert counts == {"defaults": 8, "eval-if-paper": 16, "eval-endpoint": 4, "eval-objectstore": 6}
    # long labels are cut to 63 characters and stay distinct (the hash of the full item id)
    long = {"sweep": {"models": [{"label": "m" * 60 + "-a", "backend": "embedded"},
                                 {"label": "m" * 60 + "-b", "backend": "embedded"}],
                      "benchmarks": [{"name": "humaneval"}]}}
    names = [o["metadata"]["name"] for o in sweep.render(CHART, long, RELEASE, NAMESPACE) if o["kind"] == "Job"]
    assert len(set(names)) == 3 and all(len(n) <= 63 and DNS_LABEL.match(n) for n in names)


def test_shard_pods_run_and_publish_their_item(renders: dict[str, Render]) -> None:
    for r in renders.values():
        shards = r.eff["sweep"]["shards"]
        store = r.eff["results"]
        root = (store["objectStore"]["uri"].rstrip("/") if store["type"] == "objectStore"
                else store["volume"]["mountPath"]) + "/" + r.eff["sweep"]["name"]
        for job in r.jobs("item"):
            c = job["spec"]["template"]["spec"]["containers"][0]
            item = job["metadata"]["annotations"]["fusion-eval/item"]
            assert c["command"] == ["fusion"], r.name
            assert c["args"] == ["run", "/etc/fusion/job.yaml", "--shard", f"$(JOB_COMPLETION_INDEX)/{shards}",
                                 "--output-dir", "/scratch/run",
                                 "--publish", f"{root}/{item}/shard-$(JOB_COMPLETION_INDEX)"], r.name
        merge = r.jobs("merge")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert merge[:2] == ["merge", root] and merge[merge.index("--out") + 1] == f"{root}/merged", r.name
        pvcs = r.kind("PersistentVolumeClaim")
        if store["type"] == "volume" and not store["volume"]["existingClaim"]:
            assert len(pvcs) == 1 and pvcs[0]["spec"]["accessModes"] == ["ReadWriteMany"], r.name
            assert pvcs[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", r.name
        else:
            assert pvcs == [], r.name
    store = renders["eval-objectstore"].jobs("merge")[0]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in store["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "fusion-s3", "key": "access-key-id"}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio.svc.cluster.local:9000"
    assert "results" not in {v["name"] for v in store["volumes"]}
    claim = {v["name"]: v for v in renders["eval-endpoint"].jobs("item")[0]["spec"]["template"]["spec"]["volumes"]}
    assert claim["results"]["persistentVolumeClaim"]["claimName"] == "eval-results"


def test_every_item_job_is_a_valid_eval_job(renders: dict[str, Render], tmp_path: Path) -> None:
    for r in renders.values():
        sw = r.eff["sweep"]
        many = len(sw["sampling"]) > 1
        by_label = {m["label"]: m for m in sw["models"]}
        seen = set()
        for cm in r.kind("ConfigMap"):
            text = cm["data"]["job.yaml"]
            job = parse_job(yaml.safe_load(text), cm["metadata"]["name"])
            assert isinstance(job, EvalJob), r.name
            # exactly what the pod does: load the mounted file
            path = tmp_path / f"{cm['metadata']['name']}.yaml"
            path.write_text(text)
            assert isinstance(load_job(path), EvalJob)
            assert len(job.models) == 1 and len(job.benchmarks) == 1, r.name
            assert job.sandbox.isolation == "pod", r.name
            assert job.output_dir == "/scratch/run"
            model, bench = job.models[0], job.benchmarks[0]
            base, _, sampling = model.label.rpartition("+") if many else (model.label, "", sw["sampling"][0]["name"])
            assert base in by_label and model.prompt == by_label[base].get("prompt", "completion"), r.name
            want = next(s for s in sw["sampling"] if s["name"] == sampling)
            assert job.sampling.n == want.get("n", 1) and job.sampling.temperature == want.get("temperature", 0.0)
            assert job.sampling.k == want.get("k", [1]), r.name
            if bench.name == "multiple":
                assert len(bench.languages) == 1, r.name
            key = (base, bench.name + (f"-{bench.languages[0]}" if bench.name == "multiple" else ""), sampling)
            assert cm["metadata"]["annotations"]["fusion-eval/item"] == "/".join(key), r.name
            seen.add(key)
        assert seen == r.expected_items(), r.name
    paper = [parse_job(yaml.safe_load(cm["data"]["job.yaml"])) for cm in renders["eval-if-paper"].kind("ConfigMap")]
    assert all(j.models[0].backend.kind == "vllm" and j.models[0].backend.num_gpus == 1 for j in paper)
    assert {j.models[0].backend.model for j in paper} == {"/models/CodeLlama-7b-Python-hf",
                                                          "/models/sft-if-codellama-7b/model"}
    multiple = [j.benchmarks[0] for j in paper if j.benchmarks[0].name == "multiple"]
    assert len(multiple) == 12 and all(b.path == "/opt/fusion/bench/multiple" for b in multiple)
    endpoint = [parse_job(yaml.safe_load(cm["data"]["job.yaml"])) for cm in renders["eval-endpoint"].kind("ConfigMap")]
    assert {j.models[0].label for j in endpoint} == {"qwen2.5-coder-7b-instruct+t0.8-n10",
                                                     "qwen2.5-coder-7b-instruct+greedy"}
    assert all(j.models[0].backend.kind == "openai" for j in endpoint)


def test_every_sandbox_setting_of_a_job_can_be_set_in_a_sweep() -> None:
    """The chart's sandbox schema names each job sandbox field but isolation, and each reaches the item's job."""
    import json

    from ray_pipeline.evaluation.config import SandboxConfig

    schema = json.loads((CHART / "values.schema.json").read_text())
    names = set(schema["properties"]["sweep"]["properties"]["sandbox"]["properties"])
    assert names == set(SandboxConfig.model_fields) - {"isolation"}
    wanted = {"multiple_memory_mb": 2048, "nproc": 64, "output_mb": 8, "find_zero": "0.3.1", "memory_mb": 1024}
    values = {"sweep": {"sandbox": wanted, "benchmarks": [{"name": "humaneval"}]}}
    sweep.check_values(CHART, values)
    configmaps = [o for o in sweep.render(CHART, values, RELEASE, NAMESPACE) if o["kind"] == "ConfigMap"]
    assert configmaps
    for cm in configmaps:
        job = parse_job(yaml.safe_load(cm["data"]["job.yaml"]), cm["metadata"]["name"])
        assert {k: getattr(job.sandbox, k) for k in wanted} == wanted


def test_a_job_the_project_rejects_is_never_rendered(tmp_path: Path) -> None:
    # passes the chart schema, but k=5 > n=1 is an invalid eval job: `fusion sweep` names the item
    values = {"sweep": {"sampling": [{"name": "greedy", "n": 1, "k": [5]}], "benchmarks": [{"name": "mbpp"}]}}
    sweep.check_values(CHART, values)
    with pytest.raises(FusionError, match=r"sweep item gemma3-270m/mbpp/greedy: sampling: k: \[5\] not in 1..n=1"):
        sweep.render(CHART, values, RELEASE, NAMESPACE)


# --- values the chart refuses ---------------------------------------------------------------------------------

BAD_VALUES = [
    ({"sweep": {"benchmarks": [{"name": "apps"}]}}, "sweep.benchmarks[0].name: 'apps' is not one of"),
    ({"sweep": {"shards": 0}}, "sweep.shards: 0 is less than the minimum of 1"),
    ({"sweep": {"models": []}}, "sweep.models: [] should be non-empty"),
    ({"sweep": {"benchmarks": [{"name": "multiple", "languages": ["go"]}]}}, "languages[0]: 'go' is not one of"),
    ({"sweep": {"models": [{"label": "a", "backend": {"kind": "vllm"}}]}}, "'model' is a required property"),
    ({"sweep": {"sampling": [{"name": "t", "false": 10}]}}, 'quote it: "n": 10'),
    ({"results": {"type": "objectStore"}}, "results.objectStore.uri"),
    ({"results": {"type": "objectStore", "objectStore": {"uri": "ftp://x/y"}}}, "does not match"),
    ({"pod": {"runAsUser": 0}}, "pod.runAsUser: 0 is less than the minimum of 1"),
    ({"sweeps": {}}, "Additional properties are not allowed ('sweeps' was unexpected)"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_schema_rejects_bad_values_in_one_line(values: dict[str, Any], message: str) -> None:
    with pytest.raises(FusionError) as err:
        sweep.check_values(CHART, values, "v.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FusionError):  # and Helm itself refuses them (helm install -f)
        manifests.render_chart(CHART, values, RELEASE, NAMESPACE)


@pytest.mark.parametrize(("values", "message"), [
    ({"image": {"tag": "latest"}}, 'image.tag: "latest" is not allowed'),
    ({"image": {"pullPolicy": "IfNotPresent"}}, "image.pullPolicy: IfNotPresent needs image.digest"),
    ({"sweep": {"models": [{"label": "a", "backend": "embedded"}, {"label": "a", "backend": "x/y"}]}},
     'label "a" used twice'),
    ({"sweep": {"sampling": [{"name": "s", "n": 1}, {"name": "s", "n": 1}]}}, 'name "s" used twice'),
    ({"sweep": {"benchmarks": [{"name": "humaneval", "languages": ["java"]}]}}, "languages is for the multiple"),
])
def test_the_chart_refuses_what_the_schema_cannot_see(values: dict[str, Any], message: str) -> None:
    with pytest.raises(FusionError, match=re.escape(message)) as err:
        sweep.render(CHART, values, RELEASE, NAMESPACE)
    assert "\n" not in str(err.value)


# --- checkov --------------------------------------------------------------------------------------------------

@pytest.mark.checkov
def test_checkov_finds_nothing_and_every_skip_has_a_reason(renders: dict[str, Render], tmp_path: Path) -> None:
    files = []
    for r in renders.values():
        path = tmp_path / f"{r.name}.yaml"
        path.write_text(manifests.to_yaml(r.objects))
        files.append(path)
    report = k8s_helpers.run_checkov(files, "kubernetes")
    assert report["failed"] == [], k8s_helpers.check_ids(report["failed"])
    assert report["passed_count"] > 100
    for check in report["skipped"]:
        assert (check.get("check_result") or {}).get("suppress_comment", "").strip(), check.get("check_id")
    skips = {}
    for r in renders.values():
        for obj in r.objects:
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check_id, sep, reason = value.partition("=")
                    assert re.fullmatch(r"CKV2?_K8S_\d+", check_id) and sep and len(reason.strip()) > 20, value
                    assert "=" not in reason, value  # checkov splits the annotation on '='
                    skips.setdefault(r.name, set()).add(check_id)
    # digest pinned: no image skip; secrets as env only where a Secret is referenced
    assert skips == {"defaults": {"CKV_K8S_43"}, "eval-endpoint": {"CKV_K8S_43", "CKV_K8S_35"},
                     "eval-objectstore": {"CKV_K8S_35"}}


# --- fusion sweep ---------------------------------------------------------------------------------------------

def test_cli_renders_to_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = ROOT / "tests" / "values" / "eval-endpoint.yaml"
    out = tmp_path / "manifests"
    out.mkdir()
    (out / "04-job-stale-from-an-earlier-render.yaml").write_text("kind: Job\n")
    (out / "keep-me.txt").write_text("mine")
    assert cli.main(["sweep", str(values), "--out", str(out), "--namespace", NAMESPACE]) == 0
    printed = capsys.readouterr().out
    files = sorted(p for p in out.iterdir() if p.suffix == ".yaml")
    objects = [yaml.safe_load(p.read_text()) for p in files]
    assert len(objects) == 11 and (out / "keep-me.txt").read_text() == "mine"
    assert not (out / "04-job-stale-from-an-earlier-render.yaml").exists()
    # file names sort in apply order: the ServiceAccount and NetworkPolicy before any Job
    kinds = [o["kind"] for o in objects]
    assert kinds.index("ServiceAccount") < kinds.index("ConfigMap") < kinds.index("Job")
    manifests.validate_objects(objects)
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in objects)
    assert f"wrote 11 manifests to {out}" in printed and "4 Indexed Job(s) x 4 shard(s) = 16 pod run(s)" in printed
    assert "16 pod run(s)" in (out / "NOTES.txt").read_text()


def test_cli_prints_yaml_on_stdout_and_notes_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    values = ROOT / "tests" / "values" / "eval-objectstore.yaml"
    assert cli.main(["sweep", str(values), "--namespace", NAMESPACE, "--release", "objstore"]) == 0
    captured = capsys.readouterr()
    objects = [d for d in yaml.safe_load_all(captured.out) if d]
    assert len([o for o in objects if o["kind"] == "Job"]) == 7
    assert all(o["metadata"]["labels"]["app.kubernetes.io/instance"] == "objstore" for o in objects)
    assert "s3://fusion-evals/sweeps/small-models/merged/summary.md" in captured.err


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fusion: error: ") and "\n" not in err, err
    return err


def test_cli_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "values file not found" in _error(["sweep", str(tmp_path / "nope.yaml")], capsys)
    broken = tmp_path / "broken.yaml"
    broken.write_text("sweep:\n  models: [\n")
    assert "invalid YAML at line" in _error(["sweep", str(broken)], capsys)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    assert "must be a YAML mapping" in _error(["sweep", str(listed)], capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep:\n  shards: 0\n")
    assert "sweep.shards: 0 is less than the minimum of 1" in _error(["sweep", str(bad)], capsys)
    ok = ROOT / "tests" / "values" / "eval-endpoint.yaml"
    assert "--dry-run goes with --install" in _error(["sweep", str(ok), "--dry-run"], capsys)


def test_install_into_an_unreachable_cluster_fails_fast_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody", "namespace": "evals"}}],
        "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    values = ROOT / "tests" / "values" / "eval-endpoint.yaml"
    for extra in ([], ["--dry-run"]):
        start = time.monotonic()
        err = _error(["sweep", str(values), "--install", "--release", "qwen", *extra], capsys)
        assert time.monotonic() - start < 15
        assert "cannot reach the Kubernetes cluster" in err and "127.0.0.1:1" in err, err
    assert sweep.kube_namespace() == "evals"  # the context's namespace is the default one


def test_install_calls_helm_install_or_upgrade_with_server_dry_run(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The glue around the SDK (no cluster here): install a new release, upgrade an existing one, --dry-run=server."""
    import helm_python

    calls: list[tuple[str, dict[str, Any]]] = []

    class FakeConfig:
        existing: set[str] = {"old"}

        def __init__(self, **options: Any) -> None:
            calls.append(("config", options))

        def __enter__(self) -> "FakeConfig":
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

        def check_reachable(self) -> None:
            calls.append(("reach", {}))

        def status(self, name: str) -> dict[str, Any]:
            if name not in self.existing:
                raise helm_python.HelmNotFoundError("release: not found")
            return {"name": name}

        def install(self, chart: str, name: str, values: dict[str, Any], **kw: Any) -> dict[str, Any]:
            calls.append(("install", {"chart": chart, "name": name, "values": values, **kw}))
            return {"name": name, "version": 1, "info": {"status": "deployed"}}

        def upgrade(self, chart: str, name: str, values: dict[str, Any], **kw: Any) -> dict[str, Any]:
            calls.append(("upgrade", {"chart": chart, "name": name, "values": values, **kw}))
            return {"name": name, "version": 2, "info": {"status": "deployed"}}

    monkeypatch.setattr(helm_python, "Config", FakeConfig)
    values = ROOT / "tests" / "values" / "eval-endpoint.yaml"
    assert cli.main(["sweep", str(values), "--install", "--release", "new", "--namespace", NAMESPACE]) == 0
    assert "release new in namespace evals: revision 1, status deployed; 11 objects" in capsys.readouterr().out
    assert cli.main(["sweep", str(values), "--install", "--release", "old", "--namespace", NAMESPACE,
                     "--dry-run"]) == 0
    assert "revision 2, checked by the API server" in capsys.readouterr().out
    actions = [(name, kw) for name, kw in calls if name in ("install", "upgrade")]
    assert [a for a, _ in actions] == ["install", "upgrade"]
    assert actions[0][1]["dry_run"] is None and actions[1][1]["dry_run"] == "server"
    assert all(kw["namespace"] == NAMESPACE and kw["chart"] == str(CHART) for _, kw in actions)
    assert actions[0][1]["values"]["sweep"]["name"] == "qwen-coder-endpoint"
    assert [kw["namespace"] for name, kw in calls if name == "config"] == [NAMESPACE, NAMESPACE]


def test_every_benchmark_setting_of_a_job_can_be_set_in_a_sweep() -> None:
    """The chart's benchmark schema names each job benchmark field, and the TaCIE paper's benchmarks (with an MT-Bench
    judge) reach each item's job file as given."""
    import json

    from ray_pipeline.evaluation.config import EvalBenchmarkConfig

    schema = json.loads((CHART / "values.schema.json").read_text())
    bench_schema = schema["properties"]["sweep"]["properties"]["benchmarks"]["items"]["properties"]
    assert set(bench_schema) == set(EvalBenchmarkConfig.model_fields) - {"prompt"}
    assert set(bench_schema["name"]["enum"]) == set(EvalBenchmarkConfig.model_fields["name"].annotation.__args__)
    benchmarks = [{"name": "mt_bench", "judge": "gpt-4o", "judge_max_tokens": 1024, "references": "/data/gpt-4.jsonl",
                   "category_temperatures": False},
                  {"name": "ifeval", "max_tokens": 2048}, {"name": "gsm8k", "answer_pattern": "#### (\\d+)"}]
    values = {"sweep": {"benchmarks": benchmarks}}
    sweep.check_values(CHART, values)
    jobs = [parse_job(yaml.safe_load(o["data"]["job.yaml"]))
            for o in sweep.render(CHART, values, RELEASE, NAMESPACE) if o["kind"] == "ConfigMap"]
    got = {j.benchmarks[0].name: j.benchmarks[0] for j in jobs}
    assert set(got) == {"mt_bench", "ifeval", "gsm8k"}
    assert got["mt_bench"].judge.kind == "openai" and got["mt_bench"].judge.model == "gpt-4o"
    assert (got["mt_bench"].judge_max_tokens, got["mt_bench"].references) == (1024, "/data/gpt-4.jsonl")
    assert got["mt_bench"].category_temperatures is False
    assert got["ifeval"].answer_tokens == 2048 and got["gsm8k"].answer_pattern == "#### (\\d+)"
