"""all-MiniLM-L6-v2 embeddings, offline, and the chain seeds -> embeddings -> clusters -> diversity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from ray_pipeline.analysis import embeddings
from ray_pipeline.analysis.clustering import pick_per_source
from ray_pipeline.core.config import EmbeddingConfig
from ray_pipeline.analysis.diversity import diversity_u
from ray_pipeline.analysis.embeddings import EmbedStage, Embedder, cached_embedder, embed_texts
from ray_pipeline.core.errors import ConfigError
from tests.conftest import CODE_ALPACA, GSM8K_TRAIN, require_shared

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small encode/k-means calls on a few shared cores are many times slower with OpenMP threads spinning."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


PARAPHRASES = ("Write a Python function that reverses a string.", "Create a Python function to reverse a given string.")
MATH = "Tom has 3 apples and buys 5 more. How many apples does he have now?"


CFG = EmbeddingConfig(batch_size=16)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return cached_embedder(CFG)


def test_unit_norm_float32_384(embedder):
    X = embedder.encode([*PARAPHRASES, MATH, "x" * 3000])  # a text past the model's 256-token limit too
    assert X.shape == (4, 384) and X.dtype == np.float32
    assert np.linalg.norm(X, axis=1) == pytest.approx(np.ones(4), abs=1e-5)
    empty = embedder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_paraphrases_are_closer_than_code_and_math(embedder):
    a, b, m = embedder.encode([*PARAPHRASES, MATH])
    assert float(a @ b) > 0.8
    assert 1 - float(a @ b) < 1 - float(a @ m)
    assert 1 - float(a @ b) < 1 - float(b @ m)


def test_embed_stage_adds_a_float32_vector_per_row(embedder):
    stage = EmbedStage.__new__(EmbedStage)  # reuse the loaded model instead of loading it again
    stage.embedder, stage.text_column = embedder, "instruction"
    batch = pd.DataFrame({"id": ["a", "b", "c"], "instruction": [*PARAPHRASES, MATH]})
    out = stage(batch)
    assert list(out.columns) == ["id", "instruction", "embedding"] and "embedding" not in batch
    assert all(v.dtype == np.float32 and v.shape == (384,) for v in out["embedding"])
    assert np.stack(out["embedding"].tolist()) == pytest.approx(embedder.encode([*PARAPHRASES, MATH]), abs=1e-6)


def test_embed_texts_loads_the_model_once(embedder):
    before = embeddings._load.cache_info()
    first = embed_texts([MATH], CFG)
    second = embed_texts([MATH, PARAPHRASES[0]], EmbeddingConfig(batch_size=16))
    after = embeddings._load.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2  # no new load
    assert cached_embedder(EmbeddingConfig(batch_size=16)) is embedder
    assert second[0] == pytest.approx(first[0], abs=1e-6)


def test_unknown_or_broken_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^embedding.model 'no-such-model': not a local sentence-transformers directory"):
        Embedder(EmbeddingConfig(model="no-such-model"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        Embedder(EmbeddingConfig(model=str(tmp_path)))
    assert str(err.value).startswith(f"embedding.model '{tmp_path}': cannot load {tmp_path}: ")
    assert "\n" not in str(err.value)


def test_cuda_without_a_gpu_is_an_error():
    import torch

    if torch.cuda.is_available():
        assert embeddings.resolve_device("auto") == "cuda"
    else:
        assert embeddings.resolve_device("auto") == "cpu"
        with pytest.raises(ConfigError, match="embedding.device 'cuda': no CUDA device is available"):
            embeddings.resolve_device("cuda")


def test_real_seeds_cluster_per_source(embedder):
    """Code Alpaca and GSM8K seeds, embedded for real: sources stay apart, each gets several seeds."""
    require_shared()
    code = [row["instruction"] for row in json.loads(CODE_ALPACA.read_text())[:30]]
    with GSM8K_TRAIN.open() as fh:
        math = [json.loads(next(fh))["question"] for _ in range(30)]
    texts = [t for pair in zip(code, math) for t in pair]  # interleaved sources
    sources = ["code_alpaca", "gsm8k"] * 30
    X = embedder.encode(texts)
    assert X.shape == (60, 384)
    assert np.linalg.norm(X, axis=1) == pytest.approx(np.ones(60), abs=1e-5)
    results = pick_per_source(X, sources, k_min=2, k_max=8, seed=0)
    assert set(results) == {"code_alpaca", "gsm8k"}
    for name, result in results.items():
        assert len(result.chosen) >= 2 and len(result.chosen) == result.k
        assert all(sources[i] == name for i in result.chosen)
    # The two sources are far apart: the mean cross-source similarity is below both within-source means.
    S = X @ X.T
    code_rows, math_rows = np.arange(0, 60, 2), np.arange(1, 60, 2)
    cross = S[np.ix_(code_rows, math_rows)].mean()
    assert cross < S[np.ix_(code_rows, code_rows)].mean() and cross < S[np.ix_(math_rows, math_rows)].mean()
    assert 0 < diversity_u(X) < 1
