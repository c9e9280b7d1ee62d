"""The container images: docker/job.Dockerfile, eval/Dockerfile, .dockerignore.

No Docker engine runs here, so the images are checked by reading them: checkov's
Dockerfile policies, pins that must agree with pyproject.toml, the Makefile and
evalplus, every download verified before use, non-root users, the toolchains the
executors call, the variables the code reads, and the benchmark checksums against
the data in ../shared. eval/check_image.py, which the eval image's build runs as its
runtime user, is run here against this machine's toolchains and ../shared's data.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED
from tests.k8s_helpers import check_ids, run_checkov

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

JOB_DOCKERFILE = REPO / "docker" / "job.Dockerfile"
EVAL_DOCKERFILE = REPO / "eval" / "Dockerfile"
DOCKERFILES = (JOB_DOCKERFILE, EVAL_DOCKERFILE)
CHECK_IMAGE = REPO / "eval" / "check_image.py"
EXECUTORS = REPO / "ray_pipeline" / "evaluation" / "executors"
EVAL_CHART_VALUES = REPO / "helm" / "fusion-eval" / "values.yaml"
RAY_CHART_VALUES = REPO / "helm" / "fusion-ray" / "values.yaml"
BENCH = SHARED / "data" / "bench"
#: the text benchmarks' files in eval/bench.sha256 -> ../shared's copy (MT-Bench's references renamed there)
TEXT_BENCH_FILES = {
    "gsm8k/test.jsonl": SHARED / "data" / "seeds" / "gsm8k" / "test.jsonl",
    "ifeval/input_data.jsonl": BENCH / "ifeval" / "input_data.jsonl",
    "mt_bench/question.jsonl": BENCH / "mt-bench" / "question.jsonl",
    "mt_bench/reference_answer/gpt-4.jsonl": BENCH / "mt-bench" / "reference_answer_gpt-4.jsonl",
}
#: each text benchmark file's (commit ARG, upstream repository and path, ../shared's SOURCE.md)
TEXT_BENCH_SOURCES = {
    "gsm8k/test.jsonl": ("GSM8K_COMMIT", "openai/grade-school-math", "grade_school_math/data/test.jsonl",
                         SHARED / "data" / "seeds" / "gsm8k" / "SOURCE.md"),
    "ifeval/input_data.jsonl": ("IFEVAL_COMMIT", "google-research/google-research",
                                "instruction_following_eval/data/input_data.jsonl", BENCH / "ifeval" / "SOURCE.md"),
    "mt_bench/question.jsonl": ("MT_BENCH_COMMIT", "lm-sys/FastChat", "fastchat/llm_judge/data/mt_bench/question.jsonl",
                                BENCH / "mt-bench" / "SOURCE.md"),
    "mt_bench/reference_answer/gpt-4.jsonl": ("MT_BENCH_COMMIT", "lm-sys/FastChat",
                                              "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
                                              BENCH / "mt-bench" / "SOURCE.md"),
}
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


# ------------------------------------------------------------------ Dockerfile reading
def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text:
            word, _, rest = text.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: a continuation line ends the file"
    return out


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def expand(text: str, values: dict[str, str]) -> str:
    return VAR.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def env_values(path: Path) -> dict[str, str]:
    """ENV NAME=value pairs (several per instruction), as written."""
    env = {}
    for word, rest in instructions(path):
        if word == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
                env[name] = value.strip('"')
    return env


def runs(path: Path) -> list[str]:
    return [rest for word, rest in instructions(path) if word == "RUN"]


def commands(run: str) -> list[str]:
    return [c.strip() for c in run.split("&&") if c.strip()]


def from_images(path: Path, **overrides: str) -> list[str]:
    values = {**arg_defaults(path), **overrides}
    return [expand(rest.split()[0], values) for word, rest in instructions(path) if word == "FROM"]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(requirements: list[str], name: str) -> str:
    """The ==version of ``name`` in a list of requirement strings."""
    for req in requirements:
        m = re.match(rf"^{re.escape(name)}(\[[^\]]*\])?==([\w.]+)$", req.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"{name} is not pinned with == in {requirements}")


# ------------------------------------------------------------------ checkov
BAD_DOCKERFILE = """FROM python:latest
RUN curl -k -o /tmp/x https://example.org/x
USER root
"""


@pytest.mark.checkov
def test_checkov_passes_both_images_and_still_fails_a_bad_one(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    report = run_checkov([*DOCKERFILES, bad], "dockerfile")
    ours = [c for c in report["failed"] if Path(c["file_abs_path"]).resolve() != bad.resolve()]
    bad_ids = {c["check_id"] for c in report["failed"] if Path(c["file_abs_path"]).resolve() == bad.resolve()}
    assert not ours, "checkov failed checks:\n" + "\n".join(check_ids(ours))
    # the scan is live: the bad file trips the latest-tag, root-user and curl -k policies
    assert {"CKV_DOCKER_7", "CKV_DOCKER_8", "CKV2_DOCKER_2"} <= bad_ids, check_ids(report["failed"])
    assert report["passed_count"] > 0
    for skipped in report["skipped"]:
        assert (skipped.get("suppress_comment") or "").strip(), f"{skipped['check_id']} skipped without a reason"


def test_checkov_skips_in_the_dockerfiles_carry_a_reason():
    for path in DOCKERFILES:
        for line in path.read_text().splitlines():
            m = re.search(r"checkov:skip=(\w+)(?::(.*))?", line)
            if m:
                assert (m.group(2) or "").strip(), f"{path.name}: {m.group(1)} skipped without a reason"


# ------------------------------------------------------------------ base images and pins
def test_every_from_is_pinned_by_tag_or_digest():
    for path in DOCKERFILES:
        images = from_images(path)
        assert images, f"{path.name} has no FROM"
        for image in images:
            assert "$" not in image, f"{path.name}: FROM {image} has a variable without a default"
            name = image.split("@")[0]
            tag = name.rsplit("/", 1)[-1].partition(":")[2]
            assert tag or "@sha256:" in image, f"{path.name}: FROM {image} has neither tag nor digest"
            assert tag != "latest", f"{path.name}: FROM {image} uses latest"


def test_job_image_is_ray_of_the_pinned_version_for_both_variants():
    ray = pinned(pyproject()["project"]["dependencies"], "ray")
    for variant in ("cpu", "gpu"):
        assert from_images(JOB_DOCKERFILE, VARIANT=variant) == [f"rayproject/ray:{ray}-py311-{variant}"]
    assert arg_defaults(JOB_DOCKERFILE)["VARIANT"] == "cpu"
    if RAY_CHART_VALUES.is_file():  # KubeRay's rayVersion describes the Ray inside this image
        assert str(yaml.safe_load(RAY_CHART_VALUES.read_text())["rayVersion"]) == ray
    version = pyproject()["project"]["version"]
    assert arg_defaults(JOB_DOCKERFILE)["VERSION"] == version
    assert arg_defaults(EVAL_DOCKERFILE)["VERSION"] == version
    base = from_images(EVAL_DOCKERFILE)[0]
    assert base.startswith(f"ghcr.io/fusion-engine/fusion-job:{version}-"), base


def test_job_image_installs_the_project_as_the_makefile_does():
    project = pyproject()
    extras = project["project"]["optional-dependencies"]
    assert arg_defaults(JOB_DOCKERFILE)["TORCH_VERSION"] == pinned(extras["cpu"], "torch")
    install = next(r for r in runs(JOB_DOCKERFILE) if "pip install" in r)
    cmds = commands(install)
    torch_at = next(i for i, c in enumerate(cmds) if '"torch==${TORCH_VERSION}"' in c)
    project_at = next(i for i, c in enumerate(cmds) if "[${VARIANT}]" in c)
    assert torch_at < project_at, "torch must be installed before the project (as the Makefile does)"
    assert "--index-url" in cmds[torch_at]
    makefile = (REPO / "Makefile").read_text()
    wanted = set(re.search(r"pip uninstall -q -y ([\w ]+?)(?: \|\||;|$)", makefile, re.M).group(1).split())
    uninstall = next(c for c in cmds if "pip uninstall" in c)
    assert set(re.search(r"pip uninstall -y ([\w ]+?);", uninstall).group(1).split()) == wanted
    # nothing the project pins is installed at another version behind its back
    text = JOB_DOCKERFILE.read_text() + EVAL_DOCKERFILE.read_text()
    for name, version in (("evalplus", pinned(project["project"]["dependencies"], "evalplus")),
                          ("torch", pinned(extras["cpu"], "torch"))):
        for other in re.findall(rf"{name}==([\w.]+)", text):
            assert other == version, f"{name}=={other} in a Dockerfile, pyproject pins {version}"
    copied = {rest.split()[-2] for word, rest in instructions(JOB_DOCKERFILE) if word == "COPY"}
    assert {"jobs", "helm", "ray_pipeline"} <= copied, copied


def test_baked_evalplus_releases_are_the_ones_the_pinned_evalplus_downloads():
    from evalplus.data.humaneval import HUMANEVAL_PLUS_VERSION
    from evalplus.data.mbpp import MBPP_PLUS_VERSION

    args = arg_defaults(EVAL_DOCKERFILE)
    assert args["HUMANEVAL_PLUS_VERSION"] == HUMANEVAL_PLUS_VERSION
    assert args["MBPP_PLUS_VERSION"] == MBPP_PLUS_VERSION
    env = env_values(EVAL_DOCKERFILE)
    assert Path(env["HUMANEVAL_OVERRIDE_PATH"]).name == f"HumanEvalPlus-{HUMANEVAL_PLUS_VERSION}.jsonl.gz"
    assert Path(env["MBPP_OVERRIDE_PATH"]).name == f"MbppPlus-{MBPP_PLUS_VERSION}.jsonl.gz"


# ------------------------------------------------------------------ users and secrets
def test_no_env_or_arg_looks_like_a_secret():
    for path in DOCKERFILES:
        for word, rest in instructions(path):
            if word in ("ENV", "ARG"):
                names = [n for n, _ in re.findall(r'(\w+)=("[^"]*"|\S+)', rest)] or rest.split()[:1]
                for name in names:
                    assert not SECRET_NAME.search(name), f"{path.name}: {word} {name} looks like a secret"
            assert not re.search(r"\bsk-[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}", rest), f"{path.name}: a key in {word}"


def test_last_user_is_numeric_and_not_root():
    expected = {JOB_DOCKERFILE: "1000", EVAL_DOCKERFILE: "65532"}
    for path, uid in expected.items():
        users = [rest for word, rest in instructions(path) if word == "USER"]
        assert users, f"{path.name} sets no USER"
        last = users[-1].split(":")
        assert last[0].isdigit() and last[0] != "0", f"{path.name}: last USER {users[-1]} (numeric non-root wanted)"
        assert last[0] == uid
    if RAY_CHART_VALUES.is_file():  # the KubeRay chart runs the job image as its user
        pod = yaml.safe_load(RAY_CHART_VALUES.read_text())["podSecurity"]
        assert f"{pod['runAsUser']}:{pod['runAsGroup']}" == [r for w, r in instructions(JOB_DOCKERFILE)
                                                             if w == "USER"][-1]
    if EVAL_CHART_VALUES.is_file():  # the sweep chart runs the eval image as that user
        pod = yaml.safe_load(EVAL_CHART_VALUES.read_text())["pod"]
        assert f"{pod['runAsUser']}:{pod['runAsGroup']}" == [r for w, r in instructions(EVAL_DOCKERFILE)
                                                             if w == "USER"][-1]


# ------------------------------------------------------------------ downloads
def _manifest_entries(path: Path, name: str, workdir: str) -> dict[str, str]:
    """The checksum file ``name`` (relative to WORKDIR) as COPY'd from the repo: path -> sha256."""
    target = name if name.startswith("/") else f"{workdir.rstrip('/')}/{name}"
    for word, rest in instructions(path):
        if word == "COPY" and rest.split()[-1] == target:
            source = REPO / rest.split()[-2]
            return {p: h for h, p in (line.split(None, 1) for line in source.read_text().splitlines() if line)}
    raise AssertionError(f"{path.name}: the checksum file {target} is not COPY'd from the repository")


