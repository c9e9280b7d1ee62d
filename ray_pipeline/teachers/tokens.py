"""Tokens of a prompt before it is sent, without a tokenizer: the HTTP teacher's rate limiter and the cost
estimate (``teachers.estimate``) both count this way."""

from __future__ import annotations

from typing import Mapping, Sequence

#: characters a token, and the tokens a chat message adds (its role and separators): OpenAI's rule of thumb
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENIZER = f"approximate: {CHARS_PER_TOKEN} characters a token + {TOKENS_PER_MESSAGE} a message (no tokenizer)"


def approx_tokens(chars: int, messages: int = 0) -> int:
    """Tokens of ``chars`` characters of text in ``messages`` chat messages (module docstring)."""
    return chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * messages


def text_tokens(text: str) -> int:
    """Tokens of a piece of text inside a message."""
    return approx_tokens(len(text))


def prompt_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """Tokens of a rendered chat prompt (``PromptTemplate.render``'s messages)."""
    return approx_tokens(sum(len(m["content"]) for m in messages), len(messages))
