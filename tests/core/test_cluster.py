"""Sharding: a two-node Ray cluster on one machine processes rows on both nodes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from ray_pipeline.jobs import load_job
from ray_pipeline.methods.fusion.pipeline import run_instruction_fusion
from tests.conftest import openai_teacher, write_job
from tests.fault_server import FaultInjectingOpenAIServer


@pytest.fixture
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    yield {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.ray
def test_rows_processed_on_both_nodes(tmp_path, two_nodes, code_alpaca):
    assert len(two_nodes) == 2
    with FaultInjectingOpenAIServer(latency_s=0.2) as srv:
        job = load_job(write_job(
            tmp_path,
            teacher=openai_teacher(srv.base_url, concurrency=4),
            fusion={"num_instructions": 16, "max_attempts": 40},
            # One CPU per teacher actor: one actor fits on each node.
            ray={"num_actors": 2, "batch_size": 4, "num_cpus_per_actor": 1},
        ))
        manifest = run_instruction_fusion(job)
    assert manifest["complete"]
    rows = pq.read_table(tmp_path / "run" / "test.parquet").to_pylist()
    fusion_nodes = {r["fusion_node"] for r in rows}
    response_nodes = {r["response_node"] for r in rows if r["selected"]}
    assert fusion_nodes == two_nodes
    assert response_nodes == two_nodes
    assert "2 nodes" in manifest["cluster"]


@pytest.mark.ray
def test_no_address_starts_a_local_ray_even_when_a_dead_cluster_is_on_record():
    """Ray's own default joins the cluster in <tmp>/ray/ray_current_cluster and waits for it forever."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from tests.paths import REPO

    temp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (temp / "ray").mkdir()
        (temp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")  # a cluster long gone
        env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
        env["RAY_TMPDIR"] = str(temp)
        code = "from ray_pipeline.core.executor import connect; print(connect())"
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "local (1 node)"
    finally:
        shutil.rmtree(temp, ignore_errors=True)
