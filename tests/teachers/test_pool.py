"""The job's teacher-stage actors and the stream over them (teachers/pool.py), against the fault server."""

from __future__ import annotations

import time

import pytest

from ray_pipeline.core.config import OpenAITeacherConfig, RayConfig
from ray_pipeline.teachers.base import ChatRequest, Sampling
from ray_pipeline.teachers.calls import TeacherCalls
from ray_pipeline.teachers.pool import CallStream, TeacherPool
from ray_pipeline.teachers.rows import Answer, request_row
from tests.fault_server import FaultInjectingOpenAIServer

pytestmark = pytest.mark.ray


def _rows(n: int, tag: str = "") -> list[dict]:
    sampling = Sampling(temperature=0.0, max_tokens=16, seed=1)
    return [{"i": i, **request_row(ChatRequest.make([{"role": "user", "content": f"say {tag}{i}"}], sampling), "m", {})}
            for i in range(n)]


def _config(srv: FaultInjectingOpenAIServer, concurrency: int) -> OpenAITeacherConfig:
    return OpenAITeacherConfig(model="m", base_url=srv.base_url, api_key="EMPTY", concurrency=concurrency,
                               max_retries=0)


def test_a_stream_keeps_at_most_concurrency_times_actors_in_flight(tmp_path, local_ray):
    with FaultInjectingOpenAIServer(latency_s=0.05) as srv:
        pool = TeacherPool(_config(srv, 4), RayConfig(num_actors=2), str(tmp_path))
        try:
            assert pool.capacity == 8 and pool.chunk == 1  # an eighth of 4, at least one
            stream = CallStream(pool)
            todo, got, most = _rows(40), {}, 0
            while todo or stream.busy:
                while todo and stream.room > 0:
                    stream.put(todo.pop(0), "t")
                most = max(most, stream.in_flight)
                for prefix, row in stream.results():
                    assert prefix == "t"
                    got[row["i"]] = Answer.read(row, "t")
            assert sorted(got) == list(range(40)) and all(a.ok and a.text for a in got.values())
            assert most == 8 and srv.max_in_flight <= 8
            assert srv.max_in_flight > 4  # both actors answered at once
            assert len({a.node for a in got.values()}) == 1  # one node here; tests/core/test_cluster.py has two
        finally:
            pool.close()


def test_a_chunk_whose_actor_died_is_sent_again(tmp_path, local_ray):
    import ray

    with FaultInjectingOpenAIServer(latency_s=0.5) as srv:
        pool = TeacherPool(_config(srv, 4), RayConfig(num_actors=1), str(tmp_path))
        try:
            stream = CallStream(pool)
            for row in _rows(4):
                stream.put(row, "t")
            stream.flush()
            time.sleep(0.2)  # the calls are at the server
            ray.kill(pool.actors[0], no_restart=False)  # as a lost node or an OOM kill would: Ray restarts it
            got = {}
            while stream.busy:
                for _, row in stream.results():
                    got[row["i"]] = Answer.read(row, "t")
            assert sorted(got) == [0, 1, 2, 3] and all(a.ok for a in got.values())
            assert srv.total_calls == 8  # each call made again on the restarted actor
        finally:
            pool.close()


def test_release_ends_the_actors_and_the_next_call_starts_new_ones(tmp_path, local_ray):
    import ray

    with FaultInjectingOpenAIServer() as srv:
        with TeacherCalls(_config(srv, 2), RayConfig(), tmp_path) as calls:
            assert len(calls.run(_rows(3), "t")) == 3
            first = calls._pool.actors[0]
            calls.release()
            assert calls._pool is None
            deadline = time.monotonic() + 30  # ray.kill is asynchronous: the actor ends soon after, not at once
            with pytest.raises(ray.exceptions.RayActorError):
                while time.monotonic() < deadline:
                    ray.get(first.ready.remote(), timeout=30)
                    time.sleep(0.1)
            answered = calls.run(_rows(3, "again "), "t")
            assert [r["i"] for r in answered] == [0, 1, 2] and all(Answer.read(r, "t").ok for r in answered)
            assert calls.tally.calls == 6
        assert calls._pool is None or calls._pool.actors == []
