"""What a job's teacher calls will cost, before anything is paid: the arithmetic every method's estimate shares.

``fusion validate`` prints a job's :class:`Estimate` and the manifest of a finished run keeps it beside what was
spent (:func:`beside_actual`). Each method builds its own from what it knows (``methods/fusion/estimate.py``,
``methods/tacie/estimate.py``, ``evaluation/estimate.py``): one :class:`Phase` per kind of call, from its
expected and largest number of calls and its tokens per call. Here, the rest:

* **tokens** of a rendered prompt: :data:`CHARS_PER_TOKEN` characters a token plus :data:`TOKENS_PER_MESSAGE` a
  message (:func:`approx_tokens`), the rule the HTTP teacher paces its token budget with
  (``openai_compat.estimate_tokens``). No tokenizer is used: the teacher's own is not known offline (tiktoken
  needs to download its tables), so a figure is good to about a quarter, more for code-heavy or non-English text;
* **completion tokens**: at most ``sampling.max_tokens`` a call; expected, what the method knows (the seeds'
  lengths, the IF paper's Table 1), else :data:`COMPLETION_FRACTION` of ``max_tokens``;
* **dollars** at the teacher's price (``teachers.pricing.price_for``: ``teacher.price``, else the table);
* **wall time**: each phase's calls at the slowest of three paces: the requests in flight over all teacher
  actors (``concurrency`` x ``ray.num_actors``; ``ray.batch_size`` when smaller) over the per-call latency, the
  request rate limit and the token rate limit. Limits are per actor (each actor's client keeps its own buckets),
  so the job's pace is the limit times the actors. The latency is ``estimate.latency_s``, else
  :data:`FIRST_TOKEN_S` plus the expected completion at :data:`DECODE_TOKENS_PER_S`. Phases share the teacher's
  pace (IF's responses run beside its fusions on the same slots, TaCIE's operations one after the other), so
  the time is the sum over phases; start-up, embedding and scoring are not counted;
* **the pass rate**: :data:`PRIOR_PASS_RATE` unless the job's ``estimate.pass_rate`` says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ray_pipeline.core.config import EstimateConfig, PriceConfig, RayConfig
from ray_pipeline.teachers.pricing import cost_usd, price_for
from ray_pipeline.teachers.tokens import TOKENIZER, approx_tokens, prompt_tokens, text_tokens  # noqa: F401 (re-exported)

#: share of the teacher's answers assumed to pass (parse, be valid) when the job's estimate gives none
PRIOR_PASS_RATE = 0.8
#: expected completion as a share of max_tokens, where a method knows nothing better
COMPLETION_FRACTION = 0.5
#: the per-call latency when the job gives none: time to the first token, then decoding per stream (an API
#: model of the GPT-4 class; a local model's speed depends on its hardware: set estimate.latency_s)
FIRST_TOKEN_S = 1.0
DECODE_TOKENS_PER_S = 40.0


def mean(values: Iterable[float]) -> float | None:
    """The mean, or None for no values."""
    values = list(values)
    return sum(values) / len(values) if values else None


def expected_attempts(target: int, pass_rate: float, budget: int, available: int | None = None) -> tuple[int, float]:
    """The fusion loop (``methods.fusion.loop``) in expectation: it draws until ``target`` pass and never past
    them, so ``ceil(target / pass_rate)`` calls (a negative binomial's mean), at most the ``budget`` and the
    ``available`` draws; (calls, expected passes)."""
    limit = budget if available is None else min(budget, available)
    calls = limit if pass_rate <= 0 else min(limit, math.ceil(target / pass_rate - 1e-9))
    return calls, min(float(target), calls * pass_rate)


@dataclass(frozen=True)
class Assumptions:
    """What an estimate assumes beyond the job: the pass rate, the latency, the completion share, the tokenizer."""

    pass_rate: float = PRIOR_PASS_RATE
    latency_s: float | None = None  # None: FIRST_TOKEN_S + completion / DECODE_TOKENS_PER_S
    completion_fraction: float = COMPLETION_FRACTION

    @classmethod
    def of(cls, cfg: EstimateConfig | None) -> "Assumptions":
        """The job's ``estimate:`` section, its unset fields at this module's defaults."""
        cfg = cfg or EstimateConfig()
        return cls(
            pass_rate=PRIOR_PASS_RATE if cfg.pass_rate is None else cfg.pass_rate,
            latency_s=cfg.latency_s,
            completion_fraction=COMPLETION_FRACTION if cfg.completion_fraction is None else cfg.completion_fraction,
        )

    def latency(self, completion_tokens: float) -> float:
        """Seconds a call takes that writes ``completion_tokens``."""
        if self.latency_s is not None:
            return self.latency_s
        return FIRST_TOKEN_S + completion_tokens / DECODE_TOKENS_PER_S

    def completion(self, max_tokens: int, known: float | None = None) -> float:
        """Expected completion tokens of a call: ``known`` (what the method knows) capped at ``max_tokens``, else
        the completion share of ``max_tokens``."""
        return min(float(max_tokens), known) if known is not None else self.completion_fraction * max_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass_rate": self.pass_rate,
            "latency_s": self.latency_s if self.latency_s is not None else
            f"{FIRST_TOKEN_S:g} s + expected completion at {DECODE_TOKENS_PER_S:g} tokens/s",
            "completion_fraction": self.completion_fraction,
            "tokenizer": TOKENIZER,
            "rate_limits": "per teacher actor (each actor's client keeps its own buckets), times the actors",
        }


@dataclass(frozen=True)
class Capacity:
    """One teacher's model, price and pace: requests in flight, request and token limits, over all its actors."""

    model: str
    price: PriceConfig
    in_flight: int
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    kind: str = "openai"  # the teacher config's kind: embedded and vllm run on the job's own machines

    @classmethod
    def of(cls, teacher: Any, ray: RayConfig) -> "Capacity":
        """From a teacher config (``core.config``) and the Ray section that runs its stage."""
        from ray_pipeline.teachers.factory import backend_for

        backend = backend_for(teacher)
        model = backend.model_name()
        per_actor = backend.actor_slots(ray.batch_size)  # what teachers.pool keeps in flight per actor
        rpm, tpm = getattr(teacher, "requests_per_minute", None), getattr(teacher, "tokens_per_minute", None)
        return cls(model=model, price=price_for(model, getattr(teacher, "price", None)),
                   in_flight=per_actor * ray.num_actors,
                   requests_per_minute=rpm * ray.num_actors if rpm else None,
                   tokens_per_minute=tpm * ray.num_actors if tpm else None, kind=teacher.kind)

    def notes(self, assumptions: Assumptions) -> tuple[str, ...]:
        """What the estimate cannot know about this teacher: a local model's speed."""
        if self.kind == "openai" or assumptions.latency_s is not None:
            return ()
        return (f"{self.model} runs on the job's machines ({self.kind} teacher): the time assumes an API model's "
                f"latency; set estimate.latency_s for this hardware",)

    def pace(self, latency_s: float, tokens_per_call: float) -> tuple[float, str]:
        """Calls a second, and what sets it (``concurrency``, ``requests_per_minute`` or ``tokens_per_minute``)."""
        rates = {"concurrency": self.in_flight / latency_s}
        if self.requests_per_minute:
            rates["requests_per_minute"] = self.requests_per_minute / 60
        if self.tokens_per_minute and tokens_per_call > 0:
            rates["tokens_per_minute"] = self.tokens_per_minute / 60 / tokens_per_call
        by = min(rates, key=lambda k: rates[k])
        return rates[by], by


@dataclass(frozen=True)
class Phase:
    """One kind of teacher call of a job (named as the run's calls are counted), with its totals: calls expected
    and at most, tokens expected and at most, dollars, seconds. Tokens, dollars and time are None when the inputs
    they come from are not here."""

    name: str
    model: str
    calls: int
    calls_max: int
    prompt_tokens: float | None
    completion_tokens: float | None
    prompt_tokens_max: float | None
    completion_tokens_max: float
    usd: float | None
    usd_max: float | None
    wall_s: float | None
    paced_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "calls": self.calls, "calls_at_most": self.calls_max,
            "prompt_tokens": _int(self.prompt_tokens), "completion_tokens": _int(self.completion_tokens),
            "prompt_tokens_at_most": _int(self.prompt_tokens_max),
            "completion_tokens_at_most": _int(self.completion_tokens_max),
            "usd": _usd(self.usd), "usd_at_most": _usd(self.usd_max), "wall_s": _secs(self.wall_s),
            "paced_by": self.paced_by,
        }


