"""TaCIE with the paper's templates end to end, against a teacher that answers in Appendix B's formats.

The teacher (the fault-injecting server with a responder) recognises each
template by its text and answers as GPT-4o would in the paper's layout, so the
test checks the pipeline's side: seeds decomposed before they are diversified
(B.2 shows the seed's elements, in Appendix B's layout), ten new prompts asked
for and `collection.diversify` kept (the most mutually dissimilar), one depth
template (operation `depth`), B.4's fused sections before `**Fused Prompt:**`;
and the sampling bookkeeping of section 2.3: the root domain is the source's
declared domain, M_d and M_f default to a sixth of round 0's pool, n_c (eq. 7)
counts every fusion drawn, even one whose answer did not parse, and a fused
child's n_obj is the sum of its parents'.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_pipeline.core.config import EmbeddingConfig
from ray_pipeline.jobs import parse_job
from ray_pipeline.analysis.diversity import most_dissimilar
from ray_pipeline.analysis.embeddings import embed_texts
from ray_pipeline.methods.tacie.pipeline import run_tacie
from tests.conftest import openai_teacher
from tests.fault_server import FaultInjectingOpenAIServer
from tests.sft_helpers import save_tiny_model

SEEDS = [
    "Write a Python function that returns the sum of the squares of a list of integers.",
    "Write a short poem about the autumn rain falling on a quiet village.",
    "Write a SQL query that lists the ten customers with the highest total order value.",
]
NEW_TASKS = [
    "parses a CSV file and prints the average of its second column",
    "translates a sentence from English to French using a dictionary",
    "draws an ASCII art tree of a given height",
    "computes the greatest common divisor of two integers",
    "summarises the plot of a novel in three sentences",
    "lists the prime numbers below a given bound",
    "converts temperatures between Celsius and Fahrenheit",
    "checks whether a string is a palindrome, ignoring punctuation",
    "plans a three-day walking tour of Rome",
    "sorts a list of employees by salary and then by name",
]


def _after(text: str, heading: str) -> str:
    return text.rsplit(heading, 1)[1].split("\n\n", 1)[0].strip()


def _tag(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:4]


def paper_teacher(messages: list[dict]) -> str:
    """Answers in Appendix B's formats (B.1-B.4), or a response."""
    user = messages[-1]["content"]
    if user.startswith("Given a prompt, your task is to:"):  # B.1
        prompt = user.rsplit("**Given Prompt:**\n", 1)[1].strip()
        return (f"**Extract Background Settings:**\nN/A\n\n**Extract Objectives:**\n1.{prompt}\n\n"
                f"**Extract Constraints:**\n1.The answer should be correct.")
    if user.startswith("**For the provided prompt"):  # B.2: ten new objectives and prompts
        seed = _after(user, "**Given Prompt:**\n")
        tag = _tag(seed)
        return "\n\n".join(
            f"**New Objective {k}:**\nA program that {task}.\n\n**New Prompt {k}:** Write a program that {task} ({tag}{k})."
            for k, task in enumerate(NEW_TASKS, 1)
        )
    if user.startswith("Based on a prompt’s existing background"):  # B.3
        prompt = user.rsplit("**Prompt:**\n", 1)[1].split("\n\n", 1)[0].strip()
        return (f"### Rewritten\n\n**Prompt:**\n{prompt} The answer must also handle empty input.\n\n"
                f"**Background Settings:**\nN/A\n\n**Objectives:**\n1.{prompt}\n\n"
                f"**Constraints:**\n1.The answer should be correct.\n2.The answer must handle empty input.")
    if user.startswith("Based on the prompt’s existing background"):  # B.4
        a = user.rsplit("**Given Prompt A:**\n", 1)[1].split("\n\n", 1)[0].strip()
        b = user.rsplit("**Given Prompt B:**\n", 1)[1].split("\n\n", 1)[0].strip()
        return (f"**Fused Background Settings:**\nN/A\n\n**Fused Objectives:**\n1.{a}\n2.{b}\n\n"
                f"**Fused Constraints:**\n1.The answer should be correct.\n\n"
                f"**Fused Prompt:**\nSolve both parts of this combined task in one answer, using the result of the "
                f"first part as the input of the second, and explain how they connect: first, {a} Then, {b}")
    return f"Here is a careful answer ({_tag(user)}):\n\n```python\ndef solve():\n    return 42\n```"


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, local_ray):
    tmp = tmp_path_factory.mktemp("paper_flow")
    scorer = tmp / "scorer"
    save_tiny_model(scorer)
    seeds = tmp / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": s}) + "\n" for s in SEEDS))
    requests: list[str] = []

    def teacher(messages: list[dict]) -> str:
        requests.append(messages[-1]["content"])
        if messages[-1]["content"].startswith("Based on the prompt’s existing background"):  # B.4
            if sum(r.startswith("Based on the prompt’s existing background") for r in requests) == 1:
                return "I cannot fuse these two prompts."  # the first fusion fails to parse
        return paper_teacher(messages)

    with FaultInjectingOpenAIServer(responder=teacher) as srv:
        job = parse_job({
            "kind": "tacie", "name": "paper-flow", "seed": 11,
            # no declared domain: the root domain of every item is the source's, the domain most of its
            # rows read as (two code seeds, one general), not each row's own
            "seeds": [{"path": str(seeds), "name": "mixed"}],
            "teacher": openai_teacher(srv.base_url),
            "collection": {"cluster": False, "diversify": 3},
            # a tiny random Llama as the scorer, N_U = 2: this test is about the templates, not the scores
            "scorer": {"backend": "hf", "model": str(scorer), "num_perturbations": 2, "max_length": 96, "batch_size": 16},
            "evolution": {"rounds": 1},  # M_d = M_f = a sixth of round 0's 12 items = 2
            "filters": {"decontaminate": [], "near_duplicate_threshold": None},
            "output_dir": str(tmp / "run"),
        })
        manifest = run_tacie(job)
    items = pq.read_table(tmp / "run/paper-flow.parquet").to_pylist()
    return manifest, items, requests