def download_problems(path: Path) -> tuple[int, list[str]]:
    """(downloads, problems): every curl -o FILE must be checked against a pinned SHA-256 before FILE is used.

    A check is ``echo "<digest>  FILE" | sha256sum -c`` (the digest a literal, an ARG default, or a shell
    variable set from ARGs in the same RUN) or ``grep -E '<re>' SUMS | sha256sum -c`` with SUMS a checksum
    file COPY'd from the repository into the WORKDIR. ADD of a URL, wget, piped curl and curl hidden inside
    another command are problems too.
    """
    args, text, problems, downloads = arg_defaults(path), path.read_text(), [], 0
    if re.search(r"^\s*ADD\s+(--\S+\s+)*\S*https?://", text, re.M | re.I):
        problems.append("ADD of a URL")
    if re.search(r"\bwget\s", text):
        problems.append("wget (use curl and a checksum)")
    workdir = "/"
    for word, rest in instructions(path):
        if word == "WORKDIR":
            workdir = rest
        if word != "RUN":
            continue
        assigned = re.findall(r'(\w+)="?\$\{(\w+)\}"?', rest)
        unverified: list[str] = []
        for cmd in commands(rest):
            if not cmd.startswith("curl ") and re.search(r"(^|[;|(`]|\$\()\s*curl\s", cmd):
                problems.append(f"curl must start its own && command: {cmd}")
            if cmd.startswith("curl "):
                target = re.search(r"\s-o\s+(\S+)", cmd)
                if "|" in cmd or "--proto '=https'" not in cmd or not target:
                    problems.append(f"curl must write a file with -o, over https only, unpiped: {cmd}")
                    continue
                unverified.append(target.group(1))
                downloads += 1
                continue
            inline = re.match(r'echo "(\S+)\s+(\S+)" \| sha256sum -c', cmd)
            listed = re.match(r"grep -E '([^']+)' (\S+) \| sha256sum -c", cmd)
            if inline:
                digest, file = inline.groups()
                var = VAR.fullmatch(digest)
                if var:
                    name = var.group(1) or var.group(2)
                    sources = [name] + [arg for shell, arg in assigned if shell == name]
                    digests = [args[n] for n in sources if n in args]
                    pinned_digest = bool(digests) and all(SHA256.match(d) for d in digests)
                else:
                    pinned_digest = bool(SHA256.match(digest))
                if not pinned_digest:
                    problems.append(f"{digest} is not a pinned SHA-256: {cmd}")
                elif file in unverified:
                    unverified.remove(file)
            elif listed:
                pattern, name = listed.groups()
                entries = _manifest_entries(path, name, workdir)
                covered = {p for p, h in entries.items() if re.search(pattern, f"  {p}") and SHA256.match(h)}
                unverified = [u for u in unverified if u not in covered]
            else:
                used = [u for u in unverified if u in cmd]
                if used:
                    problems.append(f"{used} used before its checksum was verified: {cmd}")
                    unverified = [u for u in unverified if u not in used]
        problems += [f"downloaded and never verified: {u}" for u in unverified]
    return downloads, problems