def phase(name: str, capacity: Capacity, assumptions: Assumptions, *, calls: int, calls_max: int,
          prompt: float | None, completion: float | None, max_tokens: int, prompt_max: float | None = None) -> Phase:
    """A phase from its calls and its tokens per call: ``prompt`` and ``completion`` expected (None: unknown
    here), ``max_tokens`` the completion at most, ``prompt_max`` the prompt at most (default ``prompt``)."""
    prompt_max = prompt if prompt_max is None else prompt_max
    p_max = None if prompt_max is None else calls_max * prompt_max
    c_max = float(calls_max * max_tokens)
    usd_max = None if p_max is None else cost_usd(capacity.price, p_max, c_max)
    if prompt is None or completion is None:
        return Phase(name, capacity.model, calls, calls_max, None, None, p_max, c_max, None, usd_max, None)
    wall, by = 0.0, None
    if calls:
        per_s, by = capacity.pace(assumptions.latency(completion), prompt + completion)
        wall = calls / per_s
    return Phase(name, capacity.model, calls, calls_max, calls * prompt, calls * completion, p_max, c_max,
                 cost_usd(capacity.price, calls * prompt, calls * completion), usd_max, wall, by)


def merged(name: str, parts: Sequence[Phase]) -> Phase:
    """Phases that the run counts as one (a model's two MT-Bench turns): their sums, run one after the other."""

    def total(values: Iterable[float | None]) -> float | None:
        values = list(values)
        return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]

    pacing = {p.paced_by for p in parts if p.paced_by}
    return Phase(name, parts[0].model, sum(p.calls for p in parts), sum(p.calls_max for p in parts),
                 total(p.prompt_tokens for p in parts), total(p.completion_tokens for p in parts),
                 total(p.prompt_tokens_max for p in parts), sum(p.completion_tokens_max for p in parts),
                 total(p.usd for p in parts), total(p.usd_max for p in parts), total(p.wall_s for p in parts),
                 "+".join(sorted(pacing)) or None)


