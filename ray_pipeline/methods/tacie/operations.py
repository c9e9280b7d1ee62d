"""The declared operations of TaCIE: small steps, each naming the item fields it reads and writes.

In the style of distilabel steps, an operation declares ``inputs`` (the ``TaCIEItem`` fields it reads)
and ``outputs`` (the fields it writes, or sets on the items it makes), and ``process`` does the work:
it builds teacher requests from its template (``RequestBuilder``), runs them through ``TeacherCalls``
in one batch, parses the answers and records one ``Attempt`` per call. Teacher operations (tacie.txt
section 2 and Appendix B):

* ``Decompose``: an instruction into background / objectives / constraints (eq. 1, Appendix B.1);
* ``Diversify``: new instructions with other objectives for each seed (Appendix B.2), of which the most
  mutually dissimilar by embedding are kept;
* ``DepthEvolution``: one constraint, or one background element for a reasoning task, added to an
  instruction (Appendix B.3; parents drawn with eq. 4-5);
* ``TaskFusion``: two instructions fused into one task (Appendix B.4; pairs drawn by Algorithm 1, eq. 6-7);
  ``Evolution`` answers a round's depth evolutions and fusions in one teacher batch;
* ``Respond``: the teacher's response to each new item.

And two that need no teacher: ``Score`` (q and the uncertainty u under the scorer LM, eq. 2-3) and
``Embed`` (the embedding every new item gets, for diversity U, eq. 8-10, and the near-duplicate filter).
``settle`` then decides which items may evolve further.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ray_pipeline.analysis.diversity import most_dissimilar
from ray_pipeline.analysis.embeddings import embed_texts
from ray_pipeline.methods.tacie.config import TaCIEJob
from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.core.executor import run_stage
from ray_pipeline.methods.tacie.attempts import Attempt
from ray_pipeline.methods.tacie.decomposition import (
    Components,
    format_components,
    parse_decomposition,
    parse_diversified,
    parse_evolution,
)
from ray_pipeline.methods.tacie.items import TaCIEItem, item_id
from ray_pipeline.methods.tacie.uncertainty.stage import ScorerStage, scorer_resources
from ray_pipeline.prompts import PromptTemplate
from ray_pipeline.prompts.parsing import cut_off, parse_response
from ray_pipeline.teachers.calls import RequestBuilder, TeacherCalls

log = logging.getLogger(__name__)

#: operation names as attempts and items record them, in the order the report lists them
OPERATIONS = (
    "diversify",
    "decompose",
    "depth",
    "depth_constraint",
    "depth_background",
    "fusion_in_domain",
    "fusion_cross_domain",
    "response",
)
# Rows per scorer map_batches call: each row is 1 + N_U sequences.
_SCORER_ROWS_PER_BATCH = 16


# ------------------------------------------------------------------ template values
def _task(item: TaCIEItem | Mapping[str, Any]) -> tuple[str, Components]:
    if isinstance(item, TaCIEItem):
        return item.instruction, item.components
    return item["instruction"], Components(tuple(item["background"]), tuple(item["objectives"]), tuple(item["constraints"]))


def task_values(template: PromptTemplate, *items: TaCIEItem | Mapping[str, Any]) -> dict[str, str]:
    """The values a template takes for one task or a pair, under either naming.

    The papers' templates call an instruction ``prompt`` and its elements
    ``extracted`` (``prompt1``, ``extracted2`` for a pair); the v1 templates say
    ``instruction`` and ``components`` (``instruction_1``). Elements are laid
    out in the template's ``elements_format``. An item is a ``TaCIEItem`` or a
    mapping with its ``instruction`` and element lists.
    """
    values: dict[str, str] = {}
    for k, item in enumerate(items, 1):
        suffixes = ("",) if len(items) == 1 else (f"_{k}", f"{k}")
        instruction, components = _task(item)
        elements = format_components(components, template.elements_format)
        for sfx in suffixes:
            values[f"instruction{sfx}"] = values[f"prompt{sfx}"] = instruction
            values[f"components{sfx}"] = values[f"extracted{sfx}"] = elements
    return {v: values[v] for v in template.variables if v in values}


def needs_elements(template: PromptTemplate) -> bool:
    return any(v.startswith(("components", "extracted")) for v in template.variables)


# ------------------------------------------------------------------------- steps
@dataclass
class Context:
    """What the teacher operations share: the job, templates and request builders (by template key),
    the teacher calls, and the run's attempts log (each call appends its ``Attempt``)."""

    job: TaCIEJob
    templates: dict[str, PromptTemplate]
    builders: dict[str, RequestBuilder]
    calls: TeacherCalls
    attempts: list[Attempt]

    def record(self, t: int, op: str, item: str, parents: Iterable[str], outcome: str, reason: str,
               row: dict[str, Any], prefix: str) -> None:
        self.attempts.append(Attempt.from_call(t, op, item, parents, outcome, reason, row, prefix))


