"""What a TaCIE job checks before any work starts: its templates, seeds, benchmarks and scorer model.

``fusion validate`` runs it on its own; ``run_tacie`` runs it first and keeps what it loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_pipeline.methods.tacie.config import TaCIEJob
from ray_pipeline.core.errors import SeedError
from ray_pipeline.core.seeds import SeedPool, load_seeds
from ray_pipeline.methods.tacie.filters import Decontaminator, load_benchmark_prompts
from ray_pipeline.methods.tacie.uncertainty.scorer import resolve_model
from ray_pipeline.prompts import PromptTemplate, load_template, warn_not_from_papers


@dataclass
class Preflight:
    #: by key: ``diversify``, ``decompose``, ``fusion``, ``response``, and ``depth`` (Appendix B.3) or
    #: ``depth_constraint`` + ``depth_background`` (v1)
    templates: dict[str, PromptTemplate]
    pool: SeedPool
    decontaminator: Decontaminator
    benchmark_prompts: dict[str, int]
    scorer_model: str


def job_templates(job: TaCIEJob) -> dict[str, PromptTemplate]:
    """The templates of the job's operations, by key (``Preflight.templates``)."""
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
    return templates


def preflight(job: TaCIEJob) -> Preflight:
    """Everything that can be checked before any work starts: templates, seeds, benchmarks, scorer model."""
    templates = job_templates(job)
    warn_not_from_papers({k: t for k, t in templates.items() if k != "response"})  # the paper gives no response prompt
    pool = load_seeds(job.seeds, seed=job.seed)
    if not pool.records:
        raise SeedError("the seed pool is empty")
    benchmarks = {b.name: load_benchmark_prompts(b) for b in job.filters.decontaminate}
    decontaminator = Decontaminator(benchmarks, job.filters.ngram)
    scorer_model = resolve_model(job.scorer).path
    return Preflight(templates, pool, decontaminator, {k: len(v) for k, v in benchmarks.items()}, scorer_model)


__all__ = ["Preflight", "job_templates", "preflight"]