@dataclass(frozen=True)
class Estimate:
    """A job's expected and largest teacher bill: its phases, what was assumed, and what it could not see."""

    phases: tuple[Phase, ...]
    assumptions: Assumptions
    notes: tuple[str, ...] = field(default_factory=tuple)

    def _sum(self, attr: str) -> float | None:
        values = [getattr(p, attr) for p in self.phases]
        return None if any(v is None for v in values) else sum(values)

    def to_dict(self) -> dict[str, Any]:
        """What ``fusion validate`` prints and the manifest keeps."""
        return {
            "calls": {"expected": sum(p.calls for p in self.phases), "at_most": sum(p.calls_max for p in self.phases)},
            "prompt_tokens": {"expected": _int(self._sum("prompt_tokens")),
                              "at_most": _int(self._sum("prompt_tokens_max"))},
            "completion_tokens": {"expected": _int(self._sum("completion_tokens")),
                                  "at_most": _int(self._sum("completion_tokens_max"))},
            "usd": {"expected": _usd(self._sum("usd")), "at_most": _usd(self._sum("usd_max"))},
            "wall_s": {"expected": _secs(self._sum("wall_s"))},
            "phases": {p.name: p.to_dict() for p in self.phases},
            "assumptions": self.assumptions.to_dict(),
            "notes": list(self.notes),
        }


def beside_actual(estimate: dict[str, Any] | None, calls: Mapping[str, int], tokens: Mapping[str, int], usd: float,
                  wall_s: float) -> dict[str, Any] | None:
    """The manifest's ``estimate``: the estimate made before the run (``Estimate.to_dict``) and, under ``actual``,
    what the run spent: answered calls per phase (cache hits included, as ``tokens`` counts them), tokens,
    dollars, seconds."""
    if estimate is None:
        return None
    return {**estimate, "actual": {
        "calls": sum(calls.values()), "calls_by_phase": dict(calls), "prompt_tokens": int(tokens["prompt"]),
        "completion_tokens": int(tokens["completion"]), "usd": _usd(usd), "wall_s": _secs(wall_s),
    }}


def summary_line(estimate: dict[str, Any]) -> str:
    """One line for a person (``fusion validate`` prints it on stderr) from ``Estimate.to_dict``."""
    calls, usd = estimate["calls"], estimate["usd"]
    line = f"estimate: {calls['expected']:,} teacher calls (at most {calls['at_most']:,})"
    if usd["expected"] is None:
        return line + "; tokens, dollars and time need inputs that are not here (the estimate's notes)"
    return (f"{line}, {estimate['prompt_tokens']['expected']:,} prompt + "
            f"{estimate['completion_tokens']['expected']:,} completion tokens, ${usd['expected']:,.2f} "
            f"(at most ${usd['at_most']:,.2f}), {estimate['wall_s']['expected']:,.0f} s")


def _int(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _secs(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


__all__ = ["Assumptions", "COMPLETION_FRACTION", "Capacity", "DECODE_TOKENS_PER_S", "Estimate", "FIRST_TOKEN_S",
           "PRIOR_PASS_RATE", "Phase", "TOKENIZER", "approx_tokens", "beside_actual",
           "expected_attempts", "mean", "merged", "phase", "prompt_tokens", "summary_line", "text_tokens"]