class Operation:
    """A declared step over items: ``inputs`` it reads, ``outputs`` it writes (``TaCIEItem`` field names)."""

    #: the template key (``preflight``) and, for most, the operation name items and attempts record
    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @property
    def template(self) -> PromptTemplate:
        return self.ctx.templates[self.name]

    @property
    def builder(self) -> RequestBuilder:
        return self.ctx.builders[self.name]

    def ask(self, items: list[TaCIEItem], values: Callable[[TaCIEItem], dict[str, str]]) -> Iterator[tuple[TaCIEItem, dict[str, Any]]]:
        """One teacher call per item, its template filled with ``values(item)`` and its seed derived from the job
        seed, the operation and the item; ``(item, answered row)`` pairs in item order (``<name>_*`` columns)."""
        seed = self.ctx.job.seed
        requests = [{"k": k, **self.builder.request(derived_seed(seed, self.name, it.id), **values(it))}
                    for k, it in enumerate(items)]
        for row in self.ctx.calls.run(requests, self.name, order_key="k"):
            yield items[row["k"]], row


class Decompose(Operation):
    """Eq. 1: the teacher splits each instruction into its elements (Appendix B.1)."""

    name = "decompose"
    inputs = ("id", "instruction", "parent_ids")
    outputs = ("background", "objectives", "constraints", "n_objectives", "decomposition_outcome")

    def process(self, items: list[TaCIEItem]) -> None:
        ctx, tpl = self.ctx, self.template
        for item, row in self.ask(items, lambda it: task_values(tpl, it)):
            if row["decompose_error"]:
                outcome, reason = "api_error", row["decompose_error"]
            else:
                parsed = parse_decomposition(row["decompose_text"], tpl, inputs=[item.instruction])
                outcome, reason = parsed.outcome, parsed.reason
                if parsed.outcome == "ok":
                    c = parsed.components
                    item.background, item.objectives = list(c.background), list(c.objectives)
                    item.constraints, item.n_objectives = list(c.constraints), len(c.objectives)
            item.decomposition_outcome = outcome
            ctx.record(0, "decompose", item.id, item.parent_ids, outcome, reason, row, "decompose")


