"""Shared by the chart and image tests: the KubeRay CRDs and checkov (which lives in its own virtualenv)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT.parent / "shared" / "k8s" / "crds"
HELM_DIR = ROOT / "helm"


def checkov_bin() -> str:
    """checkov from $CHECKOV or the project's .venv-checkov (make setup installs it); fail loudly when missing."""
    path = os.environ.get("CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    if not Path(path).exists():
        raise AssertionError(f"checkov not found at {path}: run `make setup` (it installs .venv-checkov)")
    return path


def run_checkov(paths: Iterable[str | Path], framework: str, extra: Iterable[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """Scan files or directories; {'failed': [...], 'skipped': [...], 'passed_count': n}. A checkov crash fails."""
    argv = [checkov_bin(), "--framework", framework, "--output", "json", "--compact",
            "--skip-download", "--soft-fail"]
    for p in paths:
        argv += ["--directory" if Path(p).is_dir() else "--file", str(p)]
    argv += list(extra)
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout.strip()
    if not out.startswith(("{", "[")):
        raise AssertionError(f"checkov gave no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")
    reports = json.loads(out)
    reports = reports if isinstance(reports, list) else [reports]
    failed, skipped, passed = [], [], 0
    for report in reports:
        results = report.get("results", {})
        failed += results.get("failed_checks", [])
        skipped += results.get("skipped_checks", [])
        passed += report.get("summary", {}).get("passed", 0)
    return {"failed": failed, "skipped": skipped, "passed_count": passed}


def check_ids(checks: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{c.get('check_id')} {c.get('resource')} ({c.get('file_path')})" for c in checks)