def test_every_download_is_checksum_verified_before_use():
    downloads = 0
    for path in DOCKERFILES:
        count, problems = download_problems(path)
        assert not problems, f"{path.name}: " + "\n".join(problems)
        downloads += count
    assert downloads >= 12, downloads  # JDK, Node, rustup, Swift, 2 evalplus, 6 MultiPL-E


def test_the_download_check_catches_unverified_downloads(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:24.04\n"
                   "ARG GOOD=" + "a" * 64 + "\nARG SHORT=abc\n"
                   "RUN curl -fsSL --proto '=https' -o /tmp/a.tgz https://x/a.tgz && tar -xzf /tmp/a.tgz "
                   "&& echo \"${GOOD}  /tmp/a.tgz\" | sha256sum -c -\n"
                   "RUN curl -fsSL --proto '=https' -o /tmp/b https://x/b && echo \"${SHORT}  /tmp/b\" | sha256sum -c -\n"
                   "RUN curl -fsSL https://x/c.sh | sh\n"
                   "RUN set -e; curl -fsSL --proto '=https' -o /tmp/d https://x/d\n"
                   "ADD https://x/e /e\n")
    count, problems = download_problems(bad)
    text = "\n".join(problems)
    assert "used before its checksum was verified" in text  # a.tgz extracted before the check
    assert "${SHORT} is not a pinned SHA-256" in text
    assert "downloaded and never verified: /tmp/b" in text
    assert "unpiped: curl -fsSL https://x/c.sh | sh" in text
    assert "curl must start its own && command" in text
    assert "ADD of a URL" in text


