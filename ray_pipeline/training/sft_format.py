"""SFT formatting: conversations -> text segments (trainable or not) -> token ids and labels.

A conversation is a list of ``{"role", "content"}`` messages. It is rendered
into consecutive text segments, each marked trainable or not:

* ``chat``: the tokenizer's chat template. Every assistant turn is trainable,
  including the template's end-of-turn marker after it (so the model learns to
  stop); everything else (BOS, system and user turns, the generation prompt
  that opens an assistant turn) is not.
* ``alpaca``: the Stanford Alpaca prompt (``ray_pipeline/prompts/sft_alpaca.v1.yaml``,
  whose sha256 is ``load_template(ref).sha256``) for the first user turn; the
  first assistant turn plus the tokenizer's EOS token is trainable.

Segments are tokenized one by one (``add_special_tokens=False``) and
concatenated; labels are the ids of trainable segments and ``IGNORE_INDEX``
elsewhere (Hugging Face models shift labels themselves).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping, Sequence

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.prompts import load_template

IGNORE_INDEX = -100
FORMATS = ("chat", "alpaca")

Segments = list[tuple[str, bool]]


@dataclass(frozen=True)
class TokenizedExample:
    """One example: ``labels`` has the length of ``input_ids``, ``IGNORE_INDEX`` where there is no loss."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool  # was cut to max_seq_len

    @property
    def num_trainable(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass
class FormatStats:
    """Counts over one ``tokenize_examples`` call."""

    examples_in: int = 0
    examples_out: int = 0
    truncated: int = 0  # cut to max_seq_len but still have trainable tokens
    dropped_no_response: int = 0  # no trainable token left after truncation (or empty response)
    tokens: int = 0  # sum len(input_ids) of kept examples
    trainable_tokens: int = 0  # sum of labels != IGNORE_INDEX

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ messages


def to_messages(record: Mapping[str, str], system_prompt: str | None = None) -> list[dict[str, str]]:
    """A seed record (``instruction``, ``input``, ``output``) -> system? / user / assistant messages.

    The user turn is the instruction, followed by a blank line and the input if there is one.
    """
    instruction = str(record.get("instruction") or "")
    if not instruction.strip():
        raise ConfigError(f"SFT record {record.get('id') or record.get('origin') or '?'} has no instruction")
    extra = str(record.get("input") or "")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": instruction + ("\n\n" + extra if extra else "")})
    messages.append({"role": "assistant", "content": str(record.get("output") or "")})
    return messages


# ------------------------------------------------------------------ rendering


def _render_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as err:  # jinja errors, raise_exception() in the template, ...
        raise ConfigError(f"chat template failed on an SFT example: {type(err).__name__}: {err}") from None
    if not isinstance(text, str):
        raise ConfigError(f"chat template returned {type(text).__name__}, expected text")
    return text


def _chat_segments(messages: Sequence[Mapping[str, Any]], tokenizer: Any) -> Segments:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the tokenizer has no chat template: set one (model chat_template) or use data.format: alpaca"
        )
    segments: Segments = []
    done = ""  # text already cut into segments

    def cut(upto: int, add_generation_prompt: bool, trainable: bool, what: str) -> None:
        """Render ``messages[:upto]`` and append what is new since the last cut as one segment."""
        nonlocal done
        text = _render_chat(tokenizer, messages[:upto], add_generation_prompt)
        if not text.startswith(done):
            raise ConfigError(
                f"chat template is not prefix-stable: the rendering of {what} does not start with the text "
                "rendered before it, so the assistant turns cannot be cut out for the loss"
            )
        if len(text) > len(done):
            segments.append((text[len(done) :], trainable))
            done = text

    for i, message in enumerate(messages):
        if message.get("role") == "assistant":
            cut(i, True, False, f"the messages before assistant turn {i}")
            cut(i + 1, False, True, f"assistant turn {i}")
    cut(len(messages), False, False, "the whole conversation")
    return segments


def _wants_bos(tokenizer: Any) -> bool:
    """Whether a plain-text prompt should start with BOS text.

    True if the tokenizer prepends BOS by itself (``tokenizer("x")`` starts with it) or its chat
    template starts a conversation with it (Gemma's converted tokenizer does only the latter).
    """
    bos = getattr(tokenizer, "bos_token", None)
    if bos is None or getattr(tokenizer, "bos_token_id", None) is None:
        return False
    ids = tokenizer("x").input_ids
    if ids and ids[0] == tokenizer.bos_token_id:
        return True
    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    except Exception:  # a template that cannot render a lone user turn says nothing about BOS
        return False
    return isinstance(text, str) and text.startswith(bos)


