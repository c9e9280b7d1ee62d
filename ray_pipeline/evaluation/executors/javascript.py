"""MultiPL-E JavaScript: ``node <file>.js``, 5 s, no build step.

Status as MultiPL-E (EVAL.md section 3): exit 0 is OK; otherwise the output
decides: ``ERR_ASSERTION`` → AssertionError, ``SyntaxError``, ``ReferenceError``,
else Exception. V8 reserves large virtual ranges, so there is no address-space
limit; the heap is capped with ``--max-old-space-size`` (the executor's ``memory_mb``).
"""

from __future__ import annotations

import re
from typing import Mapping

from ray_pipeline.evaluation.executors.multiple import MultiplEExecutor, Toolchain, find_tool, install_prefix
from ray_pipeline.evaluation.sandbox import Outcome


class JavaScriptExecutor(MultiplEExecutor):
    language = "js"
    EXTENSION = ".js"
    BUILD_TIMEOUT_S = None
    RUN_TIMEOUT_S = 5.0
    MEMORY_CAP = "heap"
    ERROR_LINE = re.compile(r"^\w*(Error|Exception)\b")

    def find_toolchain(self) -> Toolchain:
        node = find_tool("node")
        return Toolchain(tools={"node": str(node)}, read_only=install_prefix(node))

    def run_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return [tools["node"], f"--max-old-space-size={self.memory_mb}", source]

    def classify_run(self, outcome: Outcome) -> str:
        if outcome.timed_out:
            return "Timeout"
        if outcome.exit_code == 0:
            return "OK"
        output = outcome.stdout + outcome.stderr
        for marker, status in (("ERR_ASSERTION", "AssertionError"), ("SyntaxError", "SyntaxError"),
                               ("ReferenceError", "ReferenceError")):
            if marker in output:
                return status
        return "Exception"
