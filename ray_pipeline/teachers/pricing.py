"""Token prices, for the cost estimate of a run.

Prices are USD per million tokens. A model matches the longest table entry that
is a prefix of its name (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``); local
and unknown models cost nothing. ``teacher.price`` in the job file overrides
the table.
"""

from __future__ import annotations

from ray_pipeline.core.config import PriceConfig


def _price(prompt: float, completion: float) -> PriceConfig:
    return PriceConfig(prompt_per_million=prompt, completion_per_million=completion)


# List prices (USD per million prompt / completion tokens) as of writing; they
# change, so users override them in the job file with `teacher.price`.
DEFAULT_PRICES: dict[str, PriceConfig] = {
    # GPT-4 (MT-Bench's judge) and GPT-4 Turbo by its preview names (the IF paper's teacher, gpt-4-1106-preview)
    "gpt-4": _price(30.00, 60.00),
    "gpt-4-32k": _price(60.00, 120.00),
    "gpt-4-1106-preview": _price(10.00, 30.00),
    "gpt-4-0125-preview": _price(10.00, 30.00),
    "gpt-4o": _price(2.50, 10.00),
    "gpt-4o-mini": _price(0.15, 0.60),
    "gpt-4-turbo": _price(10.00, 30.00),
    "gpt-4.1": _price(2.00, 8.00),
    "gpt-4.1-mini": _price(0.40, 1.60),
    "gpt-4.1-nano": _price(0.10, 0.40),
    "gpt-3.5-turbo": _price(0.50, 1.50),
}

FREE = _price(0.0, 0.0)


def price_for(model: str, override: PriceConfig | None = None) -> PriceConfig:
    """The price of ``model``: ``override`` if given, else the longest matching table prefix, else free."""
    if override is not None:
        return override
    name = model.lower()
    matches = [prefix for prefix in DEFAULT_PRICES if name.startswith(prefix)]
    return DEFAULT_PRICES[max(matches, key=len)] if matches else FREE


def cost_usd(price: PriceConfig, prompt_tokens: int, completion_tokens: int) -> float:
    """USD cost of the given token counts at ``price``."""
    return (
        prompt_tokens * price.prompt_per_million + completion_tokens * price.completion_per_million
    ) / 1_000_000
