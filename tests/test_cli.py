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
    # M = 4: ceil(4 / 0.8) fusions and 4 responses expected; at most the budget, 16, and 4
    assert summary["estimate"]["calls"] == {"expected": 9, "at_most": 20}
    assert "estimate: 9 teacher calls (at most 20), " in proc.stderr
    assert sum(summary["seeds"]["languages"].values()) == 40
    assert not (tmp_path / "run").exists()


def test_main_in_process_leaves_the_callers_sigterm_handler_in_place(tmp_path):
    """main() turns SIGTERM into SystemExit while it runs, then gives the caller's handler back (a process that
    forks later, such as evalplus's checker in a test, would otherwise raise where it should be terminated)."""
    import signal

    from ray_pipeline import cli

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert cli.main(["validate", str(tmp_path / "missing.yaml")]) == 2
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
