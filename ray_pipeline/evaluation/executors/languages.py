"""The MultiPL-E executor of each language: ``multiple_executor`` picks the subclass for a language name.

The language modules import the shared ``multiple`` base; this module imports them, so imports run one way.
"""

from __future__ import annotations

from typing import Any

from ray_pipeline.evaluation.executors.cpp import CppExecutor
from ray_pipeline.evaluation.executors.java import JavaExecutor
from ray_pipeline.evaluation.executors.javascript import JavaScriptExecutor
from ray_pipeline.evaluation.executors.multiple import MultiplEExecutor
from ray_pipeline.evaluation.executors.php import PhpExecutor
from ray_pipeline.evaluation.executors.rust import RustExecutor
from ray_pipeline.evaluation.executors.swift import SwiftExecutor
from ray_pipeline.evaluation.multiple_data import multiple_language
from ray_pipeline.evaluation.sandbox import Sandbox

#: MultiPL-E's language code -> its executor
EXECUTORS: dict[str, type[MultiplEExecutor]] = {
    "java": JavaExecutor, "js": JavaScriptExecutor, "cpp": CppExecutor,
    "php": PhpExecutor, "rs": RustExecutor, "swift": SwiftExecutor,
}


def multiple_executor(language: str, sandbox: Sandbox, **options: Any) -> MultiplEExecutor:
    """The executor of a MultiPL-E language (``java``, ``js``, ``cpp``, ``php``, ``swift``, ``rs`` or an alias).

    ``options`` go to its constructor: ``build_timeout_s``, ``run_timeout_s``,
    ``memory_mb``, ``nproc``, ``output_mb``, and for Java ``javatuples_jar``.
    """
    return EXECUTORS[multiple_language(language)](sandbox, **options)
