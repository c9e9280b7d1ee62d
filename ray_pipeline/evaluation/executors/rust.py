"""MultiPL-E Rust: ``rustc <file>.rs -o <binary>`` (15 s), then the binary (5 s).

No ``--edition`` (rustc's default, 2015) and no ``-O``, as MultiPL-E. A build
that times out is a Timeout, a failed one a SyntaxError (EVAL.md section 3).

rustup's ``rustc`` is a proxy that needs rustup's home; the real compiler is
``<sysroot>/bin/rustc``, which runs in the sandbox with its sysroot bound read-only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping

from ray_pipeline.evaluation.executors.multiple import (MultiplEExecutor, Toolchain, ToolMissing, find_tool,
                                                        outside_system_dirs)

SYSROOT_TIMEOUT_S = 60


class RustExecutor(MultiplEExecutor):
    language = "rs"
    EXTENSION = ".rs"
    RUN_TIMEOUT_S = 5.0
    BUILD_TIMEOUT_STATUS = "Timeout"

    def find_toolchain(self) -> Toolchain:
        rustc = find_tool("rustc", Path.home() / ".cargo/bin/rustc")
        try:
            done = subprocess.run([str(rustc), "--print", "sysroot"], capture_output=True, text=True,
                                  timeout=SYSROOT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolMissing(f"rustc at {rustc} cannot report its sysroot: {exc}") from exc
        lines = (done.stderr or done.stdout).strip().splitlines()
        if done.returncode != 0:
            raise ToolMissing(f"rustc at {rustc} cannot report its sysroot: {lines[-1] if lines else done.returncode}")
        sysroot = Path(done.stdout.strip())
        compiler = sysroot / "bin" / "rustc"
        if not compiler.is_file():
            raise ToolMissing(f"rustc not found in the sysroot {sysroot} reported by {rustc}")
        read_only = (str(sysroot),) if outside_system_dirs(sysroot) else ()
        return Toolchain(tools={"rustc": str(compiler)}, read_only=read_only)

    def build_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return [tools["rustc"], source, "-o", binary]

    def run_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return ["./" + binary]
