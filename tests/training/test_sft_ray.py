"""SFT end to end through `fusion run` on a real local Ray: Ray Train workers, checkpoints, resume, outputs.

A tiny Llama built from a config in the test (no download) is trained by 2 Ray Train workers
(DDP over gloo, then DeepSpeed ZeRO-3); the embedded Gemma 3 270M is fine-tuned by 1 worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, fusion_cli, read_jsonl
from tests.sft_helpers import save_tiny_model, seed_rows

pytestmark = pytest.mark.ray

QUICKSTART_SEEDS = REPO / "ray_pipeline/data/seeds/quickstart.jsonl"


def write_job(directory: Path, **job) -> Path:
    path = directory / f"{job['name']}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft")
    save_tiny_model(root / "tiny")
    (root / "extra.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": r["instruction"]},
                                 {"role": "assistant", "content": r["output"]}]}) + "\n" for r in seed_rows()))
    return root


def tiny_job(workdir: Path, name: str, **training) -> Path:
    return write_job(
        workdir, kind="sft", name=name, seed=3,
        model={"path": str(workdir / "tiny")},
        data={"sources": [{"path": str(QUICKSTART_SEEDS), "name": "seeds"},
                          {"path": str(workdir / "extra.jsonl"), "name": "extra", "fraction": 2}],
              "max_seq_len": 384},
        training={"learning_rate": 3e-3, "lr_scheduler": "constant", "warmup_ratio": 0.0, "epochs": 3,
                  "global_batch_size": 8, "per_device_batch_size": 2, "precision": "fp32", "save_steps": 2, **training},
        scaling={"num_workers": 2},
        output_dir=str(workdir / name),
    )


@pytest.fixture(scope="module")
def ddp_run(workdir, shared_ray) -> tuple:
    """Crash after step 3 (a checkpoint exists at step 2), then run the same job again.

    The crashed run starts a local Ray from nothing (and its fault variable must reach its Ray Train workers,
    which a shared head's workers would not inherit); the rerun and the other jobs join the session's Ray head."""
    job = tiny_job(workdir, "ddp")
    crashed = fusion_cli("run", str(job), timeout=600, extra_env={"FUSION_FAULT_SFT_FAIL_AFTER_STEP": "3"})
    resumed = fusion_cli("run", str(job), timeout=600, ray_address=shared_ray)
    return workdir / "ddp", crashed.returncode, crashed.stderr, resumed


def test_a_failed_worker_is_one_line_and_the_rerun_resumes(ddp_run):
    run, code, stderr, resumed = ddp_run
    errors = [line for line in stderr.splitlines() if line.startswith("fusion: error:")]
    assert code == 2 and len(errors) == 1, stderr[-3000:]
    assert "training failed: RuntimeError: fault injection: stopping after step 3" in errors[0]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint at step 2 of" in resumed.stdout + resumed.stderr
    steps = read_jsonl(run / "metrics.jsonl")
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    # 24 seeds + 16 extra = 40 sequences, 8 per step: 5 steps per epoch, 3 epochs
    assert len(steps) == 15 and {s["epoch"] for s in steps} == {1, 2, 3}
    assert all(s["trainable_tokens"] > 0 for s in steps)


def test_outputs_loss_curve_and_a_reloadable_model(ddp_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, *_ = ddp_run
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert manifest["model"]["strategy"] == "ddp" and metrics["workers"] == 2
    assert metrics["gradient_accumulation_steps"] == 2 and metrics["global_batch_size"] == 8
    assert metrics["final_loss"] < 0.8 * metrics["first_loss"]
    mix = {s["label"]: s for s in manifest["data"]["sources"]}
    assert mix["seeds"]["rows_taken"] == 24 and mix["extra"]["rows_taken"] == 16
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "data" / "sequences.parquet").is_file()
    model_dir = run / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(run.parent / "tiny").eval()
    assert tokenizer.chat_template, "the chat template travels with the model"
    row = seed_rows()[0]
    messages = [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["output"]}]
    ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        tuned_loss = model(input_ids=ids, labels=ids).loss.item()
        base_loss = base(input_ids=ids, labels=ids).loss.item()
    assert tuned_loss < base_loss  # it learned its training data
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_zero3_partitions_the_model_and_matches_ddp(workdir, ddp_run, shared_ray):
    result = fusion_cli("run", str(tiny_job(workdir, "zero3", strategy="deepspeed_zero3")), timeout=600,
                        ray_address=shared_ray)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((workdir / "zero3" / "metrics.json").read_text())
    assert metrics["params_rank0_at_load"] < metrics["params_total"]  # no rank loaded the whole model
    ddp = read_jsonl(workdir / "ddp" / "metrics.jsonl")
    zero3 = read_jsonl(workdir / "zero3" / "metrics.jsonl")
    assert len(ddp) == len(zero3)
    for a, b in zip(ddp, zero3):  # same data order and the same token-weighted loss: the same training
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3), a["step"]
    assert (workdir / "zero3" / "model" / "model.safetensors").is_file()


def test_gemma_270m_fine_tunes_with_one_worker(tmp_path, shared_ray):
    """The bundled Gemma 3 270M (from the GGUF package), bf16 mixed precision, 2 steps on the same batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = write_job(
        tmp_path, kind="sft", name="gemma", model={"path": "embedded"},
        data={"sources": [{"path": str(QUICKSTART_SEEDS), "limit": 4}], "max_seq_len": 128},
        training={"learning_rate": 5e-5, "lr_scheduler": "constant", "warmup_ratio": 0.0, "epochs": 2,
                  "global_batch_size": 4, "per_device_batch_size": 2, "precision": "bf16"},
        scaling={"num_workers": 1, "cpus_per_worker": 2},
        output_dir=str(tmp_path / "gemma"),
    )
    result = fusion_cli("run", str(job), timeout=900, ray_address=shared_ray)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = read_jsonl(tmp_path / "gemma" / "metrics.jsonl")
    assert len(steps) == 2 and steps[-1]["loss"] < steps[0]["loss"]  # the same 4 examples twice
    model_dir = tmp_path / "gemma" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["dtype"] == "bfloat16"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Write a Python function that adds two numbers."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert prompt["input_ids"][0, 0].item() == tokenizer.bos_token_id
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
