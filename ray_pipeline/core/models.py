"""Which causal language model a job means, checked before any work starts.

A job names a model as a local directory, a Hugging Face hub id, or nothing /
``embedded`` for the bundled Gemma 3 270M (converted once from its GGUF
package; it is a base model, so our chat template comes with it). The scorer
of TaCIE and the model fine-tuned by an SFT job are both resolved here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ray_pipeline.core.errors import ConfigError, typed_line

EMBEDDED = "embedded"


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    chat_template: str | None  # template text to use; None: the tokenizer's own


def resolve_model(model: str | None, chat_template: str | None, model_field: str, template_field: str) -> ResolvedModel:
    """The model to load and its chat template; the ``*_field`` names are the job's fields, for errors.

    ``None`` or ``"embedded"`` is the bundled Gemma 3 270M with our chat template;
    a path that looks local must exist; anything else is taken as a hub id.
    """
    if model is None or model == EMBEDDED:
        from ray_pipeline.core.model_files import chat_template_text, ensure_embedded_model

        path, template = str(ensure_embedded_model()), chat_template_text()
    else:
        path, template = model, None
        local = Path(model).expanduser()
        if model.startswith((".", "/", "~")) or local.exists():
            if not local.exists():
                raise ConfigError(f"{model_field}: {model} not found")
            path = str(local)
    if chat_template:
        template_file = Path(chat_template).expanduser()
        if not template_file.is_file():
            raise ConfigError(f"{template_field}: {chat_template} not found")
        template = template_file.read_text(encoding="utf-8")
    return ResolvedModel(path, template)


def check_causal_lm(path: str, field: str) -> None:
    """ConfigError (one line) unless ``path`` holds a causal LM; ``field`` is the job field that named it."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, JSON errors: one line
        raise ConfigError(f"{field}: cannot load {path}: {typed_line(err)}") from None
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = getattr(config, "architectures", None) or []
    if not (set(architectures) & causal if architectures else config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        named = ", ".join(architectures) or config.model_type
        raise ConfigError(f"{field}: {path} is not a causal language model ({named})")
