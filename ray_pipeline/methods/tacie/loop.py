"""TaCIE (Yang et al., 2024): task-centred, multi-round instruction evolution; ``run_tacie`` runs one job.

Equation numbers are the paper's (tacie.txt section 2.3; docs/fidelity.md maps each to its code). This
module is the round loop; each step it takes lives in a module named for it.

Round 0, seed collection:
  1. read the seed pools (``seeds.load_seeds``, in ``preflight``) and embed every seed (``embeddings``);
     each source's declared ``domain`` is the root domain of its seeds and of everything evolved from them;
  2. per source, k-means with k from the elbow method (or the source's ``clusters``), one seed per
     cluster (``collection``);
  3. decomposition of every chosen seed into background / objectives / constraints (eq. 1,
     ``operations.Decompose``);
  4. diversification (Appendix B.2, which takes the seed's elements): the teacher writes new instructions
     with other objectives for each seed; ``collection.diversify`` of them are kept, the most mutually
     dissimilar by embedding (``operations.Diversify``); then they are decomposed too;
  5. a response per item (``operations.Respond``), and its uncertainty under the scorer LM (eq. 2-3,
     ``operations.Score``).
Rounds t = 1..T, evolution (``sampling``, ``operations.Evolution``):
  6. M_d depth candidates drawn with p_i proportional to u_i (eq. 4-5), evolved by Appendix B.3's one
     template (the teacher adds one constraint, or one background element to a reasoning task); M_f task
     fusion pairs drawn with eq. 6-7 by Algorithm 1, half in-domain and half cross-domain, fused by B.4;
  7. parse each rewritten prompt with its sections, answer it, score it, embed it;
  8. C(t+1) = C(t) + D(t) + F(t); n_c of every fusion parent grows (eq. 7); an instruction over the
     token limit stops evolving. The pool is checkpointed after every round (``checkpoints``); a rerun
     resumes at the round it stopped in (teacher calls inside a round come back from the call cache).
Finally: decontamination against benchmark prompts and near-duplicate removal (``pool_filters``),
diversity U (eq. 8-10) per round and seeds vs evolved (``metrics``), and the run directory (``export``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ray_pipeline.analysis.embeddings import embed_texts
from ray_pipeline.core.config import job_to_dict
from ray_pipeline.methods.tacie.config import TaCIEJob
from ray_pipeline.core.executor import connect
from ray_pipeline.core.outputs import RunDir, config_hash
from ray_pipeline.core.seeds import seed_prompt
from ray_pipeline.methods.tacie.attempts import Attempt
from ray_pipeline.methods.tacie.checkpoints import Checkpoint, RunState
from ray_pipeline.methods.tacie.collection import choose_seeds, root_domains, seed_items
from ray_pipeline.methods.tacie.estimate import tacie_estimate
from ray_pipeline.methods.tacie.export import RunRecord, write_outputs
from ray_pipeline.methods.tacie.items import TaCIEItem
from ray_pipeline.methods.tacie.metrics import round_metrics
from ray_pipeline.methods.tacie.operations import (
    Context,
    Decompose,
    Diversify,
    Embed,
    Evolution,
    Respond,
    Score,
    settle,
)
from ray_pipeline.methods.tacie.pool_filters import mark_removed
from ray_pipeline.methods.tacie.preflight import preflight
from ray_pipeline.methods.tacie.sampling import (
    pair_key,
    round_amount,
    sample_depth,
    sample_fusion_pairs,
    update_after_round,
)
from ray_pipeline.teachers.cache import load_cache
from ray_pipeline.teachers.calls import CallTally, RequestBuilder, TeacherCalls
from ray_pipeline.teachers.factory import StageTeacherConfig, teacher_model_name, teacher_session

log = logging.getLogger(__name__)


class TaCIERun:
    """One run of a TaCIE job: the pool, the attempts and the run state, taken round by round."""

    def __init__(self, job: TaCIEJob, address: str | None = None, force: bool = False):
        self.job = job
        self.address = address
        self.force = force
        self.run = RunDir(job.run_dir())
        self.checkpoint = Checkpoint(self.run)
        self.items: list[TaCIEItem] = []
        self.attempts: list[Attempt] = []
        self.state = RunState()
        #: each round's sampling decisions (eq. 4-7, Algorithm 1), for its metrics
        self.draws: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ main
    def execute(self) -> dict[str, Any]:
        t0 = time.monotonic()
        job = self.job
        config = job_to_dict(job)
        self.run.check_compatible(config, self.force)
        self.state.config_hash = config_hash(config)
        checked = preflight(job)
        self.templates, self.pool = checked.templates, checked.pool
        estimate = tacie_estimate(job, self.templates, self.pool.records)  # before anything is paid

        cluster = connect(self.address or job.ray.address)
        done = self._restore()
        if done >= job.evolution.rounds or (done >= 0 and not any(it.evolvable for it in self.items)):
            # nothing left to do for the teacher: filter and write again without starting it
            self.model = self.state.teacher_model
            tally = CallTally()
        else:
            with teacher_session(job.teacher, self.run.log_dir) as stage_cfg:
                self.run.start(config)
                self.model = self.state.teacher_model = teacher_model_name(stage_cfg)
                tally = self._evolve_rounds(stage_cfg, done)
        filters = mark_removed(self.items, checked.decontaminator, job.filters.near_duplicate_threshold)
        record = RunRecord(job, config, cluster, self.model, checked.scorer_model, self.templates, self.pool,
                           self.state, tally, t0, estimate.to_dict() if estimate else None)
        return write_outputs(self.run, record, self.items, self.attempts, filters)

    def _restore(self) -> int:
        """The last round the checkpoints hold (its pool, attempts and state restored), or -1."""
        resumed = self.checkpoint.resume(self.state.config_hash)
        if resumed is None:
            return -1
        self.items, self.attempts, self.state = resumed.items, resumed.attempts, resumed.state
        return resumed.round

    def _evolve_rounds(self, stage_cfg: StageTeacherConfig, done: int) -> CallTally:
        job, ev = self.job, self.job.evolution
        cache = load_cache(self.run.cache_dir)
        if cache:
            log.info("resuming: %d teacher calls already in the cache", len(cache))
        sampling = {"diversify": job.collection.sampling, "decompose": job.decomposition.sampling,
                    "response": job.response.sampling}
        builders = {
            op: RequestBuilder(tpl, sampling.get(op, ev.sampling), self.model, cache) for op, tpl in self.templates.items()
        }
        with TeacherCalls(stage_cfg, job.ray, self.run.cache_dir) as calls:  # its stage actors end with the rounds
            ctx = Context(job, self.templates, builders, calls, self.attempts)
            self.decompose, self.diversify, self.evolution = Decompose(ctx), Diversify(ctx), Evolution(ctx)
            # the teacher's stage actors give their CPUs back while the scorer runs (on one machine it may take all)
            self.respond, self.score, self.embed = Respond(ctx), Score(job, before=calls.release), Embed(job)
            items = self.items
            if done < 0:
                items = self._collect(self.pool.records)
                self._finish_round(0, items)
                done = 0
            for t in range(done + 1, ev.rounds + 1):
                if not any(it.evolvable for it in items):
                    log.warning("round %d: no evolvable item left; stopping the rounds early", t)
                    break
                items = self._evolve(t, items)
                self._finish_round(t, items)
        self.items = items
        return calls.tally

    def _finish_round(self, t: int, items: list[TaCIEItem]) -> None:
        self.state.rounds = self.state.rounds[:t] + [round_metrics(t, items, self.attempts, self.draws.get(t, {}))]
        m = self.state.rounds[-1]
        log.info(
            "round %d: pool %d (+%s), diversity U %s, success %s",
            t, m["pool_size"], m["added"], "n/a" if m["diversity_u"] is None else f"{m['diversity_u']:.5f}",
            {k: round(v, 2) for k, v in m["success_rate"].items()},
        )
        self.checkpoint.save(t, items, self.attempts, self.state)

    # ------------------------------------------------------ round 0: seeds
    def _collect(self, seeds: list[dict[str, str]]) -> list[TaCIEItem]:
        job = self.job
        texts = [seed_prompt(s) for s in seeds]
        X = embed_texts(texts, job.embedding)
        chosen, self.state.collection = choose_seeds(job, seeds, X)
        roots = root_domains(job, self.pool, seeds)
        if job.evolution.root_domain != "source":  # the manifest records declared (or detected) domains only
            self.state.root_domains = roots
        items = seed_items(seeds, texts, X, chosen, roots)
        self.decompose.process(items)
        new, self.state.diversification = self.diversify.process(items)
        self.decompose.process(new)
        items += new
        self._complete(0, items)
        return items

    # ------------------------------------------------ responses and scores
    def _complete(self, t: int, items: list[TaCIEItem]) -> None:
        """Respond to, score and embed new items; decide which may evolve further."""
        todo = [it for it in items if it.status == "new"]
        self.respond.process(t, todo)
        answered = [it for it in todo if it.response]
        self.score.process(answered)
        self.embed.process(items)
        settle(answered, self.job.evolution.token_limit)

    # ------------------------------------------------ rounds t >= 1: evolve
    def _evolve(self, t: int, items: list[TaCIEItem]) -> list[TaCIEItem]:
        job, ev = self.job, self.job.evolution
        pool_idx = [i for i, it in enumerate(items) if it.evolvable]
        candidates = [items[i].candidate() for i in pool_idx]
        round0 = self.state.rounds[0]["pool_size"] if self.state.rounds else len(candidates)
        m_d = round_amount(ev.depth_per_round, round0)  # M_d (eq. 5)
        m_f = round_amount(ev.fusion_per_round, round0)  # M_f (Algorithm 1)
        rng = np.random.default_rng([job.seed, t])
        depth = sample_depth(candidates, m_d, rng)  # eq. 4-5
        exclude = frozenset(self.state.used_pairs) if ev.exclude_used_pairs else frozenset()
        draw = sample_fusion_pairs(candidates, m_f, rng, exclude=exclude)  # eq. 6-7, Algorithm 1
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
        pairs = []
        for pair in draw.pairs:
            a, b = items[pool_idx[pair.first]], items[pool_idx[pair.second]]
            self.state.used_pairs.add(pair_key(a.id, b.id))
            pairs.append((a, b, pair.cross_domain))
        children = self.evolution.process(t, items, [items[pool_idx[c]] for c in depth], pairs)
        # eq. 7: n_c is how often an item seeded a task fusion: every pair drawn counts, parsed or not
        for i, cand in zip(pool_idx, update_after_round(candidates, draw.pairs, [])):
            items[i].n_fusions = cand.n_fusions
        self._complete(t, children)
        return items + children


def run_tacie(job: TaCIEJob, address: str | None = None, force: bool = False) -> dict[str, Any]:
    """Run (or resume) a TaCIE job; its manifest."""
    return TaCIERun(job, address=address, force=force).execute()


__all__ = ["run_tacie", "TaCIERun"]