def test_bench_checksums_match_the_shared_data_and_the_conversion(tmp_path):
    """eval/bench.sha256 against ../shared; the Dockerfile's JSON-to-JSONL step rebuilds the JSONL byte for byte."""
    if not (BENCH / "multipl-e" / "SOURCE.md").is_file():
        pytest.skip(f"../shared is absent ({BENCH}): benchmark checksums not compared")
    entries = {p: h for h, p in (l.split(None, 1) for l in (REPO / "eval/bench.sha256").read_text().splitlines())}
    source_md = (BENCH / "multipl-e" / "SOURCE.md").read_text()
    langs = [p.split("-")[1] for p in entries if p.startswith("src/")]
    assert sorted(langs) == sorted(["cpp", "java", "js", "php", "rs", "swift"])
    (tmp_path / "src").mkdir()
    (tmp_path / "multiple").mkdir()
    assert set(TEXT_BENCH_FILES) <= set(entries), "a text benchmark file is not in eval/bench.sha256"
    for rel, digest in entries.items():
        folder, _, name = rel.partition("/")
        if rel in TEXT_BENCH_FILES:  # byte for byte ../shared's copy, whose SOURCE.md gives the digest where it has one
            assert hashlib.sha256(TEXT_BENCH_FILES[rel].read_bytes()).hexdigest() == digest, rel
            if folder != "gsm8k":  # GSM8K's SOURCE.md names the commit but gives no digest
                assert digest in TEXT_BENCH_SOURCES[rel][3].read_text(), f"{rel}: not SOURCE.md's digest"
        elif folder == "evalplus":
            assert hashlib.sha256((BENCH / "evalplus" / name).read_bytes()).hexdigest() == digest, rel
        elif folder == "multiple":
            assert hashlib.sha256((BENCH / "multipl-e" / name).read_bytes()).hexdigest() == digest, rel
        else:  # src/: upstream's JSON array: SOURCE.md says json.dumps(rows, indent=2) of the JSONL gives it back
            assert folder == "src", f"{rel}: eval/bench.sha256 lists a file the test does not compare"
            rows = [json.loads(line) for line in (BENCH / "multipl-e" / f"{name}l").read_text().splitlines()]
            rebuilt = json.dumps(rows, indent=2).encode()
            assert hashlib.sha256(rebuilt).hexdigest() == digest, rel
            assert f"prompts/{name} |" in source_md and digest in source_md, f"{rel}: not SOURCE.md's digest"
            (tmp_path / rel).write_bytes(rebuilt)
    data_run = next(commands(r) for r in runs(EVAL_DOCKERFILE) if "SHA256SUMS" in r)
    convert_at = next(i for i, c in enumerate(data_run) if c.startswith("python -c"))
    checked_after = {p for c in data_run[convert_at + 1:]
                     for m in [re.match(r"grep -E '([^']+)' SHA256SUMS \| sha256sum -c", c)] if m
                     for p in entries if re.search(m.group(1), f"  {p}")}
    assert {p for p in entries if p.startswith("multiple/")} <= checked_after, "converted JSONL not verified"
    convert = data_run[convert_at]
    code, targets = re.fullmatch(r"python -c '([^']+)' (.+)", convert).groups()
    subprocess.run([sys.executable, "-c", code, *targets.split()], cwd=tmp_path, check=True, timeout=60)
    for rel, digest in entries.items():
        if rel.startswith("multiple/"):
            assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest, f"conversion of {rel}"


