"""The one scorer interface: per-token log-probabilities of a response given its instruction.

A scorer is the causal language model behind TaCIE's uncertainty (see
``ray_pipeline/methods/tacie/uncertainty/score.py``): for each (instruction, response) pair it
returns log p(r_t | prompt(c), r_<t) for every response token r_t. Prompt and
response are tokenized apart and joined as token ids, so the response boundary
is exact and both backends score the very same tokens:

* ``chat``: the tokenizer's chat template with one user message c and the
  generation prompt, then r;
* ``plain``: c, a blank line, then r (after the tokenizer's BOS token, if it has one).

Only response tokens are scored. When prompt + response exceed ``max_length``
tokens the response is cut (the instruction never is); a prompt that leaves no
room scores no tokens.

Backends (one short file each, each a subclass of ``Scorer``): ``hf``
(transformers, batched forward passes) and ``vllm`` (``prompt_logprobs`` of an
in-process ``vllm.LLM``); ``registry.build_scorer`` picks one by config. This
module imports neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple, Sequence

from ray_pipeline.methods.tacie.config import ScorerConfig
from ray_pipeline.core.errors import ConfigError, typed_line
from ray_pipeline.core.models import ResolvedModel
from ray_pipeline.core.models import check_causal_lm as _check_causal_lm
from ray_pipeline.core.models import resolve_model as resolve_causal_lm


class Encoded(NamedTuple):
    """One scored sequence: prompt + response token ids; the response starts at ``start``."""

    ids: list[int]
    start: int


def resolve_model(cfg: ScorerConfig) -> ResolvedModel:
    """The scorer model and its chat template (default: the bundled Gemma 3 270M and our template)."""
    return resolve_causal_lm(cfg.model, cfg.chat_template, "scorer.model", "scorer.chat_template")


class Scorer(ABC):
    """Tokenizer, prompt format and truncation, shared by the backends; they only run the model."""

    def __init__(self, cfg: ScorerConfig):
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.model = resolve_model(cfg)
        _check_causal_lm(self.model.path, "scorer.model")
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(self.model.path)
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"scorer.model: cannot load the tokenizer of {self.model.path}: {typed_line(err)}") from None
        if self.model.chat_template is not None:
            self.tokenizer.chat_template = self.model.chat_template
        if cfg.prompt_format == "chat" and not self.tokenizer.chat_template:
            raise ConfigError(
                f"scorer: {self.model.path} has no chat template; set scorer.chat_template or scorer.prompt_format: plain"
            )

    def response_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[list[float]]:
        """log p of each response token given its instruction, one list per pair, in order."""
        return self._score(self.encode(pairs))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text on its own (no special tokens)."""
        return [len(ids) for ids in self._ids(texts)]

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[Encoded]:
        """Prompt + response token ids of each pair, the response cut to fit ``max_length``."""
        responses = sorted({r for _, r in pairs})
        response_ids = dict(zip(responses, self._ids(responses)))
        encoded = []
        for instruction, response in pairs:
            prompt = self._prompt_ids(instruction)
            room = max(self.cfg.max_length - len(prompt), 0)
            encoded.append(Encoded(prompt + response_ids[response][:room], len(prompt)))
        return encoded

    @abstractmethod
    def _score(self, sequences: list[Encoded]) -> list[list[float]]:
        """log p(ids[t] | ids[:t]) for t in start..len(ids)-1, per sequence."""

    @abstractmethod
    def close(self) -> None:
        """Free the model."""

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def _prompt_ids(self, instruction: str) -> list[int]:
        tok = self.tokenizer
        if self.cfg.prompt_format == "chat":
            text = tok.apply_chat_template(
                [{"role": "user", "content": instruction}], add_generation_prompt=True, tokenize=False
            )
            return tok(text, add_special_tokens=False)["input_ids"]
        ids = tok(instruction + "\n\n", add_special_tokens=True)["input_ids"]
        if tok.bos_token_id is not None and ids[:1] != [tok.bos_token_id]:
            ids = [tok.bos_token_id] + ids
        return ids

