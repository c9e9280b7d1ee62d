"""``kind: vllm``: the job's engines start once (``VLLMBackend.session``) and every teacher stage shares them."""

from __future__ import annotations

import pytest

from ray_pipeline.core import model_files
from ray_pipeline.core.config import RayConfig, SamplingConfig, VLLMTeacherConfig
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.prompts import load_template
from ray_pipeline.teachers.calls import RequestBuilder, TeacherCalls
from ray_pipeline.teachers.factory import backend_for, teacher_session


def _config(**over) -> VLLMTeacherConfig:
    return VLLMTeacherConfig(**{
        "model": str(model_files.ensure_embedded_model()), "served_model_name": "gemma3-270m-local",
        "chat_template": str(model_files.chat_template_path()), "max_model_len": 512, "num_cpus": 1,
        "engine_kwargs": {"enforce_eager": True, "kv_cache_memory_bytes": 512 * 1024**2}, **over})


def _engine_actors() -> dict[str, str]:
    """{actor id: state} of every engine actor this Ray has seen (from the GCS: no dashboard needed)."""
    import ray

    return {k: v["State"] for k, v in ray._private.state.actors().items() if v.get("ActorClassName") == "EngineActor"}


@pytest.mark.vllm
def test_two_stages_share_one_engine_that_ends_with_the_job(local_ray, tmp_path):
    pytest.importorskip("vllm")
    cfg = _config()
    builder = RequestBuilder(load_template("if_response@v1"), SamplingConfig(temperature=0.0, max_tokens=8),
                             backend_for(cfg).model_name(), {})
    before = set(_engine_actors())
    with TeacherCalls.lazy(cfg, RayConfig(num_actors=2, batch_size=1), tmp_path / "cache", tmp_path) as calls:
        first = calls.run([builder.request(1, instruction="Say hello.")], "a")
        second = calls.run([builder.request(2, instruction="Count to three."),
                            builder.request(3, instruction="Name a colour.")], "b")
        engines = set(_engine_actors()) - before
        assert len(engines) == 1  # two stages (three stage actors), one engine: loaded once for the job
    for row, prefix in [(first[0], "a"), (second[0], "b"), (second[1], "b")]:
        assert not row[f"{prefix}_error"] and row[f"{prefix}_text"] and row[f"{prefix}_completion_tokens"] > 0
    assert calls.tally.calls == 3
    states = _engine_actors()
    assert all(states[e] == "DEAD" for e in engines)  # the job's end stops its engine


@pytest.mark.vllm
def test_an_engine_that_cannot_start_is_one_line(local_ray, tmp_path):
    pytest.importorskip("vllm")
    cfg = _config(max_model_len=10_000_000)  # beyond the model's context: the engine refuses to start
    with pytest.raises(TeacherError) as caught:
        with teacher_session(cfg, tmp_path):
            pass
    message = str(caught.value)
    assert message.startswith("vllm teacher") and "\n" not in message
