"""The job registry (``ray_pipeline.jobs``) and the manifest header every job writes (``core.outputs``)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from ray_pipeline.core.config import JobCommon
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.core.outputs import config_hash, manifest_header
from ray_pipeline.jobs import JOBS, parse_job

KIND_FUNCTIONS = ("run", "validate", "summary", "references", "partial_validation")


def test_every_job_kind_is_registered_with_its_schema_and_functions():
    for kind, entry in JOBS.items():
        schema = entry.schema_class()
        assert issubclass(schema, JobCommon) and typing.get_args(schema.model_fields["kind"].annotation) == (kind,)
        assert entry.module.rsplit(".", 1)[0] == entry.schema.split(":")[0].rsplit(".", 1)[0]  # one package per kind
        module = importlib.import_module(entry.module)
        assert all(callable(getattr(module, f, None)) for f in KIND_FUNCTIONS), entry.module
    assert [k for k, j in JOBS.items() if j.sharded] == ["eval"]


def test_a_job_file_is_read_by_its_kinds_schema():
    with pytest.raises(ConfigError, match=r"^job.yaml: kind: 'tacy' is not a job kind \(one of: instruction_fusion, "
                                          r"tacie, sft, eval\)$"):
        parse_job({"kind": "tacy", "name": "x"}, "job.yaml")
    with pytest.raises(ConfigError, match=r"^job.yaml: kind: missing"):
        parse_job({"name": "x"}, "job.yaml")
    job = parse_job({"kind": "eval", "name": "e", "models": ["embedded"], "benchmarks": [{"name": "humaneval"}]})
    assert type(job).__module__ == "ray_pipeline.evaluation.config"


def test_no_job_schema_is_left_in_core():
    """core.config holds what the kinds share; a kind's own schema lives in its package."""
    from ray_pipeline.core import config

    kinds = [name for name, obj in vars(config).items()
             if isinstance(obj, type) and issubclass(obj, JobCommon)
             and typing.get_args(obj.model_fields["kind"].annotation)]  # kind: Literal["..."]
    assert kinds == []


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
