"""Check an evaluation image (or any machine) the way the evaluation will use it.

    python /opt/fusion/check_image.py [--compile] [--languages java,js,...] [--no-data]

- Toolchains: each MultiPL-E executor of ``ray_pipeline.evaluation`` looks for its
  toolchain exactly as it does when scoring (``find_toolchain``: javac, java and the
  javatuples jar, node, g++, php, rustc's sysroot, swiftc); one missing is a problem.
- ``--compile``: for each language, a program whose assertion holds and one whose
  assertion fails are built and run with the executor's own commands and the
  sandbox's PATH, in a scratch directory (no sandbox: this checks the toolchain, not
  the isolation). The first must exit 0, the second must not: that catches a broken
  toolchain and assertions compiled out (``java`` without ``-ea``, ``NDEBUG``, ``-O``).
- Data (unless ``--no-data``): HumanEval+ and MBPP+ load through ``load_evalplus``
  from ``$HUMANEVAL_OVERRIDE_PATH``/``$MBPP_OVERRIDE_PATH``, each MultiPL-E language
  through ``load_multiple`` from ``$FUSION_MULTIPLE_PATH``, with the task counts of
  the pinned releases; GSM8K, IFEval and MT-Bench through their evaluation modules'
  ``load_problems`` from ``$FUSION_GSM8K_PATH``, ``$FUSION_IFEVAL_PATH`` and
  ``$FUSION_MT_BENCH_PATH`` (MT-Bench with FastChat's GPT-4 reference answers beside
  its questions, attached to every math, reasoning and coding question), with the
  problem counts of the pinned commits. Nothing is downloaded: an unset variable is a problem.

Prints one line per check and exits 1 when any failed, naming each cause. The eval
image's build runs it (``--compile``) as the runtime user, so an image that builds passes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: task counts of the pinned releases (../shared/data/bench/*/SOURCE.md)
EVALPLUS_TASKS = {"humaneval": 164, "mbpp": 378}
MULTIPLE_TASKS = {"java": 158, "js": 161, "cpp": 161, "php": 161, "swift": 158, "rs": 156}
MULTIPLE_PATH_ENV = "FUSION_MULTIPLE_PATH"
#: the TaCIE text benchmarks: problems in the pinned files (GSM8K's test split, IFEval's prompts, MT-Bench's questions)
TEXT_TASKS = {"gsm8k": 1319, "ifeval": 541, "mt_bench": 80}
#: MT-Bench questions judged against a reference answer: 10 each of math, reasoning and coding
MT_BENCH_REFERENCED = 30
BUILD_TIMEOUT_S = 300.0  # a cold first swiftc or javac run is slow; the executor's own limits are not checked here
RUN_TIMEOUT_S = 60.0

#: a program per language in MultiPL-E's shape, with "{value}" where 2 (holds) or 3 (fails) goes
PROGRAMS = {
    "cpp": "#include<assert.h>\n#include<vector>\nint main() {\n    assert((std::vector<long>{1, 1 + 1}[1] == {value}));\n}\n",
    "java": ("import java.util.*;\nimport org.javatuples.*;\nclass Problem {\n"
             "    public static void main(String[] args) {\n"
             "        assert(Pair.with(1l, 1l + 1l).getValue1() == {value}l);\n    }\n}\n"),
    "js": "const assert = require('node:assert');\nassert.deepEqual([1, 1 + 1], [1, {value}]);\n",
    "php": "<?php\nif (1 + 1 !== {value}) {\n    throw new Exception('wrong');\n}\n",
    "rs": "fn main() {\n    assert_eq!(1 + 1, {value});\n}\n",
    "swift": "\nassert(1 + 1 == {value})\n",
}
HOLDS, FAILS = "2", "3"


def check_toolchain(language: str, compile_programs: bool) -> list[str]:
    """Problems of one language's toolchain (an empty list when it is fine); prints what it found."""
    from ray_pipeline.evaluation.executors.languages import multiple_executor
    from ray_pipeline.evaluation.executors.multiple import ToolMissing

    executor = multiple_executor(language, sandbox=None)  # finding and running tools needs no sandbox
    try:
        toolchain = executor.find_toolchain()
    except ToolMissing as exc:
        return [f"{language}: {exc}"]
    print(f"ok   {language}: " + " ".join(f"{name}={path}" for name, path in toolchain.tools.items()), flush=True)
    if not compile_programs:
        return []
    problems = []
    for value, should_pass in ((HOLDS, True), (FAILS, False)):
        outcome = _build_and_run(executor, toolchain, PROGRAMS[language].replace("{value}", value))
        if isinstance(outcome, str):
            problems.append(f"{language}: {outcome}")
        elif (outcome == 0) != should_pass:
            expected = "exit 0" if should_pass else "a non-zero exit (a failed assertion)"
            problems.append(f"{language}: the program whose assertion {'holds' if should_pass else 'fails'} "
                            f"exited {outcome}, expected {expected}")
    if not problems:
        print(f"ok   {language}: a passing program exits 0, a failing assertion does not", flush=True)
    return problems


