"""Our HumanEval+/MBPP+ scorer against evalplus's own evaluator, on canonical solutions and seeded mutants.

For each task of HumanEval+ and/or MBPP+ (the ``../shared`` release files) the
samples are its canonical solution (``prompt + canonical_solution``, evalplus's
ground truth, as written) and up to ``--mutants K`` mutants of it: one change
each in the AST of a function body (a comparison flipped, ``<`` to ``<=``,
``==`` to ``!=``, ``in`` to ``not in``; an arithmetic operator swapped, ``+``
to ``-``, ``*`` to ``//``; an int constant moved by 1; True/False flipped;
``and``/``or`` swapped; an ``if`` condition negated; ``return X`` made
``return None``). A mutant is ``ast.unparse`` of the changed tree; it must parse
and differ from the unparsed canonical solution, and a task with too few such
changes gets fewer. The changes are drawn by ``random.Random("<seed>:<task
id>")``, so a task's mutants do not depend on ``--limit`` or ``--dataset``.

Both scorers score the same samples with the same parallelism P, timed:
(a) ``evalplus.evaluate.evaluate(dataset, samples=..., parallel=P,
    i_just_wanna_run=True)``, with ``HUMANEVAL_OVERRIDE_PATH`` /
    ``MBPP_OVERRIDE_PATH`` pointing at the data (set before evalplus is
    imported) and its ground-truth cache filled first, untimed; the statuses
    come from its ``*_eval_results.json``. Every evalplus run comes first, so
    its forked workers inherit none of our data;
(b) our ``EvalPlusExecutor`` (one bubblewrap sandbox per sample) on P threads,
    after filling our expected-output cache, untimed; loading the data is timed.

Per dataset and overall it prints the samples, how many base and plus statuses
(pass/fail/timeout) agree, how many pass verdicts agree (the base tests; base
and plus, evalplus's "+" verdict), how many samples each passes, both wall times
and the ratio ours/evalplus. Each disagreement (task, sample, evalplus's
statuses, ours, our detail line) is scored again, one sample at a time, by
evalplus in this process (``check_correctness``) and by us, and labelled:
- ``expected: ...``: a known, deliberate difference, evalplus failing what we
  pass: HumanEval/32 (evalplus 0.3.1's ``find_zero`` oracle never records a
  pass; we follow its upstream fix), and the plus tests of the canonical
  Mbpp/255 and Mbpp/392 (evalplus's 4 GiB address-space limit counts what its
  parent process holds). Agreement is printed again without these;
- ``timing flake``: the two agree on the re-run (a sample near a per-input time
  limit, under load);
- ``DIFFERENT``: they still disagree. Exit status 1 if any remains.

``--multiple DIR`` (DIR: MultiPL-E's ``evaluation/src``, with its
``eval_<lang>.py`` and ``safe_subprocess``) also scores hand-written completions
of HumanEval_23_strlen and HumanEval_53_add in C++, JavaScript, Java, PHP and
Rust (correct, wrong, syntax error, endless loop, crash, undefined name) with
MultiPL-E's ``eval_<lang>.eval_script`` on the assembled program file and with
our executor, and compares (status, exit code); a language whose toolchain is
missing is skipped. ``--dataset none`` runs only that. (MultiPL-E's
``eval_java.py`` puts ``/usr/multiple/javatuples-1.2.jar``, its image's path, on
the class path; where the jar is elsewhere, every Java program is a SyntaxError
there unless that line of the copy is pointed at it.)

Options: ``--dataset humaneval|mbpp|both|none`` (default both), ``--limit N``
(the first N tasks of each: a trimmed copy of the data file, since evalplus
insists that the samples cover every task), ``--mutants K`` (2), ``--seed S``
(0), ``--parallel P`` (2), ``--data-dir``, ``--multiple-data``, ``--json PATH``
(every figure, and the labelled disagreements).

    python benchmarks/peer_agreement.py --limit 10
    python benchmarks/peer_agreement.py --json /tmp/peer_agreement.json
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eval_sandbox_speed import trimmed_copy  # this folder, on sys.path when run as a script

DATA_DIR = Path(__file__).resolve().parents[2] / "shared/data/bench/evalplus"
FILES = {"humaneval": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp": "MbppPlus-v0.2.0.jsonl.gz"}
FIND_ZERO_BUG = "expected: evalplus 0.3.1 find_zero bug"
MEMORY_LIMIT = "expected: evalplus memory limit counts its parent's data"

# ------------------------------------------------------------------ mutants
FLIP_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
SWAP_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.Div: ast.Mult,
              ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
              ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitAnd}


def body_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node inside a function body, once each, in a fixed order (the same for every parse of a text)."""
    nodes: dict[int, ast.AST] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in fn.body:
                for node in ast.walk(stmt):
                    nodes.setdefault(id(node), node)
    return list(nodes.values())


