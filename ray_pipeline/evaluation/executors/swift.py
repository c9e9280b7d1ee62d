"""MultiPL-E Swift: ``swiftc <file>.swift -o <binary>`` (45 s), then the binary (5 s).

No ``-O``: Swift drops ``assert`` in optimised builds. A build that times out is
a Timeout, a failed one a SyntaxError (EVAL.md section 3). Without ``swiftc``
the executor is unavailable and Swift problems are reported as skipped.

Not yet run on a machine with Swift: the compiler gets no address-space limit
(its driver, frontend and linker were not measured); the program gets the default.
"""

from __future__ import annotations

from typing import Mapping

from ray_pipeline.evaluation.executors.multiple import (DEFAULT_NPROC, MultiplEExecutor, Toolchain, find_tool,
                                                        install_prefix)
from ray_pipeline.evaluation.sandbox import Limits


class SwiftExecutor(MultiplEExecutor):
    language = "swift"
    EXTENSION = ".swift"
    BUILD_TIMEOUT_S = 45.0
    RUN_TIMEOUT_S = 5.0
    BUILD_TIMEOUT_STATUS = "Timeout"
    BUILD_LIMITS = Limits(memory_mb=None, nproc=DEFAULT_NPROC)

    def find_toolchain(self) -> Toolchain:
        swiftc = find_tool("swiftc")
        return Toolchain(tools={"swiftc": str(swiftc)}, read_only=install_prefix(swiftc))

    def build_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return [tools["swiftc"], source, "-o", binary]

    def run_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return ["./" + binary]