def _build_and_run(executor, toolchain, program: str) -> int | str:
    """The run's exit code, or a line saying which step failed and how."""
    from ray_pipeline.evaluation.executors.multiple import PROGRAM_STEM
    from ray_pipeline.evaluation.sandbox import DEFAULT_PATH

    with tempfile.TemporaryDirectory(prefix="check-image-") as work:
        source, binary = PROGRAM_STEM + executor.EXTENSION, PROGRAM_STEM
        Path(work, source).write_text(program, encoding="utf-8")
        env = {"PATH": DEFAULT_PATH, "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", **(toolchain.env or {})}
        steps = [("run", executor.run_argv(toolchain.tools, source, binary), RUN_TIMEOUT_S)]
        if executor.BUILD_TIMEOUT_S is not None:
            steps.insert(0, ("build", executor.build_argv(toolchain.tools, source, binary), BUILD_TIMEOUT_S))
        for step, argv, timeout in steps:
            try:
                done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                return f"{step} step timed out after {timeout:g} s: {' '.join(argv)}"
            except OSError as exc:
                return f"{step} step could not start ({exc}): {' '.join(argv)}"
            if step == "build" and done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines()
                return f"build failed (exit {done.returncode}): {lines[0] if lines else 'no output'}"
        return done.returncode


def check_data(languages: list[str]) -> list[str]:
    """Problems of the baked benchmark data, loaded the way an eval job loads it."""
    from ray_pipeline.core.errors import FusionError
    from ray_pipeline.evaluation.evalplus_data import OVERRIDE_ENV, load_evalplus
    from ray_pipeline.evaluation.multiple_data import load_multiple

    problems = []
    for dataset, expected in EVALPLUS_TASKS.items():
        if not os.environ.get(OVERRIDE_ENV[dataset]):
            problems.append(f"{dataset}: ${OVERRIDE_ENV[dataset]} is not set (the data would be downloaded)")
            continue
        try:
            count = len(load_evalplus(dataset).problems)
        except FusionError as exc:
            problems.append(f"{dataset}: {exc}")
            continue
        if count != expected:
            problems.append(f"{dataset}: {count} tasks in ${OVERRIDE_ENV[dataset]}, expected {expected}")
        else:
            print(f"ok   {dataset}: {count} tasks from {os.environ[OVERRIDE_ENV[dataset]]}", flush=True)
    problems += check_text_data()
    root = os.environ.get(MULTIPLE_PATH_ENV)
    if not root:
        return problems + [f"multiple: ${MULTIPLE_PATH_ENV} is not set (the data would come from the hub)"]
    for language in languages:
        try:
            count = len(load_multiple(language, root))
        except FusionError as exc:
            problems.append(f"multiple {language}: {exc}")
            continue
        if count != MULTIPLE_TASKS[language]:
            problems.append(f"multiple {language}: {count} problems in {root}, expected {MULTIPLE_TASKS[language]}")
        else:
            print(f"ok   multiple {language}: {count} problems from {root}", flush=True)
    return problems


def check_text_data() -> list[str]:
    """Problems of the text benchmarks' data, loaded by each benchmark's own ``load_problems`` from its variable."""
    import importlib

    from ray_pipeline.core.benchmark_data import NAMED_BENCHMARKS
    from ray_pipeline.core.errors import FusionError

    problems = []
    for benchmark, expected in TEXT_TASKS.items():
        env = NAMED_BENCHMARKS[benchmark].env
        if not os.environ.get(env):
            problems.append(f"{benchmark}: ${env} is not set (the data would come from the hub)")
            continue
        try:
            loaded = importlib.import_module(f"ray_pipeline.evaluation.{benchmark}").load_problems()
        except FusionError as exc:
            problems.append(f"{benchmark}: {exc}")
            continue
        if len(loaded) != expected:
            problems.append(f"{benchmark}: {len(loaded)} problems in ${env}, expected {expected}")
            continue
        note = ""
        if benchmark == "mt_bench":
            referenced = sum(1 for p in loaded if len(p.meta.get("reference") or []) == 2)
            if referenced != MT_BENCH_REFERENCED:
                problems.append(f"{benchmark}: {referenced} questions carry a reference answer, "
                                f"expected {MT_BENCH_REFERENCED} (math, reasoning, coding)")
                continue
            note = f", {referenced} with a reference answer"
        print(f"ok   {benchmark}: {len(loaded)} problems{note} from {os.environ[env]}", flush=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    from ray_pipeline.evaluation.multiple_data import multiple_language
    from ray_pipeline.evaluation.problems import MULTIPLE_LANGUAGES

    parser = argparse.ArgumentParser(prog="check_image", description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default=",".join(MULTIPLE_LANGUAGES),
                        help="comma-separated MultiPL-E languages (default: all six)")
    parser.add_argument("--compile", action="store_true", help="build and run a passing and a failing program")
    parser.add_argument("--no-data", action="store_true", help="skip the benchmark data")
    args = parser.parse_args(argv)
    try:
        languages = [multiple_language(name) for name in args.languages.split(",") if name.strip()]
    except Exception as exc:  # FusionError with one line naming the language
        print(f"check_image: error: {exc}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=len(languages) or 1) as pool:
        problems = [p for found in pool.map(lambda lang: check_toolchain(lang, args.compile), languages)
                    for p in found]
    if not args.no_data:
        problems += check_data(languages)
    for problem in problems:
        print(f"check_image: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
