"""Small benchmark files written by tests, so that the scoring path is tested without ``../shared``.

:func:`write_evalplus` writes an evalplus-format dataset (the fields evalplus's
release files have) of two tasks with canonical solutions and base/plus inputs;
:func:`write_multiple` writes one MultiPL-E problem per language in MultiPL-E's
layout (the self-check's own ``add`` problem). :func:`answer` is a fault-server
responder that answers each prompt with the right or the wrong completion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ray_pipeline.evaluation.executors.multiple import KNOWN_PROGRAMS

EVALPLUS_TASKS: list[dict[str, Any]] = [
    {
        "task_id": "Synth/0",
        "prompt": 'def add_all(numbers: list) -> int:\n    """Sum of the numbers.\n    >>> add_all([1, 2])\n    3\n    """\n',
        "entry_point": "add_all",
        "canonical_solution": "    total = 0\n    for n in numbers:\n        total += n\n    return total\n",
        "wrong_solution": "    return len(numbers)\n",
        "base_input": [[[1, 2]], [[5]], [[]]],
        "plus_input": [[list(range(n))] for n in range(2, 40)],
    },
    {
        "task_id": "Synth/1",
        "prompt": 'def shout(text: str) -> str:\n    """The text in capitals, with "!" after it.\n    >>> shout("hi")\n    \'HI!\'\n    """\n',
        "entry_point": "shout",
        "canonical_solution": "    return text.upper() + '!'\n",
        "wrong_solution": "    return text + '!'\n",
        "base_input": [["hi"], ["Ok"], [""]],
        "plus_input": [[w] for w in ("abc", "MiXeD", "x y", "42", "é", "ß")],
    },
]


def write_evalplus(path: Path) -> Path:
    """An evalplus-format .jsonl of :data:`EVALPLUS_TASKS`."""
    rows = [{"contract": "", "atol": 0, **{k: v for k, v in task.items() if k != "wrong_solution"}}
            for task in EVALPLUS_TASKS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_multiple(directory: Path, languages: list[str]) -> Path:
    """``humaneval-<lang>-reworded.jsonl`` with the self-check's problem, for each language."""
    import yaml

    known = yaml.safe_load(KNOWN_PROGRAMS.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        entry = known["languages"][lang]
        row = {"name": "HumanEval_53_add", "language": lang, "prompt": entry["prompt"], "tests": entry["tests"],
               "stop_tokens": ["\n}"] if lang in ("cpp", "rs", "swift") else ["\nfunction "]}
        (directory / f"humaneval-{lang}-reworded.jsonl").write_text(json.dumps(row) + "\n")
    return directory


def answer(right: set[str]) -> Callable[[list[dict[str, Any]]], str]:
    """A responder: the canonical completion for the tasks in ``right`` (and every MultiPL-E problem), else a wrong one."""
    import yaml

    known = yaml.safe_load(KNOWN_PROGRAMS.read_text())

    def respond(messages: list[dict[str, Any]]) -> str:
        text = messages[-1]["content"]
        for task in EVALPLUS_TASKS:
            if f"def {task['entry_point']}(" in text:
                return task["canonical_solution"] if task["task_id"] in right else task["wrong_solution"]
        for entry in known["languages"].values():
            if entry["prompt"].strip() in text:
                return entry["correct"]
        return "    pass\n"

    return respond
