"""Instruction Fusion's loop as a stream: fuse random pairs until M are valid, answering each as it is chosen.

The paper (section 2.2): two distinct random seeds are fused by the teacher; an ``INVALID PROMPT`` answer is
discarded and another pair drawn, until M fused instructions exist; each then gets a response. Here:

* pairs are drawn in one fixed order (``pairing.PairSampler``, seeded by the job), attempt 0, 1, 2, ...; a
  new one is drawn whenever a call's slot is free, as long as the valid fusions so far plus the fusions in
  flight are fewer than M (and the attempt budget and the allowed pairs last). Valid plus in flight never
  passes M, so when the M-th valid answer arrives nothing is in flight: no fusion call is paid beyond the
  invalid ones, whatever the pass rate (the price: fewer fusions in flight over the last ones, when the
  responses fill the slots);
* answers are taken in attempt order, whatever order they arrive in: attempt k is chosen when it is valid and
  fewer than M attempts before it were. The rows of the run are every attempt drawn, the same rows for the
  same job seed however the calls were timed, interrupted or resumed (the cache answers what was done
  before);
* a chosen instruction's response call is put in the stream at once (before any new fusion), so responses
  run while fusion goes on;
* the tally and the dead-teacher breaker see fusion answers in attempt order.

Cached calls are answered on the driver as they are drawn, and the teacher (and its stage actors) starts at
the first call the cache cannot answer: a finished job's rerun starts nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.core.seeds import seed_prompt
from ray_pipeline.methods.fusion.pairing import PairSampler, is_cross_language
from ray_pipeline.prompts.parsing import cut_off, parse_fusion, parse_response
from ray_pipeline.teachers.calls import CallStream, RequestBuilder, TeacherCalls, cached_answer
from ray_pipeline.teachers.estimate import PRIOR_PASS_RATE
from ray_pipeline.teachers.rows import Answer


@dataclass
class Outcomes:
    """Fusion attempts by outcome, overall and by pairing (the rows of the run only)."""

    attempts: int = 0
    ok: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    by_pairing: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"same_language": {}, "cross_language": {}})

    def add(self, outcome: str, cross: bool) -> None:
        self.attempts += 1
        self.ok += outcome == "ok"
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1
        pairing = self.by_pairing["cross_language" if cross else "same_language"]
        pairing[outcome] = pairing.get(outcome, 0) + 1

    @property
    def pass_rate(self) -> float:
        return self.ok / self.attempts if self.attempts else PRIOR_PASS_RATE


@dataclass
class FusionResult:
    rows: list[dict[str, Any]]
    outcomes: Outcomes
    stop_reason: str  # reached | budget | pairs_exhausted
    max_in_flight: int  # calls in flight at most (fusions and responses), over every stage actor


class FusionLoop:
    """One run of the loop over ``seeds`` (``SeedPool.records``) with ``calls`` (the job's teacher)."""

    def __init__(self, *, seeds: list[dict[str, Any]], sampler: PairSampler, fusion: RequestBuilder,
                 respond: RequestBuilder, calls: TeacherCalls, target: int, budget: int, job_seed: int,
                 on_chosen: Callable[[int, Outcomes], None] | None = None):
        self.seeds, self.sampler, self.calls = seeds, sampler, calls
        self.fusion, self.respond = fusion, respond
        self.target, self.budget, self.job_seed = target, budget, job_seed
        self.on_chosen = on_chosen
        self.by_id = {s["id"]: s for s in seeds}

        self.drawn = 0              # attempts drawn so far (the next attempt's number)
        self.exhausted = False      # every allowed pair drawn
        self.valid = 0              # valid fusions answered so far, any order
        self.fusing = 0             # fusion calls put in the stream and not back
        self.arrived: dict[int, dict[str, Any]] = {}  # answered fusions not yet taken in order
        self.head = 0               # attempts taken in order so far
        self.rows: list[dict[str, Any]] = []
        self.outcomes = Outcomes()
        self.chosen = 0
        self.to_answer: deque[dict[str, Any]] = deque()  # response rows waiting for room in the stream
        self.answers: dict[int, dict[str, Any]] = {}     # attempt -> answered response row
        self._stream: CallStream | None = None
        self.max_in_flight = 0

    # ------------------------------------------------------------------ the loop
    def run(self) -> FusionResult:
        while True:
            self._send_responses()
            self._draw()
            self._take_in_order()
            self._send_responses()
            # each step above ran to its end: with nothing in flight, nothing is left to draw or to ask
            if self._stream is None or not self._stream.busy:
                break
            self.max_in_flight = max(self.max_in_flight, self._stream.in_flight)
            for prefix, row in self._stream.results():
                if prefix == "fusion":
                    self.fusing -= 1
                    self._arrive(row)
                else:
                    self.answers[row["attempt"]] = row
            self._take_in_order()
        assert not self.arrived and not self.to_answer and self.fusing == 0 and not self._may_draw(), \
            "the fusion loop ended with work left"
        for row in self.rows:
            self._record_response(row)
        return FusionResult(self.rows, self.outcomes, self._stop_reason(), self.max_in_flight)

    def _stop_reason(self) -> str:
        if self.chosen >= self.target:
            return "reached"
        return "pairs_exhausted" if self.exhausted and self.drawn < self.budget else "budget"

    def _may_draw(self) -> bool:
        return (self.chosen < self.target and self.valid + self.fusing < self.target
                and self.drawn < self.budget and not self.exhausted)

    def stream(self) -> CallStream:
        if self._stream is None:
            self._stream = self.calls.stream()  # starts the teacher: the first call the cache cannot answer
        return self._stream

    # ------------------------------------------------------------------ fusion
    def _draw(self) -> None:
        while self._may_draw() and (self._stream is None or self._stream.room > 0):
            pair = self.sampler.draw()
            if pair is None:
                self.exhausted = True
                return
            row = self._fusion_request(self.drawn, *pair)
            self.drawn += 1
            if row["cached"]:
                self._arrive(cached_answer(row, "fusion"))
            else:
                self.stream().put(row, "fusion")
                self.fusing += 1

    def _fusion_request(self, attempt: int, i: int, j: int) -> dict[str, Any]:
        a, b = self.seeds[i], self.seeds[j]
        seed = derived_seed(self.job_seed, "fusion", a["id"], b["id"])
        return {
            "attempt": attempt,
            "parent_a": a["id"],
            "parent_b": b["id"],
            "cross_language": is_cross_language(a["language"], b["language"]),
            **self.fusion.request(seed, instruction_1=seed_prompt(a), instruction_2=seed_prompt(b)),
        }

    def _arrive(self, row: dict[str, Any]) -> None:
        """A fusion answer, in any order: parsed now (the outcome depends on the answer only)."""
        parents = (seed_prompt(self.by_id[row["parent_a"]]), seed_prompt(self.by_id[row["parent_b"]]))
        answer = Answer.read(row, "fusion")
        if answer.error:
            outcome, text, reason = "api_error", "", answer.error
        else:
            parsed = parse_fusion(answer.text, parents, self.fusion.template)
            outcome, text, reason = parsed.outcome, parsed.text, parsed.reason
            if outcome == "ok" and cut_off(answer.text, answer.finish_reason, text):
                outcome, text, reason = "parse_error", "", "instruction cut off at max_tokens"
        row.update(fusion_outcome=outcome, instruction=text, fusion_reason=reason,
                   parents=[self.by_id[row["parent_a"]], self.by_id[row["parent_b"]]])
        del row["messages"], row["cached"]  # the prompt and the cached answer are not kept: the driver holds M rows
        self.valid += outcome == "ok"
        self.arrived[row["attempt"]] = row

    def _take_in_order(self) -> None:
        """Take answered attempts in attempt order: tally, breaker, choice, response."""
        while self.chosen < self.target and self.head in self.arrived:
            row = self.arrived.pop(self.head)
            self.head += 1
            self.calls.observe(row, "fusion")
            row["selected"] = row["fusion_outcome"] == "ok"
            self.outcomes.add(row["fusion_outcome"], row["cross_language"])
            self.rows.append(row)
            if row["selected"]:
                self.chosen += 1
                self._ask_response(row)
                if self.on_chosen is not None:
                    self.on_chosen(self.chosen, self.outcomes)

    # ------------------------------------------------------------------ responses
    def _ask_response(self, row: dict[str, Any]) -> None:
        seed = derived_seed(self.job_seed, "response", row["instruction"])
        request = {"attempt": row["attempt"], **self.respond.request(seed, instruction=row["instruction"])}
        if request["cached"]:
            self.answers[row["attempt"]] = cached_answer(request, "response")
        else:
            self.to_answer.append(request)

    def _send_responses(self) -> None:
        while self.to_answer and (self._stream is None or self._stream.room > 0):
            self.stream().put(self.to_answer.popleft(), "response")

    def _record_response(self, row: dict[str, Any]) -> None:
        got = self.answers.get(row["attempt"]) if row["selected"] else None
        if got is None:  # a failed fusion
            row.update(response_outcome="", response="", outcome=row["fusion_outcome"])
            return
        self.calls.observe(got, "response")
        for key in ("sampling", "cache_key"):
            row[f"response_{key}"] = got[key]
        answer = Answer.read(got, "response")
        row.update(answer.columns("response"))
        if answer.error:
            row["response_outcome"], row["response"] = "api_error", ""
        else:
            parsed = parse_response(answer.text)
            row["response_outcome"], row["response"] = parsed.outcome, parsed.text
        row["outcome"] = row["response_outcome"]


__all__ = ["FusionLoop", "FusionResult", "Outcomes"]