def _alpaca_segments(messages: Sequence[Mapping[str, Any]], tokenizer: Any, alpaca_template: str) -> Segments:
    user = next((m for m in messages if m.get("role") == "user"), None)
    answer = next((m for m in messages if m.get("role") == "assistant"), None)
    if user is None or answer is None:
        raise ConfigError("an alpaca SFT example needs a user and an assistant message")
    if not getattr(tokenizer, "eos_token", None):
        raise ConfigError("data.format alpaca needs a tokenizer with an EOS token")
    template = load_template(alpaca_template)
    variants = {"prompt_input", "prompt_no_input"}
    if {role for role, _ in template.messages} != variants:
        raise ConfigError(f"alpaca template {alpaca_template}: needs exactly the messages {sorted(variants)}")
    extra = str(user.get("input") or "")  # optional: a user turn may carry its input separately
    rendered = {m["role"]: m["content"] for m in template.render(instruction=str(user["content"]), input=extra)}
    prompt = rendered["prompt_input" if extra else "prompt_no_input"]
    segments: Segments = [(tokenizer.bos_token, False)] if _wants_bos(tokenizer) else []
    segments += [(prompt, False), (str(answer["content"]) + tokenizer.eos_token, True)]
    return segments


def render_segments(
    messages: Sequence[Mapping[str, Any]],
    fmt: Literal["chat", "alpaca"],
    tokenizer: Any,
    alpaca_template: str = "sft_alpaca@v1",
) -> Segments:
    """Render a conversation as ``[(text, trainable), ...]`` whose texts concatenate to the full example.

    chat: the tokenizer's chat template; each assistant turn ``i`` is ``render(messages[:i+1])``
    minus ``render(messages[:i], add_generation_prompt=True)``, end-of-turn marker included;
    ConfigError if the template has none or is not prefix-stable.
    alpaca: ``[(bos?), prompt, response + eos]`` for the first user/assistant pair (system ignored);
    BOS text is prepended if the tokenizer adds it itself or its chat template starts with it (once:
    segments are tokenized without special tokens). A user message may carry an
    ``input`` key, which selects the with-input prompt variant.
    """
    if fmt == "chat":
        return _chat_segments(messages, tokenizer)
    if fmt == "alpaca":
        return _alpaca_segments(messages, tokenizer, alpaca_template)
    raise ConfigError(f"unknown SFT format {fmt!r} (expected one of {', '.join(FORMATS)})")


# ------------------------------------------------------------------ tokenizing


def _has_response(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(m.get("role") == "assistant" and str(m.get("content") or "").strip() for m in messages)


def tokenize_example(
    messages: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    fmt: Literal["chat", "alpaca"],
    max_seq_len: int,
    alpaca_template: str = "sft_alpaca@v1",
) -> TokenizedExample | None:
    """Token ids and labels of one conversation, cut to its first ``max_seq_len`` tokens.

    None if the conversation has no non-blank assistant turn or no trainable token survives the cut.
    """
    if max_seq_len < 1:
        raise ConfigError(f"max_seq_len must be positive, got {max_seq_len}")
    if not _has_response(messages):
        return None
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trainable in render_segments(messages, fmt, tokenizer, alpaca_template):
        ids = list(tokenizer(text, add_special_tokens=False).input_ids)
        input_ids += ids
        labels += ids if trainable else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > max_seq_len
    if truncated:
        input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return TokenizedExample(input_ids=input_ids, labels=labels, truncated=truncated)


def tokenize_examples(
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    tokenizer: Any,
    fmt: Literal["chat", "alpaca"],
    max_seq_len: int,
    alpaca_template: str = "sft_alpaca@v1",
) -> tuple[list[TokenizedExample], FormatStats]:
    """``tokenize_example`` over many conversations, in order; dropped ones are counted, not returned."""
    stats = FormatStats()
    examples: list[TokenizedExample] = []
    for messages in conversations:
        stats.examples_in += 1
        example = tokenize_example(messages, tokenizer, fmt, max_seq_len, alpaca_template)
        if example is None:
            stats.dropped_no_response += 1
            continue
        examples.append(example)
        stats.examples_out += 1
        stats.truncated += example.truncated
        stats.tokens += len(example.input_ids)
        stats.trainable_tokens += example.num_trainable
    return examples, stats