def mutation_sites(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(node index in ``body_nodes``, operator, argument) for every applicable change."""
    sites = []
    for i, node in enumerate(body_nodes(tree)):
        if isinstance(node, ast.Compare):
            sites += [(i, "compare", k) for k, op in enumerate(node.ops) if type(op) in FLIP_COMPARE]
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAP_ARITH:
            sites.append((i, "arith", 0))
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            sites.append((i, "bool", 0))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            sites += [(i, "int", 1), (i, "int", -1)]
        elif isinstance(node, ast.BoolOp):
            sites.append((i, "andor", 0))
        elif isinstance(node, ast.If):
            sites.append((i, "not-if", 0))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            sites.append((i, "return-none", 0))
    return sites


def mutate(source: str, site: tuple[int, str, int]) -> str:
    """``source`` with the change ``site`` made, unparsed."""
    tree = ast.parse(source)
    index, kind, arg = site
    node = body_nodes(tree)[index]
    if kind == "compare":
        node.ops[arg] = FLIP_COMPARE[type(node.ops[arg])]()
    elif kind == "arith":
        node.op = SWAP_ARITH[type(node.op)]()
    elif kind == "bool":
        node.value = not node.value
    elif kind == "int":
        node.value += arg
    elif kind == "andor":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "not-if":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "return-none":
        node.value = ast.Constant(value=None)
    return ast.unparse(ast.fix_missing_locations(tree))


def mutants(source: str, k: int, rng: random.Random) -> list[str]:
    """Up to ``k`` distinct one-change mutants of ``source`` that parse and differ from it."""
    tree = ast.parse(source)
    unchanged = ast.unparse(tree)
    sites = mutation_sites(tree)
    rng.shuffle(sites)
    out: list[str] = []
    for site in sites:
        if len(out) == k:
            break
        text = mutate(source, site)
        with contextlib.suppress(SyntaxError):
            ast.parse(text)
            if text != unchanged and text not in out:
                out.append(text)
    return out


def make_samples(data_path: Path, k: int, seed: int) -> list[dict[str, str]]:
    """The canonical solution and its mutants for every task: {"task_id", "solution", "sample"}."""
    from evalplus.data.utils import stream_jsonl

    samples = []
    for rec in stream_jsonl(str(data_path)):
        canonical = rec["prompt"] + rec["canonical_solution"]
        texts = [canonical, *mutants(canonical, k, random.Random(f"{seed}:{rec['task_id']}"))]
        samples += [{"task_id": rec["task_id"], "solution": text, "sample": f"mutant {n}" if n else "canonical"}
                    for n, text in enumerate(texts)]
    return samples


# ------------------------------------------------------------------ scorers
def evalplus_truth(dataset: str) -> tuple[dict, dict]:
    """evalplus's problems and ground truth (from its cache, else computed)."""
    from evalplus import data
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import get_groundtruth

    if dataset == "humaneval":
        problems, digest, not_none = data.get_human_eval_plus(), data.get_human_eval_plus_hash(), []
    else:
        problems, digest, not_none = data.get_mbpp_plus(), data.get_mbpp_plus_hash(), MBPP_OUTPUT_NOT_NONE_TASKS
    with contextlib.redirect_stdout(io.StringIO()):
        return problems, get_groundtruth(problems, digest, not_none)


def run_evalplus(dataset: str, samples_path: Path, parallel: int) -> tuple[float, dict[str, list[tuple]]]:
    """evalplus.evaluate's wall time, and each task's [(base_status, plus_status)] in sample order."""
    from evalplus.evaluate import evaluate

    results = samples_path.with_name(samples_path.stem + "_eval_results.json")
    results.unlink(missing_ok=True)  # else evaluate asks on stdin whether to overwrite it
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate(dataset=dataset, samples=str(samples_path), parallel=parallel, i_just_wanna_run=True)
    wall = time.perf_counter() - started
    evals = json.loads(results.read_text())["eval"]
    return wall, {tid: [(r["base_status"], r["plus_status"]) for r in rs] for tid, rs in evals.items()}


def run_ours(dataset: str, data_path: Path, samples: list[dict[str, str]], parallel: int):
    """Our wall time (loading included), the loading part, the verdicts in sample order, a scoring function."""
    from ray_pipeline.evaluation.evalplus_data import expected_outputs, load_evalplus
    from ray_pipeline.evaluation.executors.evalplus import EvalPlusExecutor

    expected_outputs(load_evalplus(dataset, data_path))  # warm our cache (~/.cache/fusion/evalplus), untimed
    started = time.perf_counter()
    data = load_evalplus(dataset, data_path)
    executor = EvalPlusExecutor(dataset, data)
    executor.prepare()
    loading = time.perf_counter() - started
    problems = {p.task_id: p for p in data.as_problems()}

    def score(s: dict[str, str]):
        return executor.score(problems[s["task_id"]], s["solution"])

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        verdicts = list(pool.map(score, samples))
    return time.perf_counter() - started, loading, verdicts, score


def label(dataset: str, row: dict, evalplus_data: tuple[dict, dict], score) -> None:
    """Score a disagreeing sample again, alone, with both; add the ``*_now`` statuses and the ``label``."""
    from evalplus.evaluate import check_correctness

    problems, truth = evalplus_data
    tid = row["task_id"]
    ret = check_correctness(dataset, 0, problems[tid], row["solution"], truth[tid], fast_check=True)
    verdict = score(row)
    row["evalplus_now"], row["ours_now"] = [ret["base"][0], ret["plus"][0]], [verdict.base_status, verdict.status]
    differing = [p for p in range(2) if row["evalplus"][p] != row["ours"][p]]
    if all(row["evalplus"][p] == "fail" and row["ours"][p] == "pass" for p in differing):
        if tid == "HumanEval/32":
            row["label"] = FIND_ZERO_BUG
            return
        if tid in ("Mbpp/255", "Mbpp/392") and row["sample"] == "canonical" and differing == [1]:
            row["label"] = MEMORY_LIMIT
            return
    row["label"] = "timing flake" if row["evalplus_now"] == row["ours_now"] else "DIFFERENT"


def agreement(pairs: list[tuple[tuple, tuple]]) -> dict[str, int]:
    """How many (evalplus, ours) status pairs agree: each status, and the pass verdicts."""
    def passed(s):
        return s[0] == s[1] == "pass"

    return {"samples": len(pairs), "base_status": sum(t[0] == o[0] for t, o in pairs),
            "plus_status": sum(t[1] == o[1] for t, o in pairs),
            "base_pass": sum((t[0] == "pass") == (o[0] == "pass") for t, o in pairs),
            "pass": sum(passed(t) == passed(o) for t, o in pairs),
            "evalplus_passes": sum(passed(t) for t, _ in pairs), "ours_passes": sum(passed(o) for _, o in pairs)}


def print_agreement(name: str, agree: dict[str, int]) -> None:
    def pct(key: str) -> str:
        return f"{agree[key]}/{agree['samples']} ({100 * agree[key] / max(agree['samples'], 1):.2f}%)"

    print(f"  {name:<20} samples {agree['samples']:5d} | base status {pct('base_status')} | plus status "
          f"{pct('plus_status')}\n  {'':<20} pass verdicts: base {pct('base_pass')} | base+plus {pct('pass')} | "
          f"passing: evalplus {agree['evalplus_passes']}, ours {agree['ours_passes']}")


def compare_evalplus(args: argparse.Namespace, datasets: list[str], work: Path, report: dict) -> int:
    """Score, compare, print and add to ``report``; the number of DIFFERENT samples."""
    from ray_pipeline.core.benchmark_data import NAMED_BENCHMARKS

    paths, samples, walls, theirs, pairs, rows, truths = {}, {}, {}, {}, {}, [], {}
    for ds in datasets:
        paths[ds] = trimmed_copy(args.data_dir / FILES[ds], args.limit, work)
        os.environ[NAMED_BENCHMARKS[ds].env] = str(paths[ds])  # evalplus's override variable, before it is imported
    for ds in datasets:
        samples[ds] = make_samples(paths[ds], args.mutants, args.seed)
        (work / f"{ds}.jsonl").write_text("".join(json.dumps({"task_id": s["task_id"], "solution": s["solution"]})
                                                  + "\n" for s in samples[ds]))
        tasks = len({s["task_id"] for s in samples[ds]})
        print(f"{ds}: {tasks} tasks, {len(samples[ds])} samples ({len(samples[ds]) - tasks} mutants)")
    print(f"parallel: {args.parallel}  cpus: {os.cpu_count()}  seed: {args.seed}", flush=True)
    for ds in datasets:  # every evalplus run first: its forked workers then inherit none of our data
        evalplus_truth(ds)  # warm its ground-truth cache, untimed
        wall, theirs[ds] = run_evalplus(ds, work / f"{ds}.jsonl", args.parallel)
        walls[ds] = {"evalplus": wall}
        print(f"{ds}: evalplus.evaluate {wall:.2f} s", flush=True)
    for ds in datasets:
        walls[ds]["ours"], walls[ds]["loading"], verdicts, score = run_ours(ds, paths[ds], samples[ds], args.parallel)
        print(f"{ds}: EvalPlusExecutor {walls[ds]['ours']:.2f} s (loading {walls[ds]['loading']:.2f} s)", flush=True)
        seen: dict[str, int] = {}
        pairs[ds] = []
        for s, verdict in zip(samples[ds], verdicts):
            seen[s["task_id"]] = n = seen.get(s["task_id"], -1) + 1  # evalplus lists a task's results in order
            t, o = tuple(theirs[ds][s["task_id"]][n]), (verdict.base_status, verdict.status)
            pairs[ds].append((t, o))
            if t != o:
                rows.append({"dataset": ds, **s, "evalplus": list(t), "ours": list(o), "detail": verdict.detail})
                truths[ds] = truths.get(ds) or evalplus_truth(ds)  # loaded only now: see above
                label(ds, rows[-1], truths[ds], score)

    expected = {(r["dataset"], r["task_id"], r["sample"]) for r in rows if r["label"].startswith("expected")}
    print("\nagreement (evalplus vs ours):")
    groups = [(ds, [ds]) for ds in datasets] + ([("overall", datasets)] if len(datasets) > 1 else [])
    for name, group in groups:
        every = [p for ds in group for p in pairs[ds]]
        kept = [p for ds in group for s, p in zip(samples[ds], pairs[ds])
                if (ds, s["task_id"], s["sample"]) not in expected]
        theirs_s, ours_s = (sum(walls[ds][k] for ds in group) for k in ("evalplus", "ours"))
        figures = {"agreement": agreement(every), "agreement_without_expected": agreement(kept),
                   "evalplus_s": round(theirs_s, 2), "ours_s": round(ours_s, 2),
                   "ours_loading_s": round(sum(walls[ds]["loading"] for ds in group), 2),
                   "ratio": round(ours_s / theirs_s, 3)}
        report[name] = figures
        print_agreement(name, figures["agreement"])
        if len(kept) != len(every):
            print_agreement("  without expected", figures["agreement_without_expected"])
        print(f"  {'':<20} time: evalplus {theirs_s:.2f} s | ours {ours_s:.2f} s "
              f"(loading {figures['ours_loading_s']:.2f} s) | ratio ours/evalplus {figures['ratio']:.2f}")
    print(f"\ndisagreements: {len(rows)}")
    for r in rows:
        print(f"  {r['task_id']} {r['sample']}: evalplus {tuple(r['evalplus'])} ours {tuple(r['ours'])} "
              f"[{r['detail']}]\n      re-run alone: evalplus {tuple(r['evalplus_now'])} ours {tuple(r['ours_now'])}"
              f" -> {r['label']}")
    report["disagreements"] = rows
    return sum(r["label"] == "DIFFERENT" for r in rows)


# ------------------------------------------------------------------ MultiPL-E
MULTIPLE_EVAL = {"cpp": "eval_cpp", "js": "eval_javascript", "java": "eval_java", "php": "eval_php", "rs": "eval_rust"}
#: per language: indent, endless loop, crash, an undefined name, what ends the completion (js, php: the function)
STATEMENTS = {
    "cpp": ("    ", "for (volatile long i = 0; ; i++) {}", "int *volatile p = nullptr; *p = 1;", "no_such_name", ""),
    "js": ("  ", "while (true) {}", "null.f();", "no_such_name", "\n}"),
    "java": ("        ", "while (System.nanoTime() > 0) {}", "Object o = null; o.hashCode();", "no_such_name", ""),
    "php": ("    ", "while (true) {}", 'throw new Exception("boom");', "$no_such_name", "\n}"),
    "rs": ("    ", "loop {}", 'panic!("boom");', "no_such_name", ""),
}
#: per problem and language: a correct and a wrong return expression
EXPRESSIONS = {
    "HumanEval_23_strlen": {"cpp": ("string.size()", "string.size() + 1"), "js": ("string.length", "string.length + 1"),
                            "java": ("(long) string.length()", "(long) string.length() + 1"),
                            "php": ("mb_strlen($string)", "mb_strlen($string) + 1"),
                            "rs": ("string.len() as isize", "string.len() as isize + 1")},
    "HumanEval_53_add": {**{lang: ("x + y", "x - y") for lang in ("cpp", "js", "java", "rs")},
                         "php": ("$x + $y", "$x - $y")},
}


def completions(lang: str, name: str) -> dict[str, str]:
    """Hand-written completions of one problem: correct, wrong, a syntax error, an endless loop, a crash, ..."""
    indent, loop, crash, undefined, end = STATEMENTS[lang]
    right, wrong = EXPRESSIONS[name][lang]

    def body(*lines: str) -> str:
        return "".join(f"\n{indent}{line}" for line in lines) + end

    return {"correct": body(f"return {right};"), "wrong": body(f"return {wrong};"),
            "syntax error": body(f"return ({right};"), "endless loop": body(loop, f"return {right};"),
            "crash": body(crash, f"return {right};"), "undefined name": body(f"return {undefined};")}


def compare_multiple(args: argparse.Namespace, report: dict) -> int:
    """Each completion scored by MultiPL-E's ``eval_<lang>.eval_script`` and by us; the number DIFFERENT."""
    from ray_pipeline.evaluation.executors.languages import multiple_executor
    from ray_pipeline.evaluation.multiple_data import load_multiple
    from ray_pipeline.evaluation.sandbox import Sandbox

    sys.path.insert(0, str(args.multiple))
    print("\nMultiPL-E (its eval_<lang>.eval_script vs ours), (status, exit code):")
    jobs = []
    for lang, module in MULTIPLE_EVAL.items():
        if multiple_executor(lang, Sandbox()).unavailable_reason():
            print(f"  {lang}: skipped ({multiple_executor(lang, Sandbox()).unavailable_reason()})")
            continue
        problems = {p.task_id: p for p in load_multiple(lang, args.multiple_data)}
        jobs += [(lang, importlib.import_module(module), problems[name], variant, text)
                 for name in EXPRESSIONS for variant, text in completions(lang, name).items()]

    def theirs(job) -> list:
        lang, evaluator, problem, _, completion = job
        with tempfile.TemporaryDirectory(prefix="multiple-") as tmp:
            path = Path(tmp) / f"{problem.task_id}.{lang}"
            path.write_text(problem.prompt + completion + "\n" + problem.tests)
            result = evaluator.eval_script(path)
        return [result["status"], result["exit_code"]]

    def ours(job):  # a fresh executor each time: one caches the verdicts of identical programs
        return multiple_executor(job[0], Sandbox()).score(job[2], job[4])

    def score(job) -> dict:
        verdict = ours(job)
        return {"language": job[0], "task_id": job[2].task_id, "sample": job[3], "multiple": theirs(job),
                "ours": [verdict.status, verdict.exit_code], "detail": verdict.detail}

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(score, jobs))
    for r, job in zip(rows, jobs):
        line = "agree"
        if r["multiple"] != r["ours"]:  # again, alone
            verdict = ours(job)
            r["multiple_now"], r["ours_now"] = theirs(job), [verdict.status, verdict.exit_code]
            r["label"] = "timing flake" if r["multiple_now"] == r["ours_now"] else "DIFFERENT"
            line = (f"differ [{r['detail']}]; re-run alone: MultiPL-E {tuple(r['multiple_now'])} ours "
                    f"{tuple(r['ours_now'])} -> {r['label']}")
        print(f"  {r['language']:<4} {r['task_id']:<19} {r['sample']:<14} MultiPL-E {tuple(r['multiple'])} "
              f"ours {tuple(r['ours'])} {line}")
    print(f"  status and exit code agree: {sum(r['multiple'] == r['ours'] for r in rows)}/{len(rows)}")
    report["multiple"] = rows
    return sum(r.get("label") == "DIFFERENT" for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["humaneval", "mbpp", "both", "none"], default="both")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tasks of each dataset")
    parser.add_argument("--mutants", type=int, default=2, help="K: mutants per task (fewer where none apply)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=2, help="P: evalplus workers and our sandbox threads")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--multiple", type=Path, default=None, help="MultiPL-E's evaluation/src: compare with it too")
    parser.add_argument("--multiple-data", type=Path, default=DATA_DIR.parent / "multipl-e")
    args = parser.parse_args()
    datasets = {"both": ["humaneval", "mbpp"], "none": []}.get(args.dataset, [args.dataset])
    missing = [str(args.data_dir / FILES[ds]) for ds in datasets if not (args.data_dir / FILES[ds]).is_file()]
    if missing or (args.multiple and not (args.multiple / "eval_cpp.py").is_file()):
        print(f"not found: {', '.join(missing) or args.multiple / 'eval_cpp.py'}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="peer-agreement-"))
    report: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "cpus": os.cpu_count()}
    different = compare_evalplus(args, datasets, work, report) if datasets else 0
    if args.multiple:
        different += compare_multiple(args, report)
    print(f"DIFFERENT: {different}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)
    # evalplus.evaluate leaves a non-daemon watchdog thread sleeping up to 20 s; do not wait for it.
    os._exit(1 if different else 0)


if __name__ == "__main__":
    sys.exit(main())
