"""Sharding: a two-node Ray cluster on one machine processes rows on both nodes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from ray_pipeline.core.config import load_job
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
    assert "2 nodes" in manifest["ray"]