class Diversify(Operation):
    """Appendix B.2: new instructions with other objectives for each seed; ``collection.diversify`` kept per seed."""

    name = "diversify"
    inputs = ("id", "instruction", "background", "objectives", "constraints", "decomposition_outcome", "embedding",
              "source", "domain", "root_domain", "language")
    outputs = ("id", "round", "operation", "parent_ids", "source", "domain", "root_domain", "language", "instruction",
               "template", "template_sha256")

    def process(self, seeds: list[TaCIEItem]) -> tuple[list[TaCIEItem], dict[str, Any]]:
        """The new items (not yet decomposed) and the diversification record of the manifest."""
        ctx, tpl = self.ctx, self.template
        n = ctx.job.collection.diversify
        summary: dict[str, Any] = {}
        if n == 0:
            return [], summary
        asks_n = "n" in tpl.variables  # v1 asks for n; B.2 asks for ten, of which n are kept
        if needs_elements(tpl):  # B.2 shows the seed's elements: a seed that could not be decomposed is not diversified
            skipped = [s.id for s in seeds if s.decomposition_outcome != "ok"]
            seeds = [s for s in seeds if s.decomposition_outcome == "ok"]
            if skipped:
                log.warning("diversification: %d seeds without elements (decomposition failed) are not diversified", len(skipped))
            summary["skipped_undecomposed"] = len(skipped)
        parsed_texts: dict[int, list[str]] = {}
        for seed, row in self.ask(seeds, lambda it: task_values(tpl, it) | ({"n": str(n)} if asks_n else {})):
            if row["diversify_error"]:
                outcome, reason, texts = "api_error", row["diversify_error"], []
            else:
                elements = task_values(tpl, seed)
                parsed = parse_diversified(row["diversify_text"], seed.instruction, tpl, n=n if asks_n else None,
                                           inputs=[v for name, v in elements.items() if name not in ("instruction", "prompt")])
                texts = list(parsed.instructions)
                cut = bool(texts) and cut_off(row["diversify_text"], row["diversify_finish_reason"], texts[-1])
                if cut:
                    texts.pop()  # the last entry ran into max_tokens
                outcome = "ok" if texts else "parse_error"
                reason = parsed.reason or "; ".join(parsed.dropped + (("last entry cut off at max_tokens",) if cut else ()))[:500]
            ctx.record(0, "diversify", "", [seed.id], outcome, reason, row, "diversify")
            parsed_texts[row["k"]] = texts
        generated = sum(len(t) for t in parsed_texts.values())
        chosen = self._keep_dissimilar(seeds, parsed_texts, n)
        summary.update(
            template=tpl.ref, seeds=len(seeds), generated=generated, kept=sum(len(t) for t in chosen.values()),
            kept_per_seed=n, selection="most mutually dissimilar (embedding)" if not asks_n else "as asked",
        )
        new: list[TaCIEItem] = []
        for k in sorted(chosen):
            seed, texts = seeds[k], chosen[k]
            for j, text in enumerate(texts):
                new.append(
                    TaCIEItem(
                        id=item_id("diversify", seed.id, j, text), round=0, operation="diversify",
                        parent_ids=[seed.id], source=seed.source, domain=seed.domain,
                        root_domain=seed.root_domain, language=seed.language, instruction=text,
                        template=tpl.ref, template_sha256=tpl.sha256,
                    )
                )
        return new, summary

    def _keep_dissimilar(self, seeds: list[TaCIEItem], texts: dict[int, list[str]], n: int) -> dict[int, list[str]]:
        """Per seed, at most ``n`` of its new instructions: the most mutually dissimilar (and unlike the seed)."""
        over = [k for k, t in texts.items() if len(t) > n]
        if not over:
            return texts
        vectors = embed_texts([t for k in over for t in texts[k]], self.ctx.job.embedding)
        chosen = dict(texts)
        start = 0
        for k in over:
            X = vectors[start:start + len(texts[k])]
            start += len(texts[k])
            keep = most_dissimilar(np.asarray(seeds[k].embedding), X, n)
            chosen[k] = [texts[k][i] for i in keep]
        return chosen