def test_round_zero_follows_appendix_b(paper_run):
    manifest, items, requests = paper_run
    kinds = [("B.1" if r.startswith("Given a prompt") else "B.2" if r.startswith("**For the provided") else "other")
             for r in requests]
    # every seed is decomposed before any diversification request is made, and B.2 shows its elements
    first_b2 = kinds.index("B.2")
    assert kinds[:first_b2].count("B.1") == len(SEEDS)
    b2 = [r for r in requests if r.startswith("**For the provided")]
    assert len(b2) == len(SEEDS)
    for seed in SEEDS:
        (req,) = [r for r in b2 if f"**Given Prompt:**\n{seed}\n" in r]
        assert f"**Background Settings:**\nN/A\n\n**Objectives:**\n1.{seed}\n\n**Constraints:**\n1.The answer should be correct." in req
    # ten asked for, three kept per seed: the most mutually dissimilar, unlike the seed
    assert manifest["diversification"] == {
        "template": "tacie_diversify@v2", "seeds": len(SEEDS), "generated": 10 * len(SEEDS), "kept": 3 * len(SEEDS),
        "kept_per_seed": 3, "selection": "most mutually dissimilar (embedding)", "skipped_undecomposed": 0}
    by_id = {it["id"]: it for it in items}
    for seed_item in (it for it in items if it["operation"] == "seed"):
        kids = [it["instruction"] for it in items if it["operation"] == "diversify" and it["parent_ids"] == [seed_item["id"]]]
        tag = _tag(seed_item["instruction"])
        offered = [f"Write a program that {task} ({tag}{k})." for k, task in enumerate(NEW_TASKS, 1)]
        X = embed_texts(offered, EmbeddingConfig())
        expect = most_dissimilar(np.asarray(by_id[seed_item["id"]]["embedding"]), X, 3)
        assert kids == [offered[i] for i in expect]
        # the diversified prompts were decomposed after they were written
        for it in items:
            if it["instruction"] in kids:
                assert it["decomposition_outcome"] == "ok" and it["objectives"] == [it["instruction"]]


def test_evolution_uses_the_one_depth_template_and_b4(paper_run):
    manifest, items, requests = paper_run
    assert set(manifest["templates"]) == {"diversify", "decompose", "fusion", "response", "depth"}
    assert manifest["templates"]["depth"] == {**manifest["templates"]["depth"], "ref": "tacie_depth@v2", "source": "paper"}
    evolved = [it for it in items if it["round"] == 1]
    ops = sorted(it["operation"] for it in evolved)
    assert ops.count("depth") == 2 and len(ops) == 3, ops  # one of the two fusions did not parse
    for it in evolved:
        if it["operation"] == "depth":
            assert it["instruction"].endswith("The answer must also handle empty input.")
            assert it["constraints"] == ["The answer should be correct.", "The answer must handle empty input."]
        else:
            assert it["instruction"].startswith("Solve both parts of this combined task")
            assert len(it["objectives"]) == 2 and it["background"] == []
    # B.3 is sent with the parent's prompt and elements in Appendix B's layout
    b3 = [r for r in requests if r.startswith("Based on a prompt’s existing background")]
    assert len(b3) == 2 and all(re.search(r"### Original\n\n\*\*Prompt:\*\*\n.+\n\n\*\*Background Settings:\*\*\n", r) for r in b3)


def test_round_amounts_root_domains_and_eq7_counts(paper_run):
    manifest, items, requests = paper_run
    metrics = manifest["counts"]
    round0 = sum(it["round"] == 0 and bool(it["response"]) for it in items)
    assert round0 == 12 and metrics["by_round"]["0"] == 12
    run_dir = manifest["config"]["output_dir"]
    rounds = json.loads((__import__("pathlib").Path(run_dir) / "metrics.json").read_text())["rounds"]
    draws = rounds[1]["draws"]
    assert (draws["m_d"], draws["m_f"], draws["depth"], draws["fusion"]) == (2, 2, 2, 2)
    # one source: one root domain for every item, whatever its own row was detected as
    assert sorted(it["domain"] for it in items if it["operation"] == "seed") == ["code", "code", "general"]
    assert {it["root_domain"] for it in items} == {"code"} and manifest["root_domains"] == {"mixed": "code"}
    attempts = pq.read_table(__import__("pathlib").Path(run_dir) / "attempts.parquet").to_pylist()
    fusions = [a for a in attempts if a["operation"].startswith("fusion")]
    assert len(fusions) == 2 and sorted(a["outcome"] for a in fusions) == ["ok", "parse_error"]
    by_id = {it["id"]: it for it in items}
    for it in items:  # eq. 7's n_c: every fusion drawn, the failed one included
        assert it["n_fusions"] == sum(it["id"] in a["parent_ids"] for a in fusions)
    (child,) = [it for it in items if it["operation"].startswith("fusion")]
    parents = [by_id[p] for p in child["parent_ids"]]
    assert child["n_objectives"] == sum(max(1, len(p["objectives"])) for p in parents) == 2
