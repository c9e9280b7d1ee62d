"""HumanEval+ and MBPP+ data, and their expected outputs, exactly as evalplus 0.3.1 makes them.

- :func:`load_evalplus` reads an evalplus release file (``.jsonl`` or
  ``.jsonl.gz``) with evalplus's ``stream_jsonl`` and processes it as
  ``get_human_eval_plus``/``get_mbpp_plus`` do (MBPP+ inputs deserialised with
  ``mbpp_deserialize_inputs``); its ``hash`` is evalplus's (the md5 of the file).
  With no path it resolves the file as evalplus does: ``$HUMANEVAL_OVERRIDE_PATH``
  / ``$MBPP_OVERRIDE_PATH`` (read at call time, not at import as evalplus does),
  else evalplus's own download.
- :func:`expected_outputs` is evalplus's oracle (``evaluate.get_groundtruth``):
  the canonical solution run in this process by ``trusted_exec`` on the base
  and plus inputs, recording outputs and reference times; MBPP+ tasks in
  ``MBPP_OUTPUT_NOT_NONE_TASKS`` record only whether the output is not None.
  Only the requested tasks are computed. Each task's oracle is cached in its
  own file under ``<cache_dir>/<dataset>-<hash>/`` (default
  ``~/.cache/fusion/evalplus``), written atomically, so a later run with more
  tasks reuses what is there and adds the rest.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ray_pipeline.core.benchmark_data import NAMED_BENCHMARKS, local_path
from ray_pipeline.core.errors import EvaluationError
from ray_pipeline.evaluation.problems import Problem

DATASETS = ("humaneval", "mbpp")
#: the environment variable evalplus reads for each dataset's file (``core.benchmark_data``'s table)
OVERRIDE_ENV = {dataset: NAMED_BENCHMARKS[dataset].env for dataset in DATASETS}
#: evalplus's ``completeness_check`` keys, plus the two every task needs
REQUIRED_KEYS = ("task_id", "prompt", "entry_point", "contract", "canonical_solution", "base_input", "plus_input", "atol")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "fusion" / "evalplus"

Oracle = dict[str, list]  # {"base", "base_time", "plus", "plus_time"}


def stop_sequences(dataset: str) -> tuple[str, ...]:
    """The stop strings evalplus's codegen gives a base (direct-completion) model.

    ``extra_eos_for_direct_completion(dataset)`` and ``provider.utility.EOS``, as
    the vLLM and HF providers add them when the model has no chat template. The
    dataset's own come first: an OpenAI-compatible server takes only 4 stop
    strings (``openai_compat.MAX_STOP_SEQUENCES``), and the text is cut at all of
    them afterwards (``postprocess.cut_at_stop``).
    """
    from evalplus.provider.utility import EOS, extra_eos_for_direct_completion

    return tuple(extra_eos_for_direct_completion(dataset)) + tuple(EOS)


@dataclass
class EvalPlusData:
    """One evalplus dataset (or a selection of its tasks)."""

    dataset: str  # "humaneval" | "mbpp"
    path: str
    hash: str  # evalplus's: the md5 of the whole file
    problems: dict[str, dict[str, Any]]  # task_id -> evalplus record, in file order

    def as_problems(self) -> list[Problem]:
        stop = stop_sequences(self.dataset)
        return [
            Problem(benchmark=self.dataset, language="python", task_id=tid, prompt=rec["prompt"],
                    entry_point=rec["entry_point"], stop=stop)
            for tid, rec in self.problems.items()
        ]


def resolve_path(dataset: str, path: str | os.PathLike | None = None) -> str:
    """The data file: ``path``, else evalplus's override variable (``core.benchmark_data.local_path``), else
    evalplus's downloaded copy."""
    _check_dataset(dataset)
    local = local_path(dataset, path)
    if local is not None:
        return local
    try:
        if dataset == "humaneval":
            from evalplus.data.humaneval import _ready_human_eval_plus_path as ready
        else:
            from evalplus.data.mbpp import _ready_mbpp_plus_path as ready
        return ready()
    except Exception as exc:  # noqa: BLE001 - evalplus's download fails in many ways (no network, bad archive)
        raise EvaluationError(
            f"{dataset}: no data file given, ${OVERRIDE_ENV[dataset]} unset, and evalplus could not download its "
            f"release ({type(exc).__name__}: {exc})"
        ) from exc