class _Rewrite(Operation):
    """What depth evolution and task fusion share: the teacher's rewritten prompt, parsed with its sections
    into a child item of round t (Appendix B.3 / B.4 answer formats)."""

    inputs = ("id", "instruction", "background", "objectives", "constraints", "n_objectives", "source", "domain",
              "root_domain", "language")
    outputs = ("id", "round", "operation", "parent_ids", "source", "domain", "root_domain", "language", "instruction",
               "background", "objectives", "constraints", "decomposition_outcome", "n_objectives", "template",
               "template_sha256")

    def template_for(self, op: str) -> PromptTemplate:
        return self.ctx.templates["fusion" if op.startswith("fusion") else op]

    def _n_objectives(self, parents: Sequence[TaCIEItem], components: Components) -> int:
        raise NotImplementedError

    def child(self, t: int, row: dict[str, Any], parents: list[TaCIEItem], known: set[str]) -> TaCIEItem | None:
        """The child an answered ``evolve`` row makes, or None (its attempt is recorded either way)."""
        op, parent_ids = row["op"], [p.id for p in parents]
        tpl = self.template_for(op)
        parsed = None
        if row["evolve_error"]:
            outcome, reason = "api_error", row["evolve_error"]
        else:
            elements = [format_components(p.components, tpl.elements_format) for p in parents]
            inherit = parents[0].components if len(parents) == 1 else None  # B.3 may leave out unchanged sections
            parsed = parse_evolution(row["evolve_text"], tuple(p.instruction for p in parents), tpl,
                                     inputs=elements, inherit=inherit)
            outcome, reason = parsed.outcome, parsed.reason
            if outcome == "ok" and cut_off(row["evolve_text"], row["evolve_finish_reason"], parsed.instruction):
                outcome, reason = "parse_error", "rewritten prompt cut off at max_tokens"
        child_id = ""
        if outcome == "ok":
            child_id = item_id(op, *parent_ids, parsed.instruction)
            if child_id in known:
                outcome, reason = "parse_error", "same instruction as an item already in the pool"
        self.ctx.record(t, op, child_id if outcome == "ok" else "", parent_ids, outcome, reason, row, "evolve")
        if outcome != "ok":
            return None
        first, c = parents[0], parsed.components
        return TaCIEItem(
            id=child_id, round=t, operation=op, parent_ids=parent_ids, source=first.source,
            domain=first.domain, root_domain=first.root_domain, language=first.language,
            instruction=parsed.instruction, background=list(c.background), objectives=list(c.objectives),
            constraints=list(c.constraints), decomposition_outcome="ok", n_objectives=self._n_objectives(parents, c),
            template=tpl.ref, template_sha256=tpl.sha256,
        )


class DepthEvolution(_Rewrite):
    """Appendix B.3: the teacher adds one constraint (or one background element to a reasoning task).

    One template and the teacher picks the method (``depth``), or, the v1 way, two templates chosen by the
    parent's domain (``depth_background`` for math, else ``depth_constraint``).
    """

    name = "depth"

    def op_for(self, parent: TaCIEItem) -> str:
        if "depth" in self.ctx.templates:
            return "depth"  # Appendix B.3: the teacher picks the method
        return "depth_background" if parent.domain == "math" else "depth_constraint"

    def request(self, t: int, n: int, parent: TaCIEItem) -> dict[str, Any]:
        op = self.op_for(parent)
        seed = derived_seed(self.ctx.job.seed, "evolve", t, op, n, parent.id)
        req = self.ctx.builders[op].request(seed, **task_values(self.ctx.templates[op], parent))
        return {"op": op, "parents": json.dumps([parent.id]), **req}

    def _n_objectives(self, parents: Sequence[TaCIEItem], components: Components) -> int:
        return len(components.objectives)  # eq. 7's n_obj of a depth child: its own objectives


class TaskFusion(_Rewrite):
    """Appendix B.4: two instructions (c_a, c_b of Algorithm 1) fused into one task, in- or cross-domain."""

    name = "fusion"

    def request(self, t: int, n: int, a: TaCIEItem, b: TaCIEItem, cross_domain: bool) -> dict[str, Any]:
        op = "fusion_cross_domain" if cross_domain else "fusion_in_domain"
        seed = derived_seed(self.ctx.job.seed, "evolve", t, op, n, a.id, b.id)
        req = self.builder.request(seed, **task_values(self.template, a, b))
        return {"op": op, "parents": json.dumps([a.id, b.id]), **req}

    def _n_objectives(self, parents: Sequence[TaCIEItem], components: Components) -> int:
        return sum(p.n_obj for p in parents)  # eq. 7's n_obj: a fused child holds both parents' objectives


