"""TaCIE (Yang et al., 2024): task-centred, multi-round instruction evolution.

Equation numbers are the paper's (tacie.txt section 2.3; docs/fidelity.md maps each to its code).

Round 0, seed collection:
  1. read the seed pools (``seeds.load_seeds``) and embed every seed (``embeddings``); each source's
     declared ``domain`` is the root domain of its seeds and of everything evolved from them;
  2. per source, k-means with k from the elbow method (or the source's ``clusters``), one seed per
     cluster (``clustering``);
  3. decomposition of every chosen seed into background / objectives / constraints (eq. 1, ``decomposition``);
  4. diversification (Appendix B.2, which takes the seed's elements): the teacher writes new instructions
     with other objectives for each seed; ``collection.diversify`` of them are kept, the most mutually
     dissimilar by embedding (``diversity.most_dissimilar``); then they are decomposed too;
  5. a response per item (teacher), and its uncertainty under the scorer LM (eq. 2-3, ``stages.scorer_stage``).
Rounds t = 1..T, evolution (``evolution_sampling``):
  6. M_d depth candidates drawn with p_i proportional to u_i (eq. 4-5), evolved by Appendix B.3's one
     template (the teacher adds one constraint, or one background element to a reasoning task); M_f task
     fusion pairs drawn with eq. 6-7 by Algorithm 1, half in-domain and half cross-domain, fused by B.4;
  7. parse each rewritten prompt with its sections, answer it, score it, embed it;
  8. C(t+1) = C(t) + D(t) + F(t); n_c of every fusion parent grows (eq. 7); an instruction over the
     token limit stops evolving. The pool is checkpointed after every round; a rerun resumes at the
     round it stopped in (teacher calls inside a round come back from the call cache).
Finally: decontamination against benchmark prompts and near-duplicate removal (``filters``),
diversity U (eq. 8-10) per round and seeds vs evolved (``diversity``), and the run directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_pipeline.teachers.cache import load_cache
from ray_pipeline.analysis.clustering import pick_per_source
from ray_pipeline.core.config import TaCIEJob, job_to_dict
from ray_pipeline.methods.tacie.decomposition import Components, format_components, parse_decomposition, parse_diversified, parse_evolution
from ray_pipeline.analysis.diversity import diversity_u, most_dissimilar
from ray_pipeline.analysis.embeddings import embed_texts
from ray_pipeline.core.errors import FusionError, SeedError
from ray_pipeline.methods.tacie.sampling import (
    EvolvableItem,
    pair_key,
    round_amount,
    sample_depth,
    sample_fusion_pairs,
    update_after_round,
)
from ray_pipeline.core.executor import connect, run_stage
from ray_pipeline.methods.tacie.filters import Decontaminator, load_benchmark_prompts, near_duplicates
from ray_pipeline.core.outputs import RunDir, atomic_write_json, atomic_write_parquet, config_hash, package_versions
from ray_pipeline.prompts.parsing import cut_off, parse_response
from ray_pipeline.core.determinism import derived_seed
from ray_pipeline.teachers.calls import CallTally, RequestBuilder, TeacherCalls
from ray_pipeline.prompts import PromptTemplate, load_template, warn_not_from_papers
from ray_pipeline.methods.tacie.uncertainty.scorer import resolve_model
from ray_pipeline.core.seeds import SeedPool, load_seeds, seed_prompt
from ray_pipeline.methods.tacie.uncertainty.stage import ScorerStage, scorer_resources
from ray_pipeline.teachers.factory import StageTeacherConfig, teacher_model_name, teacher_session
from ray_pipeline.teachers.pricing import cost_usd, price_for

log = logging.getLogger(__name__)

#: operations, in the order the report lists them
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
_ATTEMPT_OUTCOMES = ("ok", "invalid", "parse_error", "api_error")
# Rows per scorer map_batches call: each row is 1 + N_U sequences.
_SCORER_ROWS_PER_BATCH = 16

ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("round", pa.int64()),
        ("operation", pa.string()),
        ("parent_ids", pa.list_(pa.string())),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("root_domain", pa.string()),
        ("language", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("background", pa.list_(pa.string())),
        ("objectives", pa.list_(pa.string())),
        ("constraints", pa.list_(pa.string())),
        ("decomposition_outcome", pa.string()),
        ("q", pa.float64()),
        ("uncertainty", pa.float64()),
        ("instruction_tokens", pa.int64()),
        ("n_fusions", pa.int64()),
        ("n_objectives", pa.int64()),
        ("evolvable", pa.bool_()),
        ("status", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("kept", pa.bool_()),
        ("removed_reason", pa.string()),
        ("teacher_model", pa.string()),
        ("template", pa.string()),
        ("template_sha256", pa.string()),
    ]
)

ATTEMPT_SCHEMA = pa.schema(
    [
        ("round", pa.int64()),
        ("operation", pa.string()),
        ("item_id", pa.string()),
        ("parent_ids", pa.list_(pa.string())),
        ("outcome", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("cache_key", pa.string()),
        ("cached", pa.bool_()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("node", pa.string()),
    ]
)


def _item_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _new_item(**fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "parent_ids": [],
        "response": "",
        "background": [],
        "objectives": [],
        "constraints": [],
        "decomposition_outcome": "",
        "q": float("nan"),
        "uncertainty": float("nan"),
        "instruction_tokens": 0,
        "n_fusions": 0,
        "n_objectives": 0,
        "evolvable": False,
        "status": "new",
        "embedding": None,
        "kept": True,
        "removed_reason": "",
        "template": "",
        "template_sha256": "",
    }
    item.update(fields)
    return item


def _components(item: dict[str, Any]) -> Components:
    return Components(tuple(item["background"]), tuple(item["objectives"]), tuple(item["constraints"]))


def task_values(template: PromptTemplate, *items: dict[str, Any]) -> dict[str, str]:
    """The values a template takes for one task or a pair, under either naming.

    The papers' templates call an instruction ``prompt`` and its elements
    ``extracted`` (``prompt1``, ``extracted2`` for a pair); the v1 templates say
    ``instruction`` and ``components`` (``instruction_1``). Elements are laid
    out in the template's ``elements_format``.
    """
    values: dict[str, str] = {}
    for k, item in enumerate(items, 1):
        suffixes = ("",) if len(items) == 1 else (f"_{k}", f"{k}")
        elements = format_components(_components(item), template.elements_format)
        for sfx in suffixes:
            values[f"instruction{sfx}"] = values[f"prompt{sfx}"] = item["instruction"]
            values[f"components{sfx}"] = values[f"extracted{sfx}"] = elements
    return {v: values[v] for v in template.variables if v in values}


def _needs_elements(template: PromptTemplate) -> bool:
    return any(v.startswith(("components", "extracted")) for v in template.variables)


class _Checkpoint:
    """``checkpoints/`` of a run: the pool and attempts after each finished round, and a state file naming the last.

    The round's Parquet files are written first and ``state.json`` last (each atomically), so a crash
    between them leaves the previous state pointing at the previous, complete round.
    """

    def __init__(self, run: RunDir):
        self.dir = run.path / "checkpoints"
        self.state_path = self.dir / "state.json"

    def save(self, round_no: int, items: list[dict[str, Any]], attempts: list[dict[str, Any]], state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_parquet(self.dir / f"round-{round_no:02d}.items.parquet", _items_table(items))
        atomic_write_parquet(self.dir / f"round-{round_no:02d}.attempts.parquet", pa.Table.from_pylist(attempts, schema=ATTEMPT_SCHEMA))
        atomic_write_json(self.state_path, {"round": round_no, **state})

    def load(self) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]] | None:
        if not self.state_path.is_file():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            round_no = int(state.pop("round"))
            items = pq.read_table(self.dir / f"round-{round_no:02d}.items.parquet").to_pylist()
            attempts = pq.read_table(self.dir / f"round-{round_no:02d}.attempts.parquet").to_pylist()
        except (OSError, ValueError, KeyError, pa.ArrowException) as err:
            raise FusionError(f"{self.dir}: checkpoint unreadable ({err}); move it away to start the rounds again") from None
        for item in items:
            item["embedding"] = np.asarray(item["embedding"], dtype=np.float32) if item["embedding"] else None
        return round_no, items, attempts, state


@dataclass
class Preflight:
    templates: dict[str, PromptTemplate]
    pool: SeedPool
    decontaminator: Decontaminator
    benchmark_prompts: dict[str, int]
    scorer_model: str


def preflight(job: TaCIEJob) -> Preflight:
    """Everything that can be checked before any work starts: templates, seeds, benchmarks, scorer model."""
    ev = job.evolution
    templates = {
        "diversify": load_template(job.collection.template),
        "decompose": load_template(job.decomposition.template),
        "fusion": load_template(ev.fusion_template),
        "response": load_template(job.response.template),
    }
    if ev.depth_background_template:  # two depth templates, chosen by the seed's domain (the v1 way)
        templates["depth_constraint"] = load_template(ev.depth_template)
        templates["depth_background"] = load_template(ev.depth_background_template)
    else:  # Appendix B.3: one template, the teacher picks the method
        templates["depth"] = load_template(ev.depth_template)
    warn_not_from_papers({k: t for k, t in templates.items() if k != "response"})  # the paper gives no response prompt
    pool = load_seeds(job.seeds, seed=job.seed)
    if not pool.records:
        raise SeedError("the seed pool is empty")
    benchmarks = {b.name: load_benchmark_prompts(b) for b in job.filters.decontaminate}
    decontaminator = Decontaminator(benchmarks, job.filters.ngram)
    scorer_model = resolve_model(job.scorer).path
    return Preflight(templates, pool, decontaminator, {k: len(v) for k, v in benchmarks.items()}, scorer_model)


class TaCIERun:
    def __init__(self, job: TaCIEJob, address: str | None = None, force: bool = False):
        self.job = job
        self.address = address
        self.force = force
        self.run = RunDir(job.run_dir())
        self.checkpoint = _Checkpoint(self.run)
        self.attempts: list[dict[str, Any]] = []
        self.round_metrics: list[dict[str, Any]] = []
        self.used_pairs: set[tuple[str, str]] = set()
        self.collection: dict[str, Any] = {}
        self.root_domains: dict[str, str] = {}
        self.diversification: dict[str, Any] = {}
        self.draws: dict[int, dict[str, int]] = {}

    # ------------------------------------------------------------------ main
    def execute(self) -> dict[str, Any]:
        t0 = time.monotonic()
        job = self.job
        config = job_to_dict(job)
        self.run.check_compatible(config, self.force)
        self.config_hash = config_hash(config)
        ev = job.evolution
        checked = preflight(job)
        self.templates, self.pool, decontaminator, self.scorer_model = (
            checked.templates, checked.pool, checked.decontaminator, checked.scorer_model
        )
        pool = self.pool

        cluster = connect(self.address or job.ray.address)
        items, done = self._restore()
        if done >= ev.rounds or (done >= 0 and not any(it["evolvable"] for it in items)):
            # nothing left to do for the teacher: filter and write again without starting it
            self.model = self.teacher_model
            self.tally = CallTally()
        else:
            with teacher_session(job.teacher, self.run.log_dir) as stage_cfg:
                self.run.start(config)
                self.model = teacher_model_name(stage_cfg)
                self._evolve_rounds(stage_cfg, items, done)
        filters = self._filter(self.items, decontaminator)
        return self._write(config, pool, self.items, filters, cluster, t0)

    def _evolve_rounds(self, stage_cfg: StageTeacherConfig, items: list[dict[str, Any]], done: int) -> None:
        job, ev = self.job, self.job.evolution
        cache = load_cache(self.run.cache_dir)
        if cache:
            log.info("resuming: %d teacher calls already in the cache", len(cache))
        sampling = {"diversify": job.collection.sampling, "decompose": job.decomposition.sampling,
                    "response": job.response.sampling}
        self.builders = {
            op: RequestBuilder(tpl, sampling.get(op, ev.sampling), self.model, cache) for op, tpl in self.templates.items()
        }
        self.calls = TeacherCalls(stage_cfg, job.ray, self.run.cache_dir)
        self.tally = self.calls.tally
        if done < 0:
            items = self._collect(self.pool.records)
            self._finish_round(0, items)
            done = 0
        for t in range(done + 1, ev.rounds + 1):
            if not any(it["evolvable"] for it in items):
                log.warning("round %d: no evolvable item left; stopping the rounds early", t)
                break
            items = self._evolve(t, items)
            self._finish_round(t, items)
        self.items = items

    def _restore(self) -> tuple[list[dict[str, Any]], int]:
        loaded = self.checkpoint.load()
        if loaded is None:
            return [], -1
        done, items, attempts, state = loaded
        if state.get("config_hash") != self.config_hash:  # another job's rounds (the directory was reused with --force)
            log.warning("%s holds another job's rounds; starting the rounds again", self.checkpoint.dir)
            return [], -1
        self.items, self.attempts = items, attempts
        self.round_metrics = state["rounds"][: done + 1]
        self.used_pairs = {tuple(p) for p in state["used_pairs"]}
        self.collection = state.get("collection", {})
        self.root_domains = state.get("root_domains", {})
        self.diversification = state.get("diversification", {})
        self.teacher_model = state.get("teacher_model", "")
        log.info("resuming after round %d: %d items in the pool", done, len(items))
        return items, done

    def _finish_round(self, t: int, items: list[dict[str, Any]]) -> None:
        self.round_metrics = self.round_metrics[:t] + [self._round_metrics(t, items)]
        m = self.round_metrics[-1]
        log.info(
            "round %d: pool %d (+%s), diversity U %s, success %s",
            t, m["pool_size"], m["added"], "n/a" if m["diversity_u"] is None else f"{m['diversity_u']:.5f}",
            {k: round(v, 2) for k, v in m["success_rate"].items()},
        )
        state = {
            "config_hash": self.config_hash,
            "teacher_model": self.model,
            "rounds": self.round_metrics,
            "used_pairs": sorted(list(p) for p in self.used_pairs),
            "collection": self.collection,
            "root_domains": self.root_domains,
            "diversification": self.diversification,
        }
        self.checkpoint.save(t, items, self.attempts, state)

    # ------------------------------------------------------ round 0: seeds
    def _collect(self, seeds: list[dict[str, str]]) -> list[dict[str, Any]]:
        job = self.job
        texts = [seed_prompt(s) for s in seeds]
        X = embed_texts(texts, job.embedding)
        if job.collection.cluster:
            clusters = {src.label: src.clusters for src in job.seeds if src.clusters is not None}
            results = pick_per_source(X, [s["source"] for s in seeds], job.collection.k_min, job.collection.k_max, job.seed,
                                      clusters=clusters)
            chosen = sorted(i for r in results.values() for i in r.chosen)
            self.collection = {
                src: {"seeds": int(np.sum([s["source"] == src for s in seeds])), "k": int(r.k), "k_from": r.k_from,
                      "chosen": len(r.chosen), "inertias": {str(k): float(v) for k, v in r.inertias.items()}}
                for src, r in results.items()
            }
        else:
            chosen = list(range(len(seeds)))
            self.collection = {"cluster": False, "chosen": len(chosen)}
        log.info("seed collection: %d of %d seeds chosen (%s)", len(chosen), len(seeds), self.collection)
        roots = self._root_domains(seeds)
        items = [
            _new_item(
                id=seeds[i]["id"], round=0, operation="seed", source=seeds[i]["source"], domain=seeds[i]["domain"],
                root_domain=roots[seeds[i]["source"]], language=seeds[i]["language"], instruction=texts[i], embedding=X[i],
            )
            for i in chosen
        ]
        self._decompose(items)
        new = self._diversify(items)
        self._decompose(new)
        items += new
        self._complete(0, items)
        return items

    def _root_domains(self, seeds: list[dict[str, str]]) -> dict[str, str]:
        """The root domain of each seed source (eq. 7's n_root; in- or cross-domain fusion), which every item
        descended from its seeds inherits from its first parent.

        The paper's root domains are the sources' domains (Alpaca and ShareGPT general, GSM8K and MATH math,
        CodeAlpaca code): a source's declared ``domain``. A source left at ``auto`` takes the domain most of its
        rows were detected as, with a warning. ``evolution.root_domain: source`` uses the source label instead,
        as the authors' code does.
        """
        if self.job.evolution.root_domain == "source":
            return {s["source"]: s["source"] for s in seeds}
        declared = self.pool.source_domains
        detected: dict[str, Counter] = {}
        for s in seeds:
            detected.setdefault(s["source"], Counter())[s["domain"]] += 1
        roots = {}
        for label, counts in detected.items():
            domain = declared.get(label, "auto")
            if domain == "auto":
                domain = counts.most_common(1)[0][0]
                log.warning("seed source %s declares no domain: its root domain is %s, the domain most of its rows "
                            "were detected as (%s); set `domain:` on the source to choose", label, domain, dict(counts))
            roots[label] = domain
        self.root_domains = roots
        return roots

    def _diversify(self, seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = self.job.collection.diversify
        if n == 0:
            return []
        builder = self.builders["diversify"]
        tpl = self.templates["diversify"]
        asks_n = "n" in tpl.variables  # v1 asks for n; B.2 asks for ten, of which n are kept
        if _needs_elements(tpl):  # B.2 shows the seed's elements: a seed that could not be decomposed is not diversified
            skipped = [s["id"] for s in seeds if s["decomposition_outcome"] != "ok"]
            seeds = [s for s in seeds if s["decomposition_outcome"] == "ok"]
            if skipped:
                log.warning("diversification: %d seeds without elements (decomposition failed) are not diversified", len(skipped))
            self.diversification["skipped_undecomposed"] = len(skipped)
        requests = []
        for k, seed in enumerate(seeds):
            values = task_values(tpl, seed) | ({"n": str(n)} if asks_n else {})
            requests.append({"k": k, **builder.request(derived_seed(self.job.seed, "diversify", seed["id"]), **values)})
        parsed_texts: dict[int, list[str]] = {}
        for row in self.calls.run(requests, "diversify", order_key="k"):
            seed = seeds[row["k"]]
            if row["diversify_error"]:
                outcome, reason, texts = "api_error", row["diversify_error"], []
            else:
                elements = task_values(tpl, seed)
                parsed = parse_diversified(row["diversify_text"], seed["instruction"], tpl, n=n if asks_n else None,
                                           inputs=[v for name, v in elements.items() if name not in ("instruction", "prompt")])
                texts = list(parsed.instructions)
                cut = bool(texts) and cut_off(row["diversify_text"], row["diversify_finish_reason"], texts[-1])
                if cut:
                    texts.pop()  # the last entry ran into max_tokens
                outcome = "ok" if texts else "parse_error"
                reason = parsed.reason or "; ".join(parsed.dropped + (("last entry cut off at max_tokens",) if cut else ()))[:500]
            self._attempt(0, "diversify", "", [seed["id"]], outcome, reason, row, "diversify")
            parsed_texts[row["k"]] = texts
        generated = sum(len(t) for t in parsed_texts.values())
        chosen = self._keep_dissimilar(seeds, parsed_texts, n)
        self.diversification.update(
            template=tpl.ref, seeds=len(seeds), generated=generated, kept=sum(len(t) for t in chosen.values()),
            kept_per_seed=n, selection="most mutually dissimilar (embedding)" if not asks_n else "as asked",
        )
        new: list[dict[str, Any]] = []
        for k in sorted(chosen):
            seed, texts = seeds[k], chosen[k]
            for j, text in enumerate(texts):
                new.append(
                    _new_item(
                        id=_item_id("diversify", seed["id"], j, text), round=0, operation="diversify",
                        parent_ids=[seed["id"]], source=seed["source"], domain=seed["domain"],
                        root_domain=seed["root_domain"], language=seed["language"], instruction=text,
                        template=tpl.ref, template_sha256=tpl.sha256,
                    )
                )
        return new

    def _keep_dissimilar(self, seeds: list[dict[str, Any]], texts: dict[int, list[str]], n: int) -> dict[int, list[str]]:
        """Per seed, at most ``n`` of its new instructions: the most mutually dissimilar (and unlike the seed)."""
        over = [k for k, t in texts.items() if len(t) > n]
        if not over:
            return texts
        vectors = embed_texts([t for k in over for t in texts[k]], self.job.embedding)
        chosen = dict(texts)
        start = 0
        for k in over:
            X = vectors[start:start + len(texts[k])]
            start += len(texts[k])
            keep = most_dissimilar(np.asarray(seeds[k]["embedding"]), X, n)
            chosen[k] = [texts[k][i] for i in keep]
        return chosen

    def _decompose(self, items: list[dict[str, Any]]) -> None:
        builder = self.builders["decompose"]
        tpl = self.templates["decompose"]
        requests = [
            {"k": k, **builder.request(derived_seed(self.job.seed, "decompose", it["id"]), **task_values(tpl, it))}
            for k, it in enumerate(items)
        ]
        for row in self.calls.run(requests, "decompose", order_key="k"):
            item = items[row["k"]]
            if row["decompose_error"]:
                outcome, reason = "api_error", row["decompose_error"]
            else:
                parsed = parse_decomposition(row["decompose_text"], tpl, inputs=[item["instruction"]])
                outcome, reason = parsed.outcome, parsed.reason
                if parsed.outcome == "ok":
                    c = parsed.components
                    item.update(background=list(c.background), objectives=list(c.objectives), constraints=list(c.constraints),
                                n_objectives=len(c.objectives))
            item["decomposition_outcome"] = outcome
            self._attempt(0, "decompose", item["id"], item["parent_ids"], outcome, reason, row, "decompose")

    # ------------------------------------------------ responses and scores
    def _complete(self, t: int, items: list[dict[str, Any]]) -> None:
        """Respond to, score and embed new items; decide which may evolve further."""
        todo = [it for it in items if it["status"] == "new"]
        builder = self.builders["response"]
        requests = [
            {"k": k, **builder.request(derived_seed(self.job.seed, "response", it["id"]), instruction=it["instruction"])}
            for k, it in enumerate(todo)
        ]
        for row in self.calls.run(requests, "response", order_key="k"):
            item = todo[row["k"]]
            if row["response_error"]:
                outcome, reason = "api_error", row["response_error"]
            else:
                parsed = parse_response(row["response_text"])
                outcome, reason, item["response"] = parsed.outcome, parsed.reason, parsed.text
            if outcome != "ok":
                item["status"] = "no_response"
            self._attempt(t, "response", item["id"], item["parent_ids"], outcome, reason, row, "response")
        answered = [it for it in todo if it["response"]]
        self._score(answered)
        missing = [it for it in items if it["embedding"] is None]
        if missing:
            vectors = embed_texts([it["instruction"] for it in missing], self.job.embedding)
            for it, v in zip(missing, vectors):
                it["embedding"] = v
        limit = self.job.evolution.token_limit
        for it in answered:
            if it["instruction_tokens"] > limit:
                it["status"] = "over_token_limit"
            elif not math.isfinite(it["uncertainty"]):
                it["status"] = "unscored"
            elif it["decomposition_outcome"] != "ok":  # answered and kept, but without elements it cannot evolve
                it["status"] = f"decomposition_{it['decomposition_outcome']}"
            else:
                it["status"] = "ok"
            it["evolvable"] = it["status"] == "ok"

    def _score(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        job = self.job
        rows = [{"id": it["id"], "instruction": it["instruction"], "response": it["response"]} for it in items]
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
            r = by_id[it["id"]]
            it["q"] = _float(r["q"])  # NaN (None after Ray) when nothing of the response could be scored
            it["uncertainty"] = _float(r["uncertainty"])
            it["instruction_tokens"] = int(r["instruction_tokens"])

    # ------------------------------------------------ rounds t >= 1: evolve
    def _evolve(self, t: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        job, ev = self.job, self.job.evolution
        pool_idx = [i for i, it in enumerate(items) if it["evolvable"]]
        candidates = [
            EvolvableItem(
                id=items[i]["id"], uncertainty=items[i]["uncertainty"], n_fusions=items[i]["n_fusions"],
                n_objectives=_n_objectives(items[i]), root_domain=items[i]["root_domain"],
            )
            for i in pool_idx
        ]
        round0 = self.round_metrics[0]["pool_size"] if self.round_metrics else len(candidates)
        m_d = round_amount(ev.depth_per_round, round0)  # M_d (eq. 5)
        m_f = round_amount(ev.fusion_per_round, round0)  # M_f (Algorithm 1)
        rng = np.random.default_rng([job.seed, t])
        depth = sample_depth(candidates, m_d, rng)
        exclude = frozenset(self.used_pairs) if ev.exclude_used_pairs else frozenset()
        draw = sample_fusion_pairs(candidates, m_f, rng, exclude=exclude)
        if draw.shortfall:
            log.warning("round %d: %d fusion pairs short (no item could make another pair)", t, draw.shortfall)
        self.draws[t] = {
            "m_d": m_d, "m_f": m_f, "depth": len(depth), "fusion": len(draw.pairs),
            "fusion_in_domain": sum(not p.cross_domain for p in draw.pairs),
            "fusion_cross_domain": sum(p.cross_domain for p in draw.pairs),
            "fusion_short": draw.shortfall, "cross_as_in_domain": draw.cross_as_in_domain,
            "in_as_cross_domain": draw.in_as_cross_domain, "replaced_first": draw.replaced_first,
            "c_b_draws": draw.draws,
        }

        requests: list[dict[str, Any]] = []
        for n, c in enumerate(depth):
            parent = items[pool_idx[c]]
            if "depth" in self.templates:
                op = "depth"  # Appendix B.3: the teacher picks the method
            else:
                op = "depth_background" if parent["domain"] == "math" else "depth_constraint"
            seed = derived_seed(job.seed, "evolve", t, op, n, parent["id"])
            req = self.builders[op].request(seed, **task_values(self.templates[op], parent))
            requests.append({"k": len(requests), "op": op, "parents": json.dumps([parent["id"]]), **req})
        for n, pair in enumerate(draw.pairs):
            a, b = items[pool_idx[pair.first]], items[pool_idx[pair.second]]
            op = "fusion_cross_domain" if pair.cross_domain else "fusion_in_domain"
            self.used_pairs.add(pair_key(a["id"], b["id"]))
            seed = derived_seed(job.seed, "evolve", t, op, n, a["id"], b["id"])
            req = self.builders["fusion"].request(seed, **task_values(self.templates["fusion"], a, b))
            requests.append({"k": len(requests), "op": op, "parents": json.dumps([a["id"], b["id"]]), **req})

        by_id = {it["id"]: it for it in items}
        known = set(by_id)
        children: list[dict[str, Any]] = []
        for row in self.calls.run(requests, "evolve", order_key="k"):
            op, parent_ids = row["op"], json.loads(row["parents"])
            parents = [by_id[p] for p in parent_ids]
            if row["evolve_error"]:
                outcome, reason, parsed = "api_error", row["evolve_error"], None
            else:
                tpl = self.templates["fusion" if op.startswith("fusion") else op]
                elements = [format_components(_components(p), tpl.elements_format) for p in parents]
                inherit = _components(parents[0]) if len(parents) == 1 else None  # B.3 may leave out unchanged sections
                parsed = parse_evolution(row["evolve_text"], tuple(p["instruction"] for p in parents), tpl,
                                         inputs=elements, inherit=inherit)
                outcome, reason = parsed.outcome, parsed.reason
                if outcome == "ok" and cut_off(row["evolve_text"], row["evolve_finish_reason"], parsed.instruction):
                    outcome, reason = "parse_error", "rewritten prompt cut off at max_tokens"
            child_id = ""
            if outcome == "ok":
                child_id = _item_id(op, *parent_ids, parsed.instruction)
                if child_id in known:
                    outcome, reason = "parse_error", "same instruction as an item already in the pool"
            self._attempt(t, op, child_id if outcome == "ok" else "", parent_ids, outcome, reason, row, "evolve")
            if outcome != "ok":
                continue
            known.add(child_id)
            first = parents[0]
            c = parsed.components
            tpl = self.templates["fusion" if op.startswith("fusion") else op]
            # eq. 7's n_obj: a fused child holds both parents' objectives; a depth child its own
            n_obj = sum(_n_objectives(p) for p in parents) if op.startswith("fusion") else len(c.objectives)
            children.append(
                _new_item(
                    id=child_id, round=t, operation=op, parent_ids=parent_ids, source=first["source"],
                    domain=first["domain"], root_domain=first["root_domain"], language=first["language"],
                    instruction=parsed.instruction, background=list(c.background), objectives=list(c.objectives),
                    constraints=list(c.constraints), decomposition_outcome="ok", n_objectives=n_obj,
                    template=tpl.ref, template_sha256=tpl.sha256,
                )
            )
        # eq. 7: n_c is how often an item seeded a task fusion: every pair drawn counts, parsed or not
        for i, cand in zip(pool_idx, update_after_round(candidates, draw.pairs, [])):
            items[i]["n_fusions"] = cand.n_fusions
        self._complete(t, children)
        return items + children

    # ------------------------------------------------------------- records
    def _attempt(self, t: int, op: str, item_id: str, parents: Iterable[str], outcome: str, reason: str,
                 row: dict[str, Any], prefix: str) -> None:
        self.attempts.append(
            {
                "round": t,
                "operation": op,
                "item_id": item_id,
                "parent_ids": list(parents),
                "outcome": outcome,
                "reason": reason or "",
                "raw": row.get(f"{prefix}_text", ""),
                "cache_key": row["cache_key"],
                "cached": bool(row[f"{prefix}_cached"]),
                "prompt_tokens": int(row[f"{prefix}_prompt_tokens"]),
                "completion_tokens": int(row[f"{prefix}_completion_tokens"]),
                "latency_s": float(row[f"{prefix}_latency_s"]),
                "node": row[f"{prefix}_node"],
            }
        )

    def _round_metrics(self, t: int, items: list[dict[str, Any]]) -> dict[str, Any]:
        valid = [it for it in items if it["response"]]
        attempts: dict[str, Counter] = {}
        for a in self.attempts:
            if a["round"] == t:
                attempts.setdefault(a["operation"], Counter())[a["outcome"]] += 1
        added = Counter(it["operation"] for it in valid if it["round"] == t)
        u = np.array([it["uncertainty"] for it in valid if math.isfinite(it["uncertainty"])])
        return {
            "round": t,
            "pool_size": len(valid),
            "evolvable": sum(it["evolvable"] for it in items),
            "added": dict(sorted(added.items())),
            "draws": self.draws.get(t, {}),
            "attempts": {op: {o: c.get(o, 0) for o in _ATTEMPT_OUTCOMES} for op, c in sorted(attempts.items())},
            "success_rate": {op: c.get("ok", 0) / sum(c.values()) for op, c in sorted(attempts.items())},
            "over_token_limit": sum(it["status"] == "over_token_limit" for it in items if it["round"] == t),
            "diversity_u": _u(valid),
            "uncertainty": {"mean": float(u.mean()), "median": float(np.median(u))} if u.size else {"mean": None, "median": None},
            "domains": dict(sorted(Counter(it["root_domain"] for it in valid).items())),
        }

    # --------------------------------------------------------- filters, I/O
    def _filter(self, items: list[dict[str, Any]], decontaminator: Decontaminator) -> dict[str, Any]:
        answered = [it for it in items if it["response"]]
        for it in items:
            if not it["response"]:
                it["kept"], it["removed_reason"] = False, it["status"]
        matches = decontaminator.match_all(it["instruction"] for it in answered)
        for it, bench in zip(answered, matches):
            if bench:
                it["kept"], it["removed_reason"] = False, f"contaminated:{bench}"
        near = 0
        threshold = self.job.filters.near_duplicate_threshold
        live = [i for i, it in enumerate(items) if it["kept"]]
        if threshold is not None and len(live) > 1:
            order = sorted(range(len(live)), key=lambda k: (items[live[k]]["round"], k))
            X = np.stack([items[i]["embedding"] for i in live])
            for k, dup_of in enumerate(near_duplicates(X, threshold, order)):
                if dup_of is not None:
                    it = items[live[k]]
                    it["kept"], it["removed_reason"] = False, f"near_duplicate:{items[live[dup_of]]['id']}"
                    near += 1
        return {
            "near_duplicate": near,
            "contaminated": decontaminator.counts(matches),
            "not_answered": sum(1 for it in items if not it["response"]),
            "kept": sum(it["kept"] for it in items),
        }

    def _write(self, config, pool, items, filters, cluster, t0) -> dict[str, Any]:
        job = self.job
        for it in items:
            it["teacher_model"] = self.model
        valid = [it for it in items if it["response"]]
        kept = [it for it in items if it["kept"]]
        metrics = {
            "rounds": self.round_metrics,
            "diversity": {
                "seeds": _u([it for it in valid if it["round"] == 0]),
                "evolved": _u([it for it in valid if it["round"] > 0]),
                "all": _u(valid),
                "kept": _u(kept),
            },
            "filters": filters,
        }
        self.run.write_table(job.name, _items_table(items))
        atomic_write_parquet(self.run.path / "attempts.parquet", pa.Table.from_pylist(self.attempts, schema=ATTEMPT_SCHEMA))
        atomic_write_json(self.run.path / "metrics.json", _json_safe(metrics))
        self.run.write_jsonl("sft_messages.jsonl", (
            {"id": it["id"], "messages": [{"role": "user", "content": it["instruction"]},
                                          {"role": "assistant", "content": it["response"]}]}
            for it in kept
        ))
        self.run.write_jsonl("sft_alpaca.jsonl", (
            {"id": it["id"], "instruction": it["instruction"], "input": "", "output": it["response"]} for it in kept
        ))
        tally = self.tally
        price = price_for(self.model, getattr(job.teacher, "price", None))
        tokens = {"prompt": sum(a["prompt_tokens"] for a in self.attempts),
                  "completion": sum(a["completion_tokens"] for a in self.attempts)}
        rounds_done = self.round_metrics[-1]["round"] if self.round_metrics else 0
        manifest = {
            "job": job.name,
            "kind": job.kind,
            "config_hash": config_hash(config),
            "config": config,
            "versions": package_versions(),
            "ray": cluster,
            "teacher": {"kind": job.teacher.kind, "model": self.model},
            "scorer": {"backend": job.scorer.backend, "model": str(self.scorer_model),
                       "num_perturbations": job.scorer.num_perturbations, "drop_prob": job.scorer.drop_prob},
            "templates": {k: t.record() for k, t in self.templates.items()},
            "seeds": pool.summary(),
            "collection": self.collection,
            "root_domains": self.root_domains,
            "diversification": self.diversification,
            "rounds_requested": job.evolution.rounds,
            "rounds_completed": rounds_done,
            "complete": rounds_done == job.evolution.rounds,
            "counts": {
                "items": len(items),
                "answered": len(valid),
                "kept": len(kept),
                "by_round": dict(sorted(Counter(str(it["round"]) for it in valid).items())),
                "by_operation": dict(sorted(Counter(it["operation"] for it in valid).items())),
                "attempts": {op: dict(Counter(a["outcome"] for a in self.attempts if a["operation"] == op))
                             for op in OPERATIONS if any(a["operation"] == op for a in self.attempts)},
            },
            "filters": filters,
            "diversity": metrics["diversity"],
            "diversity_metric": "euclidean",  # d_i of eq. 9
            "tokens": tokens,
            "this_run": {"calls": tally.calls, "retries": tally.retries, "cache_hits": tally.cache_hits,
                         "prompt": tally.spent_prompt, "completion": tally.spent_completion},
            "cost_usd": cost_usd(price, tokens["prompt"], tokens["completion"]),
            "cost_usd_this_run": cost_usd(price, tally.spent_prompt, tally.spent_completion),
            "wall_time_s": round(time.monotonic() - t0, 3),
            "outputs": {
                "items": f"{job.name}.parquet",
                "attempts": "attempts.parquet",
                "metrics": "metrics.json",
                "sft_messages": "sft_messages.jsonl",
                "sft_alpaca": "sft_alpaca.jsonl",
                "checkpoints": "checkpoints/",
            },
        }
        manifest = _json_safe(manifest)
        self.run.write_manifest(manifest)
        return manifest


def _n_objectives(item: dict[str, Any]) -> int:
    """n_obj of eq. 7: recorded for evolved items, else the count of the item's objectives (at least 1)."""
    return max(1, int(item.get("n_objectives") or len(item["objectives"])))


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _u(items: list[dict[str, Any]]) -> float | None:
    """Diversity U of the items' embeddings; None for fewer than 3 (two points are each other's neighbour: U = 0)."""
    vectors = [it["embedding"] for it in items if it["embedding"] is not None]
    if len(vectors) < 3:
        return None
    return float(diversity_u(np.stack(vectors)))


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _items_table(items: list[dict[str, Any]]) -> pa.Table:
    rows = []
    for it in items:
        row = {name: it.get(name) for name in ITEM_SCHEMA.names}
        emb = it.get("embedding")
        row["embedding"] = [] if emb is None else np.asarray(emb, dtype=np.float32).tolist()
        row["teacher_model"] = it.get("teacher_model", "")
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)


def run_tacie(job: TaCIEJob, address: str | None = None, force: bool = False) -> dict[str, Any]:
    return TaCIERun(job, address=address, force=force).execute()


__all__ = ["run_tacie", "TaCIERun", "ITEM_SCHEMA", "OPERATIONS"]
