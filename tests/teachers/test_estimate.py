"""The cost estimate (``teachers/estimate.py`` and each method's): hand-computed figures for tiny jobs, and
``fusion validate``'s section. Fast: no Ray, no teacher."""

from __future__ import annotations

import json
import math

import pytest

from ray_pipeline.core.config import (
    EmbeddedTeacherConfig,
    OpenAITeacherConfig,
    PriceConfig,
    RayConfig,
    VLLMTeacherConfig,
)
from ray_pipeline.jobs import load_job, parse_job, validate_job
from ray_pipeline.prompts import load_template
from ray_pipeline.teachers.estimate import (
    Assumptions,
    Capacity,
    PRIOR_PASS_RATE,
    beside_actual,
    expected_attempts,
    phase,
)
from tests.conftest import REPO

PRICE = {"prompt_per_million": 1.0, "completion_per_million": 2.0}


def _chars(ref: str, **values: str) -> tuple[int, int]:
    """(characters, messages) of a template rendered with ``values`` (empty strings: its fixed text)."""
    messages = load_template(ref).render(**values)
    return sum(len(m["content"]) for m in messages), len(messages)


def _seed_file(tmp_path, n=6):
    """n seeds, each instruction exactly 40 characters and each answer exactly 80, no input."""
    rows = [{"instruction": f"Write function number {i:02d} for the task.".ljust(40, "x")[:40],
             "input": "", "output": "y" * 80} for i in range(n)]
    assert all(len(r["instruction"]) == 40 for r in rows)
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _if_job(tmp_path, **extra):
    data = {
        "kind": "instruction_fusion", "name": "tiny", "seed": 3,
        "seeds": [{"path": str(_seed_file(tmp_path))}],
        "teacher": {"kind": "openai", "model": "tiny-model", "concurrency": 4, "requests_per_minute": 60,
                    "price": PRICE},
        "ray": {"num_actors": 2},
        "fusion": {"num_instructions": 4, "max_attempts": 10, "template": "if_fusion@v1",
                   "sampling": {"max_tokens": 160}},
        "response": {"template": "if_response@v1", "sampling": {"max_tokens": 256}},
        "estimate": {"pass_rate": 0.5, "latency_s": 2.0},
        "output_dir": str(tmp_path / "run"),
        **extra,
    }
    return parse_job(data)


# ------------------------------------------------------------------ the shared arithmetic
def test_the_expected_fusion_loop_draws_until_m_pass_and_no_further():
    # a perfect teacher: M calls (the streaming loop draws none that M valid ones make needless)
    assert PRIOR_PASS_RATE == 0.8
    assert expected_attempts(4000, 1.0, 16000) == (4000, 4000.0)
    # at 0.5: M / p; at the prior, 4,000 / 0.8
    assert expected_attempts(4, 0.5, 10) == (8, 4.0)
    assert expected_attempts(4000, PRIOR_PASS_RATE, 16000) == (5000, 4000.0)
    assert expected_attempts(3, 0.7, 100) == (5, 3.0)  # ceil(4.29)
    # the budget, then the allowed pairs, stop it short
    assert expected_attempts(10, 0.1, 20) == (20, pytest.approx(2.0))
    assert expected_attempts(10, 0.5, 40, available=6) == (6, 3.0)
    assert expected_attempts(10, 0.0, 40) == (40, 0.0)


def test_a_phase_is_paced_by_the_slowest_of_concurrency_and_the_rate_limits():
    assume = Assumptions()  # latency: 1 s + completion / 40 tokens/s
    cap = Capacity("m", PriceConfig(**PRICE), in_flight=10, tokens_per_minute=60_000)
    p = phase("x", cap, assume, calls=100, calls_max=120, prompt=300, completion=100, max_tokens=200)
    # 60,000 tokens a minute over 400 a call: 2.5 calls/s; 10 in flight over 3.5 s: 2.86 calls/s
    assert p.paced_by == "tokens_per_minute" and p.wall_s == pytest.approx(100 / 2.5)
    assert (p.prompt_tokens, p.completion_tokens) == (30_000, 10_000)
    assert (p.prompt_tokens_max, p.completion_tokens_max) == (120 * 300, 120 * 200)
    assert p.usd == pytest.approx((30_000 * 1 + 10_000 * 2) / 1e6)
    assert p.usd_max == pytest.approx((36_000 * 1 + 24_000 * 2) / 1e6)
    slow = phase("x", Capacity("m", PriceConfig(), in_flight=5, tokens_per_minute=60_000), assume, calls=100,
                 calls_max=100, prompt=300, completion=100, max_tokens=200)
    assert slow.paced_by == "concurrency" and slow.wall_s == pytest.approx(100 / (5 / 3.5))
    unknown = phase("x", cap, assume, calls=10, calls_max=10, prompt=None, completion=None, max_tokens=200)
    assert unknown.usd is None and unknown.wall_s is None and unknown.completion_tokens_max == 2000


