import os

from ray_pipeline.teachers.cache import CacheWriter, load_cache
from ray_pipeline.teachers.base import ChatRequest, ChatResult, Sampling


def test_cache_key_depends_on_model_messages_sampling_and_seed():
    msgs = [{"role": "user", "content": "hi"}]
    base = ChatRequest.make(msgs, Sampling(seed=1)).cache_key("m")
    assert base == ChatRequest.make(msgs, Sampling(seed=1)).cache_key("m")
    assert base != ChatRequest.make(msgs, Sampling(seed=2)).cache_key("m")
    assert base != ChatRequest.make(msgs, Sampling(seed=1, temperature=0.1)).cache_key("m")
    assert base != ChatRequest.make(msgs, Sampling(seed=1)).cache_key("other")
    assert base != ChatRequest.make([{"role": "user", "content": "hi!"}], Sampling(seed=1)).cache_key("m")


def test_roundtrip_skips_failures_and_torn_lines(tmp_path):
    w1, w2 = CacheWriter(tmp_path), CacheWriter(tmp_path)
    w1.put("a", ChatResult(text="A", prompt_tokens=3, completion_tokens=4))
    w2.put("b", ChatResult(text="B"))
    w1.put("c", ChatResult(text=None, error="api_error: HTTP 500 after 3 attempts"))
    w1.close(), w2.close()
    assert w1.path != w2.path
    with open(w1.path, "ab") as fh:  # a process killed mid-line
        fh.write(b'{"key": "d", "result": {"te')
    got = load_cache(tmp_path)
    assert set(got) == {"a", "b"}
    assert got["a"].text == "A" and got["a"].completion_tokens == 4 and got["a"].cached
    assert load_cache(tmp_path / "missing") == {}


def test_writes_survive_without_close(tmp_path):
    w = CacheWriter(tmp_path)
    w.put("k", ChatResult(text="x"))
    # No close(): what a SIGKILL leaves behind is what write() already handed the kernel.
    assert load_cache(tmp_path)["k"].text == "x"
    os.close(w._fd)
    w._fd = None


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    import pytest

    from ray_pipeline.core.outputs import atomic_path, atomic_write_text

    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
