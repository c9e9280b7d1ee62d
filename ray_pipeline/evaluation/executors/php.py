"""MultiPL-E PHP: ``php <file>.php``, 15 s, no build step.

Status exactly as MultiPL-E (EVAL.md section 3): ``PHP Parse error`` in stdout →
SyntaxError; any other non-zero exit, a timeout included → Exception; else OK.
With the php.ini of Debian and Ubuntu (``display_errors = Off``, errors logged
to stderr) a parse error never reaches stdout, so it is an Exception there too.
"""

from __future__ import annotations

from typing import Mapping

from ray_pipeline.evaluation.executors.multiple import MultiplEExecutor, Toolchain, find_tool, install_prefix
from ray_pipeline.evaluation.sandbox import Outcome


class PhpExecutor(MultiplEExecutor):
    language = "php"
    EXTENSION = ".php"
    BUILD_TIMEOUT_S = None

    def find_toolchain(self) -> Toolchain:
        php = find_tool("php")
        return Toolchain(tools={"php": str(php)}, read_only=install_prefix(php))

    def run_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return [tools["php"], source]

    def classify_run(self, outcome: Outcome) -> str:
        if "PHP Parse error" in outcome.stdout:
            return "SyntaxError"
        return "OK" if not outcome.timed_out and outcome.exit_code == 0 else "Exception"
