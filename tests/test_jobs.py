"""The job registry (``ray_pipeline.jobs``) and the manifest header every job writes (``core.outputs``)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import typing
from pathlib import Path

from ray_pipeline.core import config
from ray_pipeline.core.outputs import config_hash, manifest_header
from ray_pipeline.jobs import JOBS


def test_every_job_kind_is_registered_with_run_validate_and_summary():
    union = typing.get_args(typing.get_args(config.Job)[0])
    kinds = {typing.get_args(m.model_fields["kind"].annotation)[0] for m in union}
    assert set(JOBS) == kinds
    for entry in JOBS.values():
        module = importlib.import_module(entry.module)
        assert all(callable(getattr(module, f, None)) for f in ("run", "validate", "summary")), entry.module
    assert [k for k, j in JOBS.items() if j.sharded] == ["eval"]


def test_cli_only_dispatches_and_imports_no_job():
    source = Path(importlib.import_module("ray_pipeline.cli").__file__).read_text()
    assert "job.kind ==" not in source and "def _report" not in source
    code = ("import sys, ray_pipeline.cli, ray_pipeline.jobs; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'vllm') "
            "or m.startswith(('ray_pipeline.methods', 'ray_pipeline.training', 'ray_pipeline.evaluation'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_manifest_header_is_the_same_keys_in_the_same_order():
    cfg = {"kind": "eval", "name": "ev", "output_dir": "/x", "shard": "0/2"}
    header = manifest_header(cfg, "local Ray: 1 node", 1.5, ("pyarrow",))
    assert list(header) == ["job", "kind", "config_hash", "config", "versions", "cluster", "wall_time_s"]
    assert header["job"] == "ev" and header["kind"] == "eval" and header["config_hash"] == config_hash(cfg)
    assert set(header["versions"]) == {"python", "ray-pipeline", "pyarrow"}
    assert header["cluster"] == "local Ray: 1 node"
