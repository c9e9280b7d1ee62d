"""Scorer backend: a transformers causal LM in this process (CPU or GPU).

Sequences are sorted by length and run ``batch_size`` at a time, right-padded
(under a causal mask a real token never sees the padding after it, so padding
does not change its scores). The decoder runs over whole sequences, but the
vocabulary projection and log-softmax only over the positions that predict a
response token, ``HEAD_ROWS`` at a time: with Gemma 3's 262k-token vocabulary
full logits would take 1 MB per position in fp32.

torch and transformers are imported where they are used, not here: importing the
backend (``registry`` does, to name the backends) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray_pipeline.methods.tacie.config import ScorerConfig
from ray_pipeline.core.errors import ConfigError, typed_line
from ray_pipeline.methods.tacie.uncertainty.scorer import Encoded, Scorer

if TYPE_CHECKING:
    import torch

#: positions projected onto the vocabulary at once
HEAD_ROWS = 512

_DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """auto: bf16 on a GPU, fp32 on a CPU."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype not in _DTYPES:
        raise KeyError(dtype)
    return getattr(torch, dtype)


class HFScorer(Scorer):
    """``AutoModelForCausalLM``, loaded once; ``_score`` runs it under ``torch.inference_mode``."""

    def __init__(self, cfg: ScorerConfig):
        from transformers import AutoModelForCausalLM

        super().__init__(cfg)
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        try:
            lm = AutoModelForCausalLM.from_pretrained(self.model.path, dtype=self.dtype)
            self.lm: Any = lm.to(self.device).eval()
        except Exception as err:  # noqa: BLE001 - one line for the user
            raise ConfigError(f"scorer.model: cannot load {self.model.path}: {typed_line(err)}") from None
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._softcap = getattr(self.lm.config, "final_logit_softcapping", None)
        self._check_head()

    def _score(self, sequences: list[Encoded]) -> list[list[float]]:
        import torch

        out: list[list[float]] = [[] for _ in sequences]
        todo = sorted((i for i, s in enumerate(sequences) if len(s.ids) > s.start), key=lambda i: len(sequences[i].ids))
        size = self.cfg.batch_size
        with torch.inference_mode():
            for b in range(0, len(todo), size):
                chunk = todo[b : b + size]
                for i, lp in zip(chunk, self._batch([sequences[i] for i in chunk])):
                    out[i] = lp
        return out

    def _batch(self, seqs: list[Encoded]) -> list[list[float]]:
        import torch

        width = max(len(s.ids) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s.ids)] = torch.tensor(s.ids)
            mask[row, : len(s.ids)] = 1
        hidden = self.lm.get_decoder()(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
        ).last_hidden_state
        # position t-1 predicts token t: the response tokens ids[start:] are predicted by [start-1, len-1)
        rows = torch.cat([torch.full((len(s.ids) - s.start,), r) for r, s in enumerate(seqs)])
        cols = torch.cat([torch.arange(s.start - 1, len(s.ids) - 1) for s in seqs])
        targets = ids[rows, cols + 1].to(self.device)
        picked = hidden[rows.to(self.device), cols.to(self.device)]
        logprobs = torch.cat(
            [self._token_logprobs(picked[k : k + HEAD_ROWS], targets[k : k + HEAD_ROWS]) for k in range(0, len(picked), HEAD_ROWS)]
        ).tolist()
        out, k = [], 0
        for s in seqs:
            n = len(s.ids) - s.start
            out.append(logprobs[k : k + n])
            k += n
        return out

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        logits = self.lm.get_output_embeddings()(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _token_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch

        logits = self._logits(hidden)
        return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)

    def _check_head(self) -> None:
        """Our logits (output embeddings + soft-capping) must be the model's own: else refuse the model."""
        import torch

        ids = torch.tensor([self._prompt_ids("Check the output head.")], device=self.device)
        with torch.inference_mode():
            expected = self.lm(input_ids=ids).logits[0].float()
            ours = self._logits(self.lm.get_decoder()(input_ids=ids).last_hidden_state[0])
        if not torch.allclose(ours, expected, rtol=1e-3, atol=1e-3):
            raise ConfigError(
                f"scorer.model: {self.model.path}: its logits are not output-embeddings(+soft-capping); "
                "use scorer.backend: vllm for this model"
            )

    def close(self) -> None:
        import torch

        self.lm = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
