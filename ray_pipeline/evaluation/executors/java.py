"""MultiPL-E Java: ``javac -encoding UTF8``, then ``java -ea`` with the javatuples jar.

As MultiPL-E (EVAL.md section 3): ``CLASSPATH`` names the jar for both steps and
the run's ``-cp`` holds the classes and the jar; 15 s per step; a failed or
timed-out build is a SyntaxError. ``-ea`` keeps the tests' asserts live.

The JVM reserves large virtual ranges, so neither step has an address-space
limit; the heap is capped by flags instead (the program's ``-Xmx`` is the
executor's ``memory_mb``), and the serial GC keeps the thread
count (which RLIMIT_NPROC counts) small. javac's own JVM also stops at the
C1 JIT, which only makes it start faster. The program keeps the default JIT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ray_pipeline.evaluation.executors.multiple import (DEFAULT_NPROC, MultiplEExecutor, Toolchain, ToolMissing,
                                                        find_tool, install_prefix, outside_system_dirs)
from ray_pipeline.evaluation.sandbox import Limits, Sandbox

#: where the jar is looked for: Debian's libjavatuples-java, then MultiPL-E's image
JAVATUPLES_JARS = ("/usr/share/java/javatuples-1.2.jar", "/usr/multiple/javatuples-1.2.jar")
JAVATUPLES_ENV = "FUSION_JAVATUPLES_JAR"
#: options of javac's own JVM (the -J prefix); they change nothing in the class files
JAVAC_JVM_OPTIONS = ("-J-Xmx512m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", "-J-XX:-UsePerfData")
#: options of the program's JVM (and -Xmx, the executor's memory_mb)
JAVA_JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:-UsePerfData")
CLASSES_DIR = "classes"


class JavaExecutor(MultiplEExecutor):
    language = "java"
    EXTENSION = ".java"
    BUILD_LIMITS = Limits(memory_mb=None, nproc=DEFAULT_NPROC)
    MEMORY_CAP = "heap"

    def __init__(self, sandbox: Sandbox, build_timeout_s: float | None = None, run_timeout_s: float | None = None,
                 memory_mb: int | None = None, nproc: int | None = None, output_mb: int | None = None,
                 javatuples_jar: str | Path | None = None):
        super().__init__(sandbox, build_timeout_s, run_timeout_s, memory_mb, nproc, output_mb)
        self.javatuples_jar = javatuples_jar

    def _jar(self) -> Path:
        given = self.javatuples_jar or os.environ.get(JAVATUPLES_ENV)
        candidates = [given] if given else list(JAVATUPLES_JARS)
        for candidate in candidates:
            if Path(candidate).is_file():
                return Path(candidate).absolute()
        source = f"{JAVATUPLES_ENV} / javatuples_jar" if given else "default locations"
        raise ToolMissing(f"javatuples jar not found ({source}: {', '.join(map(str, candidates))}); "
                          f"install libjavatuples-java or set {JAVATUPLES_ENV}")

    def find_toolchain(self) -> Toolchain:
        javac, java = find_tool("javac"), find_tool("java")
        jar = self._jar()
        read_only = {*install_prefix(javac), *install_prefix(java)}
        if outside_system_dirs(jar):
            read_only.add(str(jar))
        return Toolchain(tools={"javac": str(javac), "java": str(java), "jar": str(jar)},
                         read_only=tuple(sorted(read_only)), env={"CLASSPATH": str(jar)})

    def build_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return [tools["javac"], *JAVAC_JVM_OPTIONS, "-encoding", "UTF8", "-d", CLASSES_DIR, source]

    def run_argv(self, tools: Mapping[str, str], source: str, binary: str) -> list[str]:
        return [tools["java"], f"-Xmx{self.memory_mb}m", *JAVA_JVM_OPTIONS, "-ea", "-cp", f"{CLASSES_DIR}:{tools['jar']}",
                "Problem"]
