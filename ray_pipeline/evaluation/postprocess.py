"""From a model's answer to the solution a benchmark's executor takes.

- evalplus (HumanEval+, MBPP+): the whole program, sanitised by evalplus's own
  ``sanitize`` (the entry point, its dependencies and imports). In completion
  mode the program is the prompt (stripped, plus a newline, as evalplus's
  codegen sends it) followed by the completion; in chat mode it is the answer.
- MultiPL-E: the completion after the prompt, cut at the earliest stop token
  (the stop token and all after it dropped), as MultiPL-E does. In chat mode the
  completion is what follows the function's signature line inside the answer's
  code block; an answer without that line is used as it is (and usually fails).
"""

from __future__ import annotations

import re

from ray_pipeline.evaluation.problems import Problem

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def code_block(answer: str) -> str:
    """The first fenced code block of a chat answer, else the answer itself."""
    m = _FENCE.search(answer)
    return m.group(1) if m else answer


def completion_prompt(problem: Problem) -> str:
    """The text a base model continues: evalplus's ``prompt.strip() + "\\n"``, MultiPL-E's stripped prompt."""
    if problem.benchmark == "multiple":
        return problem.prompt.strip()
    return problem.prompt.strip() + "\n"


def solution_from_completion(problem: Problem, completion: str) -> str:
    completion = cut_at_stop(completion, problem.stop)
    if problem.benchmark == "multiple":
        return completion
    return _sanitize(completion_prompt(problem) + completion, problem.entry_point)


def solution_from_chat(problem: Problem, answer: str) -> str:
    if problem.benchmark != "multiple":
        return _sanitize(answer, problem.entry_point)
    code = code_block(answer)
    signature = _signature_line(problem.prompt)
    at = code.find(signature) if signature else -1
    if at != -1:
        code = code[at + len(signature):]
    return cut_at_stop(code, problem.stop)


def _signature_line(prompt: str) -> str:
    """The last non-empty line of a MultiPL-E prompt: the function's header, e.g. ``function strlen(string){``."""
    lines = [line.strip() for line in prompt.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _sanitize(code: str, entry_point: str) -> str:
    from evalplus.sanitize import sanitize

    try:
        return sanitize(code, entrypoint=entry_point or None)
    except Exception:  # noqa: BLE001 - a parser failure leaves the code as it is; the executor scores it
        return code
