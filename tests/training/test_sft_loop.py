"""The training loop in one process (LocalSession, no Ray): loss normalisation, resume, LoRA, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sft_helpers import save_tiny_model, seed_rows

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def table(tiny):
    from transformers import AutoTokenizer

    from ray_pipeline.training.packing import sequences_table
    from ray_pipeline.training.sft_format import to_messages, tokenize_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    examples, stats = tokenize_examples([to_messages(r) for r in seed_rows()], tokenizer, "chat", 512)
    assert stats.examples_out == 8 and stats.truncated == 0
    return sequences_table(examples)


def spec(tiny: Path, **overrides):
    from ray_pipeline.training.loop import TrainSpec

    base = dict(model_path=str(tiny), strategy="ddp", precision="fp32", learning_rate=2e-3, lr_scheduler="constant",
                warmup_ratio=0.0, epochs=3, per_device_batch_size=4, gradient_accumulation_steps=1, pad_token_id=0,
                seed=5)
    base.update(overrides)
    return TrainSpec(**base)


def run(spec_, table, root: Path):
    from ray_pipeline.training.loop import train
    from ray_pipeline.training.session import LocalSession

    return train(spec_, table, LocalSession(root, keep=3))


def final_weights(root: Path):
    from safetensors.torch import load_file

    final = sorted(root.glob("checkpoint_*_final"))
    assert len(final) == 1, list(root.iterdir())
    return load_file(final[0] / "model" / "model.safetensors")


def test_gradient_accumulation_equals_one_large_batch(tiny, table, tmp_path):
    """4 micro-batches of 1 and 1 micro-batch of 4 give the same steps: the loss is a mean over the step's tokens."""
    lengths = table.column("num_trainable").to_pylist()
    assert len(set(lengths)) > 2, "examples of different lengths make a per-micro-batch mean differ"
    big = run(spec(tiny, per_device_batch_size=4, gradient_accumulation_steps=1), table, tmp_path / "big")
    small = run(spec(tiny, per_device_batch_size=1, gradient_accumulation_steps=4), table, tmp_path / "small")
    assert big.step == small.step == 6  # 8 sequences, 4 per step, 3 epochs
    for a, b in zip(big.history, small.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["trainable_tokens"] == b["trainable_tokens"]
    wa, wb = final_weights(tmp_path / "big"), final_weights(tmp_path / "small")
    for name in wa:
        assert (wa[name] - wb[name]).abs().max() < 1e-4, (name, float((wa[name] - wb[name]).abs().max()))
    losses = [h["loss"] for h in big.history]
    assert losses[-1] < 0.9 * losses[0]


def test_resume_follows_the_uninterrupted_run(tiny, table, tmp_path):
    """Crash after step 3 (checkpoint at 2), start again: the same losses and weights as a run that never stopped."""
    straight = run(spec(tiny, per_device_batch_size=2, save_steps=2), table, tmp_path / "straight")
    with pytest.raises(RuntimeError, match="fault injection"):
        run(spec(tiny, per_device_batch_size=2, save_steps=2, fail_after_step=3), table, tmp_path / "crashed")
    kept = sorted(p.name for p in (tmp_path / "crashed").iterdir())
    assert kept == ["checkpoint_step000002"]
    resumed = run(spec(tiny, per_device_batch_size=2, save_steps=2), table, tmp_path / "crashed")
    assert [h["step"] for h in resumed.history] == list(range(1, 13))
    for a, b in zip(straight.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["step"]
    wa, wb = final_weights(tmp_path / "straight"), final_weights(tmp_path / "crashed")
    assert all(torch.allclose(wa[n], wb[n], atol=1e-6) for n in wa)
    again = run(spec(tiny, per_device_batch_size=2, save_steps=2), table, tmp_path / "crashed")
    assert again.finished and again.step == 12 and len(again.history) == 12  # finished: nothing trained


def test_lora_trains_adapters_and_saves_a_merged_model(tiny, table, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    state = run(spec(tiny, lora=lora, learning_rate=1e-2, epochs=4), table, tmp_path / "lora")
    losses = [h["loss"] for h in state.history]
    assert losses[-1] < losses[0]
    assert state.history[0].get("mfu") is None and "tflops" not in state.history[0]  # no FLOPs claim for LoRA
    final = next((tmp_path / "lora").glob("checkpoint_*_final"))
    adapter = final / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    base, merged = load_file(tiny / "model.safetensors"), load_file(final / "model" / "model.safetensors")
    assert set(base) == set(merged)  # merged back into plain Llama weights: no lora_ keys
    changed = {n for n in base if not torch.allclose(base[n], merged[n])}
    assert changed and all(("q_proj" in n or "v_proj" in n) for n in changed)
    model = AutoModelForCausalLM.from_pretrained(final / "model")
    assert model.config.use_cache is True


def test_sequences_hold_the_table_rows_flat(table):
    from ray_pipeline.training.packing import Sequences

    seqs = Sequences.from_table(table.slice(1))  # a sliced table: offsets that do not start at 0
    rows = table.slice(1).to_pylist()
    assert len(seqs) == len(rows) == table.num_rows - 1
    for i, row in enumerate(rows):
        assert seqs.row(i) == {k: row[k] for k in ("input_ids", "labels", "position_ids")}
    assert seqs.num_trainable.tolist() == [r["num_trainable"] for r in rows]
    assert seqs.lengths.tolist() == [r["num_tokens"] for r in rows]
    plain = Sequences.from_lists([r["input_ids"] for r in rows], [r["labels"] for r in rows])
    assert all(plain.row(i) == seqs.row(i) for i in range(len(rows)))
    assert seqs.values["input_ids"].dtype.itemsize == 4


def test_lora_under_deepspeed_zero2_in_one_process(tiny, table, tmp_path, monkeypatch):
    """DeepSpeed (CPU accelerator, gloo) with bf16 and LoRA: trains, checkpoints, saves adapter and merged model."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    try:
        state = run(spec(tiny, strategy="deepspeed_zero2", precision="bf16", lora=lora, learning_rate=1e-2,
                         per_device_batch_size=2, gradient_accumulation_steps=2, save_steps=2), table, tmp_path / "ds")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    losses = [h["loss"] for h in state.history]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert all(h["grad_norm"] is not None for h in state.history)
    names = sorted(p.name for p in (tmp_path / "ds").iterdir())
    assert names == ["checkpoint_step000002", "checkpoint_step000004", "checkpoint_step000006_final"]
    assert (tmp_path / "ds" / "checkpoint_step000004" / "deepspeed" / "state").is_dir()  # DeepSpeed's own format
    final = tmp_path / "ds" / "checkpoint_step000006_final"
    assert (final / "adapter" / "adapter_config.json").is_file()
    config = json.loads((final / "model" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"


def test_packed_sequences_train(tiny, tmp_path):
    """Packing puts several examples in one sequence; the loop trains on packs like on examples."""
    from transformers import AutoTokenizer

    from ray_pipeline.training.packing import pack_examples, sequences_table
    from ray_pipeline.training.sft_format import to_messages, tokenize_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    examples, _ = tokenize_examples([to_messages(r) for r in seed_rows()], tokenizer, "chat", 256)
    packs = pack_examples(examples, 256)
    assert len(packs) < len(examples)
    packed = sequences_table(packs)
    assert sum(packed.column("num_trainable").to_pylist()) == sum(e.num_trainable for e in examples)
    state = run(spec(tiny, packed=True, per_device_batch_size=len(packs), epochs=6), packed, tmp_path / "packed")
    losses = [h["loss"] for h in state.history]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0]
    assert state.history[0]["trainable_tokens"] == sum(packed.column("num_trainable").to_pylist())