def test_text_benchmarks_are_downloaded_at_the_commits_shared_took_them_from():
    """GSM8K, IFEval and MT-Bench come from raw.githubusercontent.com at SOURCE.md's commit, and are checked."""
    args = arg_defaults(EVAL_DOCKERFILE)
    data_run = next(commands(r) for r in runs(EVAL_DOCKERFILE) if "SHA256SUMS" in r)
    downloads = {m.group(1): expand(m.group(2), args) for c in data_run
                 for m in [re.match(r"curl .*-o (\S+)\s+\"(https://[^\"]+)\"$", c)] if m}
    checks = [m.group(1) for c in data_run for m in [re.match(r"grep -E '([^']+)' SHA256SUMS \| sha256sum -c", c)] if m]
    for rel, (arg, repo, upstream, source_md) in TEXT_BENCH_SOURCES.items():
        assert re.fullmatch(r"[0-9a-f]{40}", args.get(arg, "")), f"{arg} is not a pinned commit"
        assert downloads.get(rel) == f"https://raw.githubusercontent.com/{repo}/{args[arg]}/{upstream}", rel
        assert any(re.search(pattern, f"  {rel}") for pattern in checks), f"{rel} is never checked"
        if source_md.is_file():
            text = source_md.read_text()
            assert repo in text and args[arg] in text, f"{arg}: not the commit {source_md} names"
            assert upstream.rsplit("/", 1)[0] in text, f"{rel}: not the path {source_md} names"


