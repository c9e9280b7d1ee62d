"""MultiPL-E C++: ``g++ <file>.cpp -o <binary> -std=c++17``, then the binary; 15 s each.

No ``-O`` and no ``-DNDEBUG``, so the tests' C ``assert`` stays live (a failed one
aborts). A failed or timed-out build is a SyntaxError (EVAL.md section 3).
"""

from __future__ import annotations

from typing import Mapping

from ray_pipeline.evaluation.executors.multiple import MultiplEExecutor, Toolchain, find_tool, install_prefix


class CppExecutor(MultiplEExecutor):
    language = "cpp"
    EXTENSION = ".cpp"

    def find_toolchain(self) -> Toolchain:
        gxx = find_tool("g++")
        return Toolchain(tools={"g++": str(gxx)}, read_only=install_prefix(gxx))

    def build_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return [tools["g++"], source, "-o", binary, "-std=c++17"]

    def run_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return ["./" + binary]