def test_capacity_counts_every_actor_and_the_smaller_of_batch_and_concurrency():
    ray = RayConfig(num_actors=4, batch_size=16)
    cap = Capacity.of(OpenAITeacherConfig(model="gpt-4o-mini", concurrency=32, requests_per_minute=100,
                                          tokens_per_minute=1000), ray)
    assert (cap.in_flight, cap.requests_per_minute, cap.tokens_per_minute) == (64, 400, 4000)
    assert cap.price.prompt_per_million == 0.15 and cap.notes(Assumptions()) == ()
    embedded = Capacity.of(EmbeddedTeacherConfig(), RayConfig(num_actors=2))
    assert embedded.in_flight == 128 and embedded.price.prompt_per_million == 0.0
    assert "estimate.latency_s" in embedded.notes(Assumptions())[0]
    assert embedded.notes(Assumptions(latency_s=3.0)) == ()
    # a vLLM engine takes whole batches of 64: its stage actor keeps two in flight (teachers.pool)
    assert Capacity.of(VLLMTeacherConfig(model="/m"), RayConfig()).in_flight == 128


def test_the_manifest_puts_the_estimate_beside_what_was_spent():
    est = {"calls": {"expected": 3, "at_most": 5}}
    got = beside_actual(est, {"fusion": 4, "response": 2}, {"prompt": 100, "completion": 50}, 0.123456, 12.34)
    assert got["calls"] == est["calls"]
    assert got["actual"] == {"calls": 6, "calls_by_phase": {"fusion": 4, "response": 2}, "prompt_tokens": 100,
                             "completion_tokens": 50, "usd": 0.1235, "wall_s": 12.3}
    assert beside_actual(None, {}, {"prompt": 0, "completion": 0}, 0.0, 0.0) is None


def test_validate_says_the_estimate_in_one_line(tmp_path):
    from ray_pipeline.methods.fusion.estimate import fusion_estimate
    from ray_pipeline.teachers.estimate import summary_line

    job = _if_job(tmp_path, fusion={"num_instructions": 2000})  # at 0.5: 4,000 fusions, 2,000 responses
    est = fusion_estimate(job, None).to_dict()
    assert summary_line(est) == ("estimate: 6,000 teacher calls (at most 10,000); tokens, dollars and time need "
                                 "inputs that are not here (the estimate's notes)")
    est.update(prompt_tokens={"expected": 1234567}, completion_tokens={"expected": 89},
               usd={"expected": 1234.5, "at_most": 99999.999}, wall_s={"expected": 3600.4})
    assert summary_line(est) == ("estimate: 6,000 teacher calls (at most 10,000), 1,234,567 prompt + 89 completion "
                                 "tokens, $1,234.50 (at most $100,000.00), 3,600 s")


