"""What a TaCIE job will cost (``teachers.estimate``), from its job file, its templates and its seed pool.

Calls, as the round loop (``loop.py``) makes them, with p the assumed pass rate (``estimate.pass_rate``):

* round 0: one decomposition per chosen seed (one per cluster per source: a source's ``clusters``, else the
  elbow's k, known only after the embedding, so its largest, ``collection.k_max``; every seed with
  ``cluster: false``); one diversification per decomposed seed (per seed for a template that takes no
  elements), ``collection.diversify`` new items kept from each that parses, each decomposed; a response per item;
* rounds 1..T: M_d depth evolutions and M_f task fusions (``evolution.depth_per_round`` / ``fusion_per_round``,
  default ``sampling.round_amount``: a sixth of round 0's pool); a response per child that parses (children
  carry their sections and are not decomposed again).

Prompt tokens: each template rendered on a seeded sample of :data:`SAMPLE_SEEDS` seeds (pairs of them for task
fusion), a seed's elements taken as its instruction as the one objective. Completion tokens (each at most its
``max_tokens``): a decomposition as long as those elements, a diversification the asked number of new prompts
(:data:`DIVERSIFY_ASKED` for B.2) as long as the seed, a rewritten prompt with its sections as long as its
parents' instructions and elements, a response as long as the seeds' answers (the share of ``max_tokens`` when
they have none). Instructions grow round by round; that is not modelled, so later rounds cost more than this.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from ray_pipeline.core.seeds import seed_prompt
from ray_pipeline.methods.tacie.config import TaCIEJob
from ray_pipeline.methods.tacie.decomposition import Components, format_components
from ray_pipeline.methods.tacie.operations import needs_elements, task_values
from ray_pipeline.methods.tacie.sampling import round_amount
from ray_pipeline.prompts import PromptTemplate
from ray_pipeline.teachers.estimate import Assumptions, Capacity, Estimate, mean, phase, prompt_tokens, text_tokens

#: seeds whose prompts are rendered to measure each operation's prompt (a random sample, seeded by the job)
SAMPLE_SEEDS = 256
#: new prompts Appendix B.2 (tacie_diversify@v2) asks for, of which ``collection.diversify`` are kept; a template
#: with an ``n`` asks for ``collection.diversify``
DIVERSIFY_ASKED = 10

#: the phase of each operation the attempts record (``operations.OPERATIONS``)
PHASE_OF = {"diversify": "diversify", "decompose": "decompose", "depth": "depth", "depth_constraint": "depth",
            "depth_background": "depth", "fusion_in_domain": "fusion", "fusion_cross_domain": "fusion",
            "response": "response"}


def chosen_seeds(job: TaCIEJob, records: list[dict[str, Any]] | None) -> tuple[int | None, list[str]]:
    """Seeds round 0 starts from, at most, and the sources whose count waits for the elbow. Without the seeds
    (None): the sum of the sources' ``clusters`` when every source gives one (each assumed to hold that many
    seeds), else None."""
    given = {src.label: src.clusters for src in job.seeds}
    if records is None:
        known = job.collection.cluster and all(k is not None for k in given.values())
        return (sum(given.values()), []) if known else (None, [])  # type: ignore[arg-type]
    if not job.collection.cluster:
        return len(records), []
    chosen, elbow = 0, []
    for label, n in Counter(s["source"] for s in records).items():
        if given.get(label) is not None:
            chosen += min(given[label], n)
        else:
            chosen += n if n <= job.collection.k_min else min(job.collection.k_max, n - 1)
            elbow.append(label)
    return chosen, elbow


def _item(seed: dict[str, Any]) -> dict[str, Any]:
    """A seed as the templates take it: its elements assumed to be its instruction as the one objective."""
    text = seed_prompt(seed)
    return {"instruction": text, "background": [], "objectives": [text], "constraints": [], "domain": seed["domain"]}


def _elements(item: dict[str, Any], template: PromptTemplate) -> int:
    return text_tokens(format_components(Components((), tuple(item["objectives"]), ()), template.elements_format))


def tacie_estimate(job: TaCIEJob, templates: dict[str, PromptTemplate], records: list[dict[str, Any]] | None,
                   notes: tuple[str, ...] = ()) -> Estimate | None:
    """The estimate of ``job`` over the seed records ``records`` (``SeedPool.records``). Without them (None, or no
    record): calls only, when every source gives its ``clusters`` (round 0's pool, which every later amount
    follows, needs the seed count), else None."""
    n0, elbow = chosen_seeds(job, records or None)
    if n0 is None:
        return None
    assume, teacher = Assumptions.of(job.estimate), Capacity.of(job.teacher, job.ray)
    notes += teacher.notes(assume)
    if elbow:
        notes += (f"seed collection: k by the elbow is known after the embedding; the most it picks assumed for "
                  f"{', '.join(sorted(elbow))} (collection.k_max {job.collection.k_max})",)
    if not records:
        notes += ("no seed source is here: calls only, each source assumed to hold its clusters; tokens, dollars "
                  "and time need the seeds' text",)
    notes += ("instructions grow round by round (up to evolution.token_limit): later rounds cost more than this",)
    p, ev, keep = assume.pass_rate, job.evolution, job.collection.diversify
    div_tpl = templates["diversify"]
    prompts, completions = _tokens(job, templates, records) if records else ({}, {})
    max_tokens = {"decompose": job.decomposition.sampling.max_tokens, "diversify": job.collection.sampling.max_tokens,
                  "depth": ev.sampling.max_tokens, "fusion": ev.sampling.max_tokens,
                  "response": job.response.sampling.max_tokens}

    # round 0: expected (each step passing at p) and at most (every step passing)
    diversified = 0 if keep == 0 else (n0 * p if needs_elements(div_tpl) else n0)
    new = diversified * p * keep
    pool0, pool0_max = round(n0 + new), n0 + n0 * keep
    m_d, m_f = round_amount(ev.depth_per_round, pool0), round_amount(ev.fusion_per_round, pool0)
    m_d_max, m_f_max = round_amount(ev.depth_per_round, pool0_max), round_amount(ev.fusion_per_round, pool0_max)
    calls = {
        "decompose": (round(n0 + new), pool0_max),
        "diversify": (round(diversified), n0 if keep else 0),
        "depth": (ev.rounds * m_d, ev.rounds * m_d_max),
        "fusion": (ev.rounds * m_f, ev.rounds * m_f_max),
        "response": (round(pool0 + ev.rounds * (m_d + m_f) * p), pool0_max + ev.rounds * (m_d_max + m_f_max)),
    }
    phases = tuple(
        phase(name, teacher, assume, calls=calls[name][0], calls_max=calls[name][1], prompt=prompts.get(name),
              completion=completions.get(name), max_tokens=max_tokens[name])
        for name in ("decompose", "diversify", "depth", "fusion", "response")
    )
    return Estimate(phases, assume, notes)


def _tokens(job: TaCIEJob, templates: dict[str, PromptTemplate], records: list[dict[str, Any]]
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Prompt and expected completion tokens a call, by phase, from a sample of the seeds (module docstring)."""
    assume, ev, keep = Assumptions.of(job.estimate), job.evolution, job.collection.diversify
    sample = random.Random(job.seed).sample(records, min(SAMPLE_SEEDS, len(records)))
    items = [_item(s) for s in sample]
    pairs = list(zip(items, items[1:])) or [(items[0], items[0])]
    div_tpl, dec_tpl, fus_tpl, resp_tpl = (templates[k] for k in ("diversify", "decompose", "fusion", "response"))
    asked = keep if "n" in div_tpl.variables else DIVERSIFY_ASKED

    def depth_tpl(item: dict[str, Any]) -> PromptTemplate:
        if "depth" in templates:
            return templates["depth"]
        return templates["depth_background" if item["domain"] == "math" else "depth_constraint"]

    instruction = mean(text_tokens(it["instruction"]) for it in items)
    elements = mean(_elements(it, dec_tpl) for it in items)
    prompts = {
        "decompose": mean(prompt_tokens(dec_tpl.render(**task_values(dec_tpl, it))) for it in items),
        "diversify": mean(prompt_tokens(div_tpl.render(**task_values(div_tpl, it) | ({"n": str(keep)} if "n" in
                                                                                      div_tpl.variables else {})))
                          for it in items),
        "depth": mean(prompt_tokens(depth_tpl(it).render(**task_values(depth_tpl(it), it))) for it in items),
        "fusion": mean(prompt_tokens(fus_tpl.render(**task_values(fus_tpl, a, b))) for a, b in pairs),
        "response": mean(prompt_tokens(resp_tpl.render(instruction=it["instruction"])) for it in items),
    }
    answers = mean(text_tokens(s["output"]) for s in records if s.get("output"))
    completions = {
        "decompose": assume.completion(job.decomposition.sampling.max_tokens, elements),
        "diversify": assume.completion(job.collection.sampling.max_tokens, asked * instruction),
        "depth": assume.completion(ev.sampling.max_tokens, instruction + elements),
        "fusion": assume.completion(ev.sampling.max_tokens, 2 * (instruction + elements)),
        "response": assume.completion(job.response.sampling.max_tokens, answers),
    }
    return prompts, completions


def calls_by_phase(operations: list[str]) -> dict[str, int]:
    """The run's calls per estimate phase, from its attempts' operations."""
    counts: Counter = Counter(PHASE_OF.get(op, op) for op in operations)
    return {name: counts.get(name, 0) for name in ("decompose", "diversify", "depth", "fusion", "response")}


__all__ = ["DIVERSIFY_ASKED", "PHASE_OF", "SAMPLE_SEEDS", "calls_by_phase", "chosen_seeds", "tacie_estimate"]