class Evolution:
    """Round t's depth evolutions and task fusions, answered in one teacher batch (prefix ``evolve``)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.depth = DepthEvolution(ctx)
        self.fusion = TaskFusion(ctx)

    def process(self, t: int, pool: list[TaCIEItem], depth: list[TaCIEItem],
                fusion: list[tuple[TaCIEItem, TaCIEItem, bool]]) -> list[TaCIEItem]:
        """The children of ``depth`` parents and ``fusion`` pairs (a, b, cross-domain), in request order."""
        requests: list[dict[str, Any]] = []
        for n, parent in enumerate(depth):
            requests.append({"k": len(requests), **self.depth.request(t, n, parent)})
        for n, (a, b, cross) in enumerate(fusion):
            requests.append({"k": len(requests), **self.fusion.request(t, n, a, b, cross)})
        by_id = {it.id: it for it in pool}
        known = set(by_id)
        children: list[TaCIEItem] = []
        for row in self.ctx.calls.run(requests, "evolve", order_key="k"):
            parents = [by_id[p] for p in json.loads(row["parents"])]
            step = self.fusion if row["op"].startswith("fusion") else self.depth
            child = step.child(t, row, parents, known)
            if child is not None:
                known.add(child.id)
                children.append(child)
        return children


class Respond(Operation):
    """The teacher's response to each item (no paper template: ``response.template``)."""

    name = "response"
    inputs = ("id", "instruction", "parent_ids")
    outputs = ("response", "status")

    def process(self, t: int, items: list[TaCIEItem]) -> None:
        ctx = self.ctx
        for item, row in self.ask(items, lambda it: {"instruction": it.instruction}):
            if row["response_error"]:
                outcome, reason = "api_error", row["response_error"]
            else:
                parsed = parse_response(row["response_text"])
                outcome, reason, item.response = parsed.outcome, parsed.reason, parsed.text
            if outcome != "ok":
                item.status = "no_response"
            ctx.record(t, "response", item.id, item.parent_ids, outcome, reason, row, "response")


class Score:
    """Eq. 2-3: q of each answered item and its uncertainty u, from the scorer LM on a Ray actor pool."""

    name = "score"
    inputs = ("id", "instruction", "response")
    outputs = ("q", "uncertainty", "instruction_tokens")

    def __init__(self, job: TaCIEJob, before: Callable[[], None] | None = None):
        self.job = job
        self.before = before  # run before the scorer starts (TaCIE: the teacher's stage actors end)

    def process(self, items: list[TaCIEItem]) -> None:
        if not items:
            return
        job = self.job
        if self.before is not None:
            self.before()
        rows = [{"id": it.id, "instruction": it.instruction, "response": it.response} for it in items]
        scored = run_stage(
            rows,
            ScorerStage,
            {"scorer_cfg": job.scorer, "seed": job.seed},
            batch_size=_SCORER_ROWS_PER_BATCH,
            num_actors=job.scorer.num_actors,
            resources=scorer_resources(job.scorer),
        )
        by_id = {r["id"]: r for r in scored}
        for it in items:
            r = by_id[it.id]
            it.q = _float(r["q"])  # NaN (None after Ray) when nothing of the response could be scored
            it.uncertainty = _float(r["uncertainty"])
            it.instruction_tokens = int(r["instruction_tokens"])


class Embed:
    """The embedding of every item that has none (``embedding`` config; on the driver)."""

    name = "embed"
    inputs = ("instruction", "embedding")
    outputs = ("embedding",)

    def __init__(self, job: TaCIEJob):
        self.job = job

    def process(self, items: list[TaCIEItem]) -> None:
        missing = [it for it in items if it.embedding is None]
        if missing:
            vectors = embed_texts([it.instruction for it in missing], self.job.embedding)
            for it, v in zip(missing, vectors):
                it.embedding = v


def settle(items: list[TaCIEItem], token_limit: int) -> None:
    """Status of answered items, and which may evolve further: an instruction over the token limit, unscored
    or without elements stops evolving (it stays in the pool)."""
    for it in items:
        if it.instruction_tokens > token_limit:
            it.status = "over_token_limit"
        elif not math.isfinite(it.uncertainty):
            it.status = "unscored"
        elif it.decomposition_outcome != "ok":  # answered and kept, but without elements it cannot evolve
            it.status = f"decomposition_{it.decomposition_outcome}"
        else:
            it.status = "ok"
        it.evolvable = it.status == "ok"


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


__all__ = ["OPERATIONS", "Context", "Operation", "Decompose", "Diversify", "DepthEvolution", "TaskFusion", "Evolution",
           "Respond", "Score", "Embed", "settle", "task_values", "needs_elements"]