# ------------------------------------------------------------------ Instruction Fusion
def test_a_tiny_instruction_fusion_job_by_hand(tmp_path):
    from ray_pipeline.core.seeds import load_seeds
    from ray_pipeline.methods.fusion.estimate import FUSED_INSTRUCTION_GROWTH, FUSED_RESPONSE_GROWTH, fusion_estimate

    job = _if_job(tmp_path)
    est = fusion_estimate(job, load_seeds(job.seeds, job.seed).records).to_dict()

    f_chars, f_msgs = _chars("if_fusion@v1", instruction_1="", instruction_2="")
    r_chars, r_msgs = _chars("if_response@v1", instruction="")
    fusion_prompt = (f_chars + 2 * 40) // 4 + 4 * f_msgs  # every pair renders to the same length
    fused = FUSED_INSTRUCTION_GROWTH * (40 // 4)  # 1.2 x a seed's 10 tokens
    response_prompt = r_chars // 4 + 4 * r_msgs + fused
    answer = FUSED_RESPONSE_GROWTH * (80 // 4)  # 1.6 x a seed answer's 20 tokens
    # pass rate 0.5: 4 / 0.5 = 8 fusion calls (expected_attempts), 4 responses; at most the budget, 10, and M, 4
    fusion = est["phases"]["fusion"]
    response = est["phases"]["response"]
    assert (fusion["calls"], fusion["calls_at_most"], response["calls"], response["calls_at_most"]) == (8, 10, 4, 4)
    prompt = 8 * fusion_prompt + 4 * response_prompt
    completion = 8 * fused + 4 * answer
    assert est["calls"] == {"expected": 12, "at_most": 14}
    assert est["prompt_tokens"]["expected"] == round(prompt)
    assert est["completion_tokens"]["expected"] == round(completion)
    assert est["prompt_tokens"]["at_most"] == 10 * fusion_prompt + 4 * (r_chars // 4 + 4 * r_msgs + 160)
    assert est["completion_tokens"]["at_most"] == 10 * 160 + 4 * 256
    assert est["usd"]["expected"] == round((prompt * 1.0 + completion * 2.0) / 1e6, 4)
    # 4 in flight x 2 actors over 2 s = 4 calls/s; 60 requests a minute x 2 actors = 2 calls/s: the limit paces
    assert fusion["paced_by"] == response["paced_by"] == "requests_per_minute"
    assert est["wall_s"]["expected"] == 8 / 2 + 4 / 2
    assert est["assumptions"]["pass_rate"] == 0.5 and "4 characters a token" in est["assumptions"]["tokenizer"]


def test_without_the_seeds_the_estimate_counts_calls_only(tmp_path):
    from ray_pipeline.methods.fusion.estimate import fusion_estimate

    est = fusion_estimate(_if_job(tmp_path, estimate={}), None).to_dict()
    assert est["calls"] == {"expected": 5 + 4, "at_most": 10 + 4}  # ceil(4 / 0.8) fusions at the prior
    assert est["usd"] == {"expected": None, "at_most": None} and est["wall_s"] == {"expected": None}
    assert est["completion_tokens"]["at_most"] == 10 * 160 + 4 * 256
    assert "no seed source is here" in est["notes"][0]


def test_validate_prints_the_estimate(tmp_path):
    report = validate_job(load_job(REPO / "jobs" / "quickstart.yaml"))
    est = report["estimate"]
    # M = 8 at the prior 0.8: ceil(8 / 0.8) = 10 fusion calls (at most max_attempts 48), 8 responses
    assert est["phases"]["fusion"]["calls"] == 10 and est["phases"]["fusion"]["calls_at_most"] == 48
    assert est["calls"] == {"expected": 18, "at_most": 56}
    assert est["usd"] == {"expected": 0.0, "at_most": 0.0}  # the embedded model costs nothing
    assert est["prompt_tokens"]["expected"] > 0 and est["wall_s"]["expected"] > 0
    assert any("embedded teacher" in note for note in est["notes"])
    # partial: a source that is not here; the estimate is over the one that is
    seeds = [{"hf": "nobody-here/no-such-dataset-xyz"}, {"path": str(_seed_file(tmp_path))}]
    job = _if_job(tmp_path, seeds=seeds)
    report = validate_job(job)
    assert report["offline_check"].startswith("partial")
    assert report["estimate"]["calls"]["expected"] == 12 and report["estimate"]["usd"]["expected"] > 0
    assert "seed sources here only (1 of 2)" in " ".join(report["estimate"]["notes"])


# ------------------------------------------------------------------ TaCIE
def _tacie_job(tmp_path, **extra):
    data = {
        "kind": "tacie", "name": "tiny", "seed": 1,
        "seeds": [{"path": str(_seed_file(tmp_path)), "domain": "code"}],
        "teacher": {"kind": "openai", "model": "tiny-model", "price": PRICE},
        "collection": {"cluster": False, "diversify": 2},  # tacie_diversify@v2: takes the seed's elements
        "evolution": {"rounds": 2},
        "response": {"sampling": {"max_tokens": 256}},
        "filters": {"decontaminate": []},
        "estimate": {"pass_rate": 0.5},
        **extra,
    }
    return parse_job(data)


def test_a_tiny_tacie_job_by_hand(tmp_path):
    from ray_pipeline.core.seeds import load_seeds
    from ray_pipeline.methods.tacie.estimate import tacie_estimate
    from ray_pipeline.methods.tacie.preflight import job_templates

    job = _tacie_job(tmp_path)
    est = tacie_estimate(job, job_templates(job), load_seeds(job.seeds, job.seed).records).to_dict()
    calls = {name: (p["calls"], p["calls_at_most"]) for name, p in est["phases"].items()}
    # 6 seeds (no clustering); 6 x 0.5 decomposed are diversified; 3 x 0.5 parse, 2 kept each: 3 new items,
    # decomposed too; round 0's pool 9, so M_d = M_f = ceil(9 / 6) = 2 a round, 2 rounds; responses 9 + 8 x 0.5.
    # At most: 6 + 12 items, M_d = M_f = ceil(18 / 6) = 3
    assert calls == {"decompose": (9, 18), "diversify": (3, 6), "depth": (4, 6), "fusion": (4, 6),
                     "response": (13, 30)}
    r_chars, r_msgs = _chars("tacie_response@v1", instruction="")
    response = est["phases"]["response"]
    assert response["prompt_tokens"] == 13 * ((r_chars + 40) // 4 + 4 * r_msgs)
    assert response["completion_tokens"] == 13 * (80 // 4)  # the seeds' answers
    assert response["completion_tokens_at_most"] == 30 * 256


def test_tacie_without_seeds_counts_calls_when_every_source_gives_its_clusters(tmp_path):
    from ray_pipeline.methods.tacie.estimate import tacie_estimate
    from ray_pipeline.methods.tacie.preflight import job_templates

    seeds = [{"hf": "a/b", "clusters": 30}, {"hf": "c/d", "clusters": 10}]
    job = _tacie_job(tmp_path, seeds=seeds, collection={"diversify": 3}, estimate={})
    est = tacie_estimate(job, job_templates(job), None).to_dict()
    # 40 chosen; 40 x 0.8 diversified, x 0.8 x 3 kept: 76.8 new; pool 117, M_d = M_f = ceil(117 / 6) = 20
    assert est["phases"]["diversify"]["calls"] == 32 and est["phases"]["decompose"]["calls"] == round(40 + 76.8)
    assert est["phases"]["depth"]["calls"] == 2 * 20 and est["phases"]["response"]["calls_at_most"] == 160 + 2 * 54
    assert est["usd"]["expected"] is None
    job = _tacie_job(tmp_path, seeds=[{"hf": "a/b"}])  # the elbow's k needs the seeds
    assert tacie_estimate(job, job_templates(job), None) is None


# ------------------------------------------------------------------ evaluation
def test_a_tiny_eval_job_by_hand():
    from ray_pipeline.evaluation.estimate import eval_estimate
    from ray_pipeline.evaluation.mt_bench import judge_messages
    from ray_pipeline.evaluation.problems import Problem

    job = parse_job({
        "kind": "eval", "name": "tiny",
        "models": [{"label": "m", "backend": {"kind": "openai", "model": "gpt-4o-mini"}, "prompt": "chat"}],
        "benchmarks": [{"name": "ifeval", "max_tokens": 100},
                       {"name": "mt_bench", "max_tokens": 200, "judge": "gpt-4", "judge_max_tokens": 300}],
        "estimate": {"latency_s": 1.0},
    })
    ifeval = [Problem("ifeval", "", str(i), "p" * 400) for i in range(2)]
    turns = ["q" * 80, "r" * 120]
    mt = Problem("mt_bench", "", "81", turns[0], meta={"category": "writing", "turns": turns, "reference": []})
    est = eval_estimate(job, ifeval + [mt]).to_dict()
    gen, judge = est["phases"]["generation:m"], est["phases"]["judge"]
    # ifeval: 2 chats of one 400-character message, answers 50 (half of 100); MT-Bench: turn 1, 80 characters,
    # answer 100; turn 2: both questions, the first answer (empty in the render) and 4 tokens a message
    turn2 = (80 + 120) // 4 + 3 * 4 + 100
    assert gen["calls"] == 2 + 2 and gen["prompt_tokens"] == 2 * (100 + 4) + (20 + 4) + turn2
    assert gen["completion_tokens"] == 2 * 50 + 100 + 100
    assert gen["usd"] == round(((2 * 104 + 24 + turn2) * 0.15 + 300 * 0.60) / 1e6, 4)
    j1 = sum(len(m["content"]) for m in judge_messages(mt, 1, [""])[1]) // 4 + 2 * 4 + 100
    j2 = sum(len(m["content"]) for m in judge_messages(mt, 2, ["", ""])[1]) // 4 + 2 * 4 + 200
    assert judge["model"] == "gpt-4" and judge["calls"] == 2
    assert judge["prompt_tokens"] == j1 + j2 and judge["completion_tokens"] == 2 * 150
    assert judge["usd"] == round(((j1 + j2) * 30.0 + 300 * 60.0) / 1e6, 4)  # GPT-4's price
    # latency 1 s, 32 in flight: each call 1/32 s
    assert est["wall_s"]["expected"] == round(6 / 32, 1)


def test_the_estimate_section_is_no_part_of_the_config_hash(tmp_path):
    from ray_pipeline.core.config import job_to_dict
    from ray_pipeline.core.outputs import config_hash

    a, b = _if_job(tmp_path), _if_job(tmp_path, estimate={"pass_rate": 0.3})
    assert config_hash(job_to_dict(a)) == config_hash(job_to_dict(b))
    old = {k: v for k, v in job_to_dict(a).items() if k != "estimate"}  # a run directory from before the field
    assert config_hash(old) == config_hash(job_to_dict(a))
    assert math.isclose(b.estimate.pass_rate, 0.3)