def load_evalplus(dataset: str, path: str | os.PathLike | None = None, limit: int | None = None,
                  task_ids: Iterable[str] | None = None) -> EvalPlusData:
    """Load HumanEval+ or MBPP+; ``task_ids`` then ``limit`` select tasks (file order kept)."""
    _check_dataset(dataset)
    if limit is not None and limit <= 0:
        raise EvaluationError(f"{dataset}: limit must be positive, got {limit}")
    file = resolve_path(dataset, path)
    if not os.path.isfile(file):
        raise EvaluationError(f"{dataset}: data file not found: {file}")
    from evalplus.data.utils import stream_jsonl

    try:
        with open(file, "rb") as fh:
            digest = hashlib.md5(fh.read()).hexdigest()
        records = list(stream_jsonl(file))
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise EvaluationError(f"{dataset}: cannot read {file}: {type(exc).__name__}: {exc}") from exc
    problems: dict[str, dict[str, Any]] = {}
    for n, rec in enumerate(records, 1):
        missing = [k for k in REQUIRED_KEYS if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise EvaluationError(f"{dataset}: {file}: record {n} lacks {', '.join(missing)} (not an evalplus file?)")
        problems[rec["task_id"]] = rec
    if not problems:
        raise EvaluationError(f"{dataset}: {file} holds no tasks")
    if task_ids is not None:
        wanted = list(dict.fromkeys(task_ids))
        unknown = [t for t in wanted if t not in problems]
        if unknown:
            raise EvaluationError(f"{dataset}: unknown task ids {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                                  f"(not in {file})")
        keep = set(wanted)
        problems = {tid: rec for tid, rec in problems.items() if tid in keep}
    if limit is not None:
        problems = dict(list(problems.items())[:limit])
    if dataset == "mbpp":
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        for tid, rec in problems.items():
            try:
                rec["base_input"] = mbpp_deserialize_inputs(tid, rec["base_input"])
                rec["plus_input"] = mbpp_deserialize_inputs(tid, rec["plus_input"])
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                raise EvaluationError(f"mbpp: {file}: malformed inputs of {tid}: {type(exc).__name__}: {exc}") from exc
    return EvalPlusData(dataset=dataset, path=file, hash=digest, problems=problems)


# ---------------------------------------------------------------- ground truth
def evalplus_cached(dataset: str) -> bool:
    """Whether evalplus's own cache holds ``dataset``'s release (``fusion validate``'s offline check)."""
    try:
        from evalplus.data.utils import get_dataset_metadata

        if dataset == "humaneval":
            from evalplus.data.humaneval import HUMANEVAL_PLUS_VERSION as version

            _, path = get_dataset_metadata("HumanEvalPlus", version, False, False)
        else:
            from evalplus.data.mbpp import MBPP_PLUS_VERSION as version

            _, path = get_dataset_metadata("MbppPlus", version, False, False)
        return os.path.isfile(path)
    except Exception:  # noqa: BLE001 - an evalplus without these helpers: not cached as far as we know
        return False


def cache_path(data: EvalPlusData, task_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where one task's oracle is cached: ``<cache_dir>/<dataset>-<hash>/<task id>.pkl``."""
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    return root / f"{data.dataset}-{data.hash}" / (task_id.replace("/", "_") + ".pkl")


def compute_oracle(dataset: str, record: dict[str, Any]) -> Oracle:
    """evalplus's ``get_groundtruth`` for one task (trusted code, run in this process)."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    not_none_tasks = MBPP_OUTPUT_NOT_NONE_TASKS if dataset == "mbpp" else []
    code = record["prompt"] + record["canonical_solution"]
    oracle: Oracle = {}
    for phase in ("base", "plus"):
        oracle[phase], oracle[f"{phase}_time"] = trusted_exec(
            code, record[f"{phase}_input"], record["entry_point"], record_time=True,
            output_not_none=record["entry_point"] in not_none_tasks,
        )
    return oracle


def expected_outputs(data: EvalPlusData, task_ids: Iterable[str] | None = None,
                     cache_dir: str | os.PathLike | None = None) -> dict[str, Oracle]:
    """The oracle of each task in ``task_ids`` (default: all of ``data``), from the cache or computed."""
    ids = list(data.problems) if task_ids is None else list(dict.fromkeys(task_ids))
    unknown = [t for t in ids if t not in data.problems]
    if unknown:
        raise EvaluationError(f"{data.dataset}: no expected outputs for unknown task ids {unknown[:5]}")
    out: dict[str, Oracle] = {}
    for tid in ids:
        path = cache_path(data, tid, cache_dir)
        oracle = _read_cached(path)
        if oracle is None:
            try:
                oracle = compute_oracle(data.dataset, data.problems[tid])
            except Exception as exc:  # noqa: BLE001 - a broken canonical solution is bad data
                raise EvaluationError(f"{data.dataset}: the canonical solution of {tid} fails: "
                                      f"{type(exc).__name__}: {exc}") from exc
            _write_atomic(path, oracle)
        out[tid] = oracle
    return out


def _read_cached(path: Path) -> Oracle | None:
    """A cached oracle; None when absent or unreadable (then it is recomputed and rewritten)."""
    try:
        with open(path, "rb") as fh:
            oracle = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, ImportError):
        return None
    if isinstance(oracle, dict) and all(k in oracle for k in ("base", "base_time", "plus", "plus_time")):
        return oracle
    return None


def _write_atomic(path: Path, oracle: Oracle) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(oracle, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise EvaluationError(f"cannot write the expected-output cache {path}: {exc}") from exc


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise EvaluationError(f"unknown evalplus dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
