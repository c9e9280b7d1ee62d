"""The evaluation job file (``kind: eval``): models under evaluation, benchmarks, sampling, the sandbox.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ray_pipeline.core.config import (
    EstimateConfig,
    JobCommon,
    RayConfig,
    StrictModel,
    TeacherConfig,
    VLLMTeacherConfig,
    relative_to_job,
)
from ray_pipeline.core.languages import LANGUAGE_ALIASES, MULTIPLE_LANGUAGES


def _backend_shorthand(value: Any) -> Any:
    """``embedded`` is the bundled model behind vllm serve; any other string is a model for the in-process vLLM engine."""
    if isinstance(value, str):
        return {"kind": "embedded"} if value == "embedded" else {"kind": "vllm", "model": value}
    return value


class EvalModelConfig(StrictModel):
    """A model (or checkpoint) under evaluation, and how it is asked."""

    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", description="its row in the summary table")
    backend: TeacherConfig = Field(description="embedded, a model path or hub id (in-process vLLM), or a teacher mapping")
    prompt: Literal["completion", "chat"] = Field(
        "completion",
        description="completion: continue the benchmark prompt (base models; evalplus's base prompt, MultiPL-E's "
                    "protocol); chat: an instruction prompt and the code block of the answer (instruction-tuned models)",
    )
    template: str = Field("eval_instruct@v1", description="chat prompt template")

    @field_validator("backend", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _backend_shorthand(value)


#: the benchmarks an eval job runs: the IF paper's code benchmarks and the TaCIE paper's instruction benchmarks
CODE_BENCHMARKS = ("humaneval", "mbpp", "multiple")
TEXT_BENCHMARKS = ("gsm8k", "ifeval", "mt_bench")


def _judge_shorthand(value: Any) -> Any:
    """``judge: embedded`` is the bundled model; ``judge: gpt-4o`` a model of the OpenAI API; else a teacher mapping."""
    if isinstance(value, str):
        return {"kind": "embedded"} if value == "embedded" else {"kind": "openai", "model": value}
    return value


class EvalBenchmarkConfig(StrictModel):
    """One benchmark: HumanEval(+), MBPP(+) (evalplus data), MultiPL-E (HumanEval in six languages), GSM8K (test
    split), IFEval or MT-Bench."""

    name: Literal["humaneval", "mbpp", "multiple", "gsm8k", "ifeval", "mt_bench"]
    path: str | None = Field(
        None,
        description="humaneval/mbpp: the evalplus .jsonl(.gz) (default: $HUMANEVAL_OVERRIDE_PATH / $MBPP_OVERRIDE_PATH, "
                    "else evalplus's download); multiple: a directory of humaneval-<lang>-reworded.jsonl (default: "
                    "$FUSION_MULTIPLE_PATH, else the hub); gsm8k: the test .jsonl ($FUSION_GSM8K_PATH, else the hub); "
                    "ifeval: input_data.jsonl ($FUSION_IFEVAL_PATH, else the hub); mt_bench: question.jsonl, with "
                    "the GPT-4 reference answers beside it ($FUSION_MT_BENCH_PATH, else the hub)",
    )
    max_tokens: int | None = Field(
        None, gt=0, description="this benchmark's answer length (default: ifeval 1280 as lm-eval, mt_bench 1024 as "
                                "FastChat, the others sampling.max_tokens)",
    )
    answer_pattern: str | None = Field(
        None, description="gsm8k: a regex whose first group is the final answer (default: 'The answer is N'); an "
                          "answer it does not match is read by its last number",
    )
    judge: TeacherConfig | None = Field(
        None, description="mt_bench: the judge (any teacher; a string is an OpenAI model, 'embedded' the bundled "
                          "one); default gpt-4 through the OpenAI API, MT-Bench's judge",
    )
    judge_max_tokens: int = Field(
        2048, gt=0, description="mt_bench: the judge's answer length (FastChat's 2,048; a small judge model whose "
                                "context is shorter needs less)",
    )
    references: str | None = Field(
        None, description="mt_bench: FastChat's GPT-4 reference answers (reference_answer/gpt-4.jsonl; default: beside "
                          "question.jsonl, as FastChat lays them out); the hub copy of the questions has none",
    )
    category_temperatures: bool = Field(
        True, description="mt_bench: FastChat's temperature per category (writing, roleplay 0.7; stem, humanities "
                          "0.1; the rest 0); false: sampling.temperature for every question",
    )
    languages: list[str] = Field(default_factory=lambda: list(MULTIPLE_LANGUAGES), description="multiple only")
    limit: int | None = Field(None, gt=0, description="the first N tasks (per language)")
    tasks: list[str] | None = Field(None, min_length=1, description="only these task ids")
    prompt: Literal["completion", "chat"] | None = Field(
        None,
        description="how every model is asked on this benchmark, overriding the model's own prompt (null: the "
                    "model's). The IF paper scored MultiPL-E in completion mode (bigcode-evaluation-harness, Table 3) "
                    "and HumanEval(+)/MBPP(+) as instructions (evalplus)",
    )

    @field_validator("judge", mode="before")
    @classmethod
    def _judge(cls, value: Any) -> Any:
        return _judge_shorthand(value)

    @field_validator("languages", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [LANGUAGE_ALIASES.get(str(v).lower(), str(v).lower()) for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> "EvalBenchmarkConfig":
        unknown = [lang for lang in self.languages if lang not in MULTIPLE_LANGUAGES]
        if unknown:
            raise ValueError(f"languages: unknown {unknown} (known: {', '.join(MULTIPLE_LANGUAGES)})")
        if not self.languages:
            raise ValueError("languages: empty")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError("languages: listed twice")
        given = self.model_fields_set
        for key, only in (("languages", "multiple"), ("answer_pattern", "gsm8k"), ("judge", "mt_bench"),
                          ("references", "mt_bench"), ("judge_max_tokens", "mt_bench"),
                          ("category_temperatures", "mt_bench")):
            if key in given and self.name != only:
                raise ValueError(f"{key}: only for {only}, not {self.name}")
        if self.name == "mt_bench" and self.prompt == "completion":
            raise ValueError("prompt: mt_bench is a two-turn chat; completion mode cannot ask its second turn")
        if self.answer_pattern is not None:
            try:
                if re.compile(self.answer_pattern).groups < 1:
                    raise ValueError("answer_pattern: needs a group around the number")
            except re.error as err:
                raise ValueError(f"answer_pattern: not a regular expression ({err})") from None
        return self

    @property
    def answer_tokens(self) -> int | None:
        """The answer length this benchmark asks for: its own, else its harness's, else None (the job's)."""
        if self.max_tokens is not None:
            return self.max_tokens
        if self.name == "ifeval":
            from ray_pipeline.evaluation.ifeval import MAX_GEN_TOKENS  # lm-eval's ifeval max_gen_toks

            return MAX_GEN_TOKENS
        if self.name == "mt_bench":
            from ray_pipeline.evaluation.mt_bench import MAX_NEW_TOKENS  # FastChat's max_new_token

            return MAX_NEW_TOKENS
        return None

    def judge_config(self) -> Any:
        """The MT-Bench judge: the job's, else GPT-4 through the OpenAI API (MT-Bench's default judge)."""
        from ray_pipeline.core.config import OpenAITeacherConfig
        from ray_pipeline.evaluation.mt_bench import JUDGE_MODEL

        return self.judge if self.judge is not None else OpenAITeacherConfig(model=JUDGE_MODEL)


class EvalSamplingConfig(StrictModel):
    """Greedy pass@1 as the papers report (n 1, temperature 0), or n samples for pass@k."""

    n: int = Field(1, gt=0, description="samples per problem")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, gt=0)
    k: list[int] = Field(default_factory=lambda: [1], min_length=1, description="pass@k reported (each k <= n)")

    @model_validator(mode="after")
    def _check(self) -> "EvalSamplingConfig":
        too_big = [k for k in self.k if k <= 0 or k > self.n]
        if too_big:
            raise ValueError(f"k: {too_big} not in 1..n={self.n}")
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n > 1 samples need temperature > 0 (greedy decoding gives n copies of one answer)")
        return self


class SandboxConfig(StrictModel):
    """Where and how generated programs run: bubblewrap sandboxes on Ray actors."""

    parallel: int = Field(2, gt=0, description="sandboxes at once per scoring actor")
    num_actors: int = Field(1, gt=0, description="scoring actors (spread over the cluster's nodes)")
    memory_mb: int = Field(
        4096, gt=0, description="address-space limit of a Python solution (evalplus's default); MultiPL-E languages "
                                "have limits sized for their compilers and runtimes"
    )
    multiple_memory_mb: int = Field(
        4096, gt=0, description="memory of a MultiPL-E program: address space of a native one (C++, Rust, Swift, PHP), "
                                "heap of the JVM (-Xmx) and of Node (--max-old-space-size); MultiPL-E sets no limit"
    )
    output_mb: int = Field(64, gt=0, description="the most one program may write to a file or its stdout/stderr "
                                                 "(MultiPL-E's runner times out past about 200 KB of output)")
    nproc: int = Field(512, gt=0, description="processes and threads one program may run (evalplus and MultiPL-E set "
                                              "no limit; a fork bomb is still contained)")
    timeout_s: float | None = Field(None, gt=0, description="MultiPL-E build/run timeout (default: MultiPL-E's per-language values)")
    min_time_limit: float = Field(1.0, gt=0, description="evalplus: smallest per-test time limit (s)")
    gt_time_limit_factor: float = Field(4.0, gt=0, description="evalplus: per-test limit = factor x the reference solution's time")
    find_zero: Literal["fixed", "0.3.1"] = Field(
        "fixed", description="evalplus's HumanEval/32 (find_zero) oracle: fixed, as evalplus upstream (a root passes); "
                             "0.3.1: as evalplus 0.3.1, which fails every solution there (docs/fidelity.md)"
    )
    isolation: Literal["bwrap", "pod"] = Field(
        "bwrap",
        description="bwrap: each program in its own bubblewrap sandbox (namespaces, read-only system, no network); "
                    "pod: no bubblewrap, for a Kubernetes pod that is itself the sandbox (gVisor, non-root, read-only "
                    "root, no capabilities, no egress; bwrap cannot start there), each program still getting a fresh "
                    "work directory as cwd, TMPDIR and HOME, an empty environment, the prlimit limits and a kill of all "
                    "its processes at the timeout. $FUSION_SANDBOX_ISOLATION (bwrap or pod) on the machine that runs "
                    "the programs overrides this; it changes no verdict, so it is not part of the config hash",
    )


class EvalJob(JobCommon):
    kind: Literal["eval"]
    models: list[EvalModelConfig] = Field(min_length=1)
    benchmarks: list[EvalBenchmarkConfig] = Field(min_length=1)
    sampling: EvalSamplingConfig = Field(default_factory=EvalSamplingConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        """``models: [runs/sft/model]`` is short for ``[{label: model, backend: runs/sft/model}]``."""
        if isinstance(value, list):
            return [{"label": _label_for(v), "backend": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique(self) -> "EvalJob":
        labels = [m.label for m in self.models]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"models: label {twice[0]!r} used twice; give each model its own label")
        names = [b.name for b in self.benchmarks]
        twice = sorted({x for x in names if names.count(x) > 1})
        if twice:
            raise ValueError(f"benchmarks: {twice[0]!r} listed twice")
        return self

    def resolve_paths(self, base: Path) -> None:
        for bench in self.benchmarks:
            bench.path = relative_to_job(base, bench.path, must_exist=False)
            bench.references = relative_to_job(base, bench.references, must_exist=False)
        for bench in self.benchmarks:
            if isinstance(bench.judge, VLLMTeacherConfig):
                bench.judge.model = relative_to_job(base, bench.judge.model, must_exist=True)
        for model in self.models:
            if isinstance(model.backend, VLLMTeacherConfig):
                model.backend.model = relative_to_job(base, model.backend.model, must_exist=True)
                model.backend.chat_template = relative_to_job(base, model.backend.chat_template, must_exist=False)

    def prompt_modes(self, model: EvalModelConfig) -> dict[str, str]:
        """{benchmark: completion|chat} for one model: the benchmark's ``prompt`` where set, else the model's."""
        return {b.name: b.prompt or ("chat" if b.name == "mt_bench" else model.prompt) for b in self.benchmarks}


def _label_for(model: str) -> str:
    """A table label for a model path: its last two path parts (``sft_quickstart-model``), hub ids keep their name."""
    parts = [p for p in model.rstrip("/").split("/") if p not in ("", ".", "..")]
    label = "-".join(parts[-2:]) if len(parts) > 1 else (parts[0] if parts else "model")
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", label).lstrip("-._+") or "model"
