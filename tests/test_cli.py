import json

import pytest

from tests.conftest import fusion_cli, openai_teacher, write_job


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["validate", "--help"]])
def test_help_on_every_command(args):
    proc = fusion_cli(*args, timeout=60)
    assert proc.returncode == 0 and "usage: fusion" in proc.stdout


def test_version_and_missing_command():
    assert fusion_cli("--version", timeout=60).stdout.startswith("fusion ")
    assert fusion_cli(timeout=60).returncode == 2


def test_validate_reads_the_seeds_and_starts_nothing(tmp_path, code_alpaca):
    job = write_job(tmp_path, teacher=openai_teacher("http://127.0.0.1:9/v1"),
                    seeds=[{"path": str(code_alpaca), "limit": 40}])
    proc = fusion_cli("validate", str(job), timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["seeds"]["seeds"] == 40
    assert sum(summary["seeds"]["languages"].values()) == 40
    assert not (tmp_path / "run").exists()