# ------------------------------------------------------------------ toolchains, jar, variables
def executor_binaries() -> set[str]:
    """Every program name the MultiPL-E executors look up with find_tool(...)."""
    names = set()
    for module in EXECUTORS.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "find_tool" and node.args:
                if isinstance(node.args[0], ast.Constant):
                    names.add(node.args[0].value)
    return names


def test_eval_image_installs_and_checks_every_toolchain_the_executors_call():
    from ray_pipeline.evaluation.problems import MULTIPLE_LANGUAGES

    binaries = executor_binaries()
    assert {"g++", "javac", "java", "node", "php", "rustc", "swiftc"} <= binaries, binaries
    steps = instructions(EVAL_DOCKERFILE)
    check_at = next(i for i, (word, rest) in enumerate(steps) if word == "RUN" and "check_image.py" in rest)
    user = [rest for word, rest in steps[:check_at] if word == "USER"][-1]
    assert user.split(":")[0] == "65532", f"the toolchain checks run as {user}, not the runtime user"
    run_as_user = [c for word, rest in steps[check_at:] if word == "RUN" for c in commands(rest)]
    assert not [rest for word, rest in steps[check_at:] if word == "USER" and not rest.startswith("65532")]
    assert "python /opt/fusion/check_image.py --compile" in run_as_user
    for binary in sorted(binaries):
        assert any(re.match(rf"{re.escape(binary)} -{{1,2}}version$", c) for c in run_as_user), \
            f"eval/Dockerfile never runs {binary} as the runtime user"
    source = CHECK_IMAGE.read_text()
    tree = ast.parse(source)
    programs = next(ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and getattr(n.targets[0], "id", "") == "PROGRAMS")
    counts = next(ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", "") == "MULTIPLE_TASKS")
    assert set(programs) == set(counts) == set(MULTIPLE_LANGUAGES)
    copied = [rest.split() for word, rest in steps if word == "COPY"]
    assert ["eval/check_image.py", "/opt/fusion/check_image.py"] in copied


def test_javatuples_jar_is_where_the_java_executor_looks():
    from ray_pipeline.evaluation.executors import java

    env = env_values(EVAL_DOCKERFILE)
    assert java.JAVATUPLES_ENV in env, f"eval/Dockerfile does not set {java.JAVATUPLES_ENV}"
    assert env[java.JAVATUPLES_ENV] in java.JAVATUPLES_JARS
    # Debian/Ubuntu's libjavatuples-java installs exactly /usr/share/java/javatuples-1.2.jar
    assert env[java.JAVATUPLES_ENV] == "/usr/share/java/javatuples-1.2.jar"
    apt = next(r for r in runs(EVAL_DOCKERFILE) if "apt-get install" in r)
    assert "libjavatuples-java" in apt.split()


def test_eval_image_variables_are_the_ones_the_code_reads():
    env = env_values(EVAL_DOCKERFILE)
    code = {p: p.read_text() for p in (REPO / "ray_pipeline").rglob("*.py")}
    app_vars = [n for n in env if n.startswith("FUSION_") or n.endswith("_OVERRIDE_PATH")]
    assert {"HUMANEVAL_OVERRIDE_PATH", "MBPP_OVERRIDE_PATH", "FUSION_MULTIPLE_PATH",
            "FUSION_SANDBOX_ISOLATION", "FUSION_JAVATUPLES_JAR"} <= set(app_vars)
    from ray_pipeline.core.benchmark_data import NAMED_BENCHMARKS

    text_vars = {name: NAMED_BENCHMARKS[name].env for name in ("gsm8k", "ifeval", "mt_bench")}
    assert text_vars == {"gsm8k": "FUSION_GSM8K_PATH", "ifeval": "FUSION_IFEVAL_PATH",
                         "mt_bench": "FUSION_MT_BENCH_PATH"}
    assert set(text_vars.values()) <= set(app_vars)
    assert env["FUSION_SANDBOX_ISOLATION"] == "pod"
    from ray_pipeline.evaluation import sandbox

    assert "pod" in sandbox.ISOLATIONS, "the sandbox knows no pod isolation"
    for name in app_vars:
        assert any(f'"{name}"' in text for text in code.values()), f"{name} is set in eval/Dockerfile but no code reads it"
    if EVAL_CHART_VALUES.is_file():
        chart = yaml.safe_load(EVAL_CHART_VALUES.read_text())
        assert chart["data"]["multiplePath"] == env["FUSION_MULTIPLE_PATH"], \
            "helm/fusion-eval data.multiplePath is not the image's FUSION_MULTIPLE_PATH"
    assert env["HOME"] == "/home/fusion"
    # the variables point at the verified data: files listed in eval/bench.sha256, where it is copied
    copy = next(rest.split() for word, rest in instructions(EVAL_DOCKERFILE)
                if word == "COPY" and rest.split()[-2] == "eval/bench.sha256")
    data_dir = str(Path(copy[-1]).parent)
    listed = {f"{data_dir}/{line.split(None, 1)[1]}" for line in (REPO / "eval/bench.sha256").read_text().splitlines()}
    assert env["HUMANEVAL_OVERRIDE_PATH"] in listed and env["MBPP_OVERRIDE_PATH"] in listed
    assert {f"{env['FUSION_MULTIPLE_PATH']}/humaneval-{lang}-reworded.jsonl"
            for lang in ("java", "js", "cpp", "php", "swift", "rs")} <= listed
    assert env["FUSION_GSM8K_PATH"] == f"{data_dir}/gsm8k/test.jsonl" in listed
    assert env["FUSION_IFEVAL_PATH"] == f"{data_dir}/ifeval/input_data.jsonl" in listed
    assert env["FUSION_MT_BENCH_PATH"] == f"{data_dir}/mt_bench/question.jsonl" in listed
    # MT-Bench's GPT-4 reference answers lie where its loader looks beside the question file (FastChat's layout)
    from ray_pipeline.evaluation import mt_bench

    assert f"{Path(env['FUSION_MT_BENCH_PATH']).parent}/{mt_bench.REFERENCE_FILES[0]}" in listed


# ------------------------------------------------------------------ eval/check_image.py
def _check_image(args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HUMANEVAL_OVERRIDE_PATH", "MBPP_OVERRIDE_PATH",
                                                            "FUSION_MULTIPLE_PATH", "FUSION_JAVATUPLES_JAR",
                                                            "FUSION_GSM8K_PATH", "FUSION_IFEVAL_PATH",
                                                            "FUSION_MT_BENCH_PATH")}
    return subprocess.run([sys.executable, str(CHECK_IMAGE), *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=240)


def test_check_image_passes_with_this_machines_toolchains_and_the_shared_data():
    from ray_pipeline.evaluation.executors.languages import multiple_executor
    from ray_pipeline.evaluation.problems import MULTIPLE_LANGUAGES

    present = [lang for lang in MULTIPLE_LANGUAGES if multiple_executor(lang, None).unavailable_reason() is None]
    if not present:
        pytest.skip("no MultiPL-E toolchain on this machine")
    env, data = {}, ["--no-data"]
    if (BENCH / "multipl-e" / "SOURCE.md").is_file():
        env = {"HUMANEVAL_OVERRIDE_PATH": str(BENCH / "evalplus/HumanEvalPlus-v0.1.10.jsonl.gz"),
               "MBPP_OVERRIDE_PATH": str(BENCH / "evalplus/MbppPlus-v0.2.0.jsonl.gz"),
               "FUSION_MULTIPLE_PATH": str(BENCH / "multipl-e"),
               "FUSION_GSM8K_PATH": str(TEXT_BENCH_FILES["gsm8k/test.jsonl"]),
               "FUSION_IFEVAL_PATH": str(TEXT_BENCH_FILES["ifeval/input_data.jsonl"]),
               "FUSION_MT_BENCH_PATH": str(TEXT_BENCH_FILES["mt_bench/question.jsonl"])}
        data = []
    done = _check_image(["--compile", "--languages", ",".join(present), *data], env)
    assert done.returncode == 0, done.stdout + done.stderr
    for lang in present:
        assert f"ok   {lang}: a passing program exits 0, a failing assertion does not" in done.stdout
    if not data:
        assert "ok   humaneval: 164 tasks" in done.stdout and "ok   mbpp: 378 tasks" in done.stdout
        assert "ok   gsm8k: 1319 problems" in done.stdout and "ok   ifeval: 541 problems" in done.stdout
        assert "ok   mt_bench: 80 problems, 30 with a reference answer" in done.stdout


def test_check_image_names_every_missing_toolchain_and_data_file(tmp_path):
    done = _check_image(["--languages", "js,cpp,php"], {"PATH": str(tmp_path), "HOME": str(tmp_path),
                                                       "FUSION_MULTIPLE_PATH": str(tmp_path)})
    assert done.returncode == 1
    for line in ("js: node not found", "cpp: g++ not found", "php: php not found",
                 "humaneval: $HUMANEVAL_OVERRIDE_PATH is not set", "mbpp: $MBPP_OVERRIDE_PATH is not set",
                 "gsm8k: $FUSION_GSM8K_PATH is not set", "ifeval: $FUSION_IFEVAL_PATH is not set",
                 "mt_bench: $FUSION_MT_BENCH_PATH is not set",
                 f"MultiPL-E data file not found: {tmp_path}/humaneval-js-reworded.jsonl"):
        assert line in done.stderr, done.stderr


def test_check_image_catches_a_toolchain_that_does_not_fail_assertions(tmp_path):
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    done = _check_image(["--compile", "--languages", "js", "--no-data"], {"PATH": str(tmp_path)})
    assert done.returncode == 1
    assert "js: the program whose assertion fails exited 0" in done.stderr, done.stderr


# ------------------------------------------------------------------ .dockerignore
def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides (! re-includes)."""
    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + "$")

    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        rx = regex(raw[1:].strip("/") if negate else raw.strip("/"))
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_images_copy_and_drops_the_rest():
    patterns = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.strip().startswith("#")]
    for path in (".venv/bin/python", ".venv-checkov/bin/checkov", "runs/quickstart/manifest.json", ".git/HEAD",
                 "benchmarks/results/x.json", "ray_pipeline/__pycache__/cli.cpython-311.pyc", ".env", "prod.env",
                 "secrets/openai", "tests/deploy/test_images.py", "ray_pipeline.egg-info/PKG-INFO", ".pytest_cache/v"):
        assert dockerignore_excludes(patterns, path), f".dockerignore lets {path} into the build context"
    sources = []
    for dockerfile in DOCKERFILES:
        for word, rest in instructions(dockerfile):
            if word == "COPY" and "--from" not in rest:
                sources += [s for s in rest.split()[:-1] if not s.startswith("--")]
    assert sources
    for source in sources:
        target = REPO / source
        assert target.exists(), f"COPY {source}: not in the repository"
        files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()
                                                  and "__pycache__" not in p.parts]
        for file in files:
            rel = file.relative_to(REPO).as_posix()
            assert not dockerignore_excludes(patterns, rel), f".dockerignore drops {rel}, which an image copies"
