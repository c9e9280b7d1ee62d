"""The papers' prompts, word for word: each v2 template against the text in ../shared/papers.

Whitespace is normalised (the PDF extraction wraps lines and breaks placeholders
across them); every other character must match, the papers' typos included.
"""

import re

import pytest

from ray_pipeline.prompts import load_template
from tests.conftest import SHARED

PAPERS = SHARED / "papers"


def _papers() -> None:
    if not (PAPERS / "tacie.txt").is_file() or not (PAPERS / "instruction-fusion.txt").is_file():
        pytest.skip("../shared/papers is absent: the golden prompt tests need the papers' text")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _template_text(ref: str) -> str:
    tpl = load_template(ref)
    assert [role for role, _ in tpl.messages] == ["user"], f"{ref}: the paper gives one block: one user message"
    return _norm(tpl.messages[0][1])


def _section(text: str, start: str, end: str | None, first_line: str) -> str:
    """The paper's text from the line starting with ``first_line`` inside the section ``start``..``end``."""
    body = text.split(start, 1)[1]
    if end is not None:
        body = body.split(end, 1)[0]
    return body[body.index(first_line):]


TACIE = {
    "tacie_decompose@v2": ("B.1 Instruction Decomposition", "B.2 Diversification", "Given a prompt, your task is to:"),
    "tacie_diversify@v2": ("B.2 Diversification", "B.3 Depth Evolution", "**For the provided prompt"),
    "tacie_depth@v2": ("B.3 Depth Evolution", "B.4 Task Fusion", "Based on a prompt’s existing"),
    "tacie_fusion@v2": ("B.4 Task Fusion", None, "Based on the prompt’s existing"),
}


@pytest.mark.parametrize("ref", TACIE, ids=TACIE.keys())
def test_tacie_templates_are_appendix_b_word_for_word(ref):
    _papers()
    start, end, first = TACIE[ref]
    paper = _section((PAPERS / "tacie.txt").read_text(encoding="utf-8"), start, end, first)
    assert _template_text(ref) == _norm(paper)
    assert load_template(ref).source == "paper"


def test_if_fusion_template_is_the_papers_prompt_word_for_word():
    """Section 2's prompt; the extraction moved rules 2 and 4 to the foot of the page and split "co-herent"."""
    _papers()
    text = (PAPERS / "instruction-fusion.txt").read_text(encoding="utf-8")
    block = text[text.index("Your task is to act as a Prompt Fusion Specialist"):]
    block = block[: block.index("#Fused Prompt#:", block.index("<Here is Instruction 2>")) + len("#Fused Prompt#:")]
    rule2 = re.search(r"\^\{2\.\} (Maintain [^\n]+)", text)[1]
    rule4 = re.search(r"\^\{4\.\} (In cases [^\n]+)", text)[1]
    paper = _norm(block).replace("co- herent", "coherent")
    paper = paper.replace(" 3. Be coherent", f" 2. {rule2} 3. Be coherent")
    paper = paper.replace(" If the resulting", f" 4. {rule4} If the resulting", 1)
    paper = paper.replace("<Here is Instruction 1>", "{{ instruction_1 }}").replace("<Here is Instruction 2>", "{{ instruction_2 }}")
    assert _template_text("if_fusion@v2") == paper
    assert load_template("if_fusion@v2").source == "paper"


def test_if_response_template_is_the_authors_system_prompt():
    """The paper gives no response prompt; the authors' code (hybrid_rand.py) uses this system prompt."""
    tpl = load_template("if_response@v2")
    assert tpl.source == "authors_code"
    assert tpl.messages[0] == (
        "system",
        "As a programmer, your task is to write code to address each provided prompt. If a specific programming "
        "language is not specified, please use Python. Do NOT use pseudo code.",
    )
    assert tpl.render(instruction="Sort {x}")[1] == {"role": "user", "content": "Sort {x}"}


def test_a_changed_word_fails_the_golden_comparison():
    """The comparison is not vacuous: one word changed in the paper's text is a mismatch."""
    _papers()
    start, end, first = TACIE["tacie_fusion@v2"]
    paper = _norm(_section((PAPERS / "tacie.txt").read_text(encoding="utf-8"), start, end, first))
    assert _template_text("tacie_fusion@v2") == paper
    assert _template_text("tacie_fusion@v2") != paper.replace("Constrains", "Constraints", 1)


def test_default_templates_are_the_papers():
    from ray_pipeline.core.config import ResponseConfig
    from ray_pipeline.methods.fusion.config import FusionConfig
    from ray_pipeline.methods.tacie.config import CollectionConfig, DecompositionConfig, EvolutionConfig

    assert FusionConfig(num_instructions=1).template == "if_fusion@v2"
    assert ResponseConfig().template == "if_response@v2"
    assert CollectionConfig().template == "tacie_diversify@v2"
    assert DecompositionConfig().template == "tacie_decompose@v2"
    ev = EvolutionConfig()
    assert (ev.depth_template, ev.depth_background_template, ev.fusion_template) == ("tacie_depth@v2", None, "tacie_fusion@v2")
    # a job file written before the one depth template still loads, as the two v1 templates
    old = EvolutionConfig.model_validate(
        {"depth_constraint_template": "tacie_depth_constraint@v1", "depth_background_template": "tacie_depth_background@v1"}
    )
    assert (old.depth_template, old.depth_background_template) == ("tacie_depth_constraint@v1", "tacie_depth_background@v1")


ITEM_A = {"instruction": "Sort {items} by $key", "background": ["Prices in $ {USD}."], "objectives": ["Sort them."], "constraints": []}
ITEM_B = {"instruction": "Count {{vowels}}", "background": [], "objectives": ["Count the vowels."], "constraints": ["No regex."]}


@pytest.mark.parametrize("ref, items", [
    ("tacie_decompose@v2", (ITEM_A,)), ("tacie_diversify@v2", (ITEM_A,)), ("tacie_depth@v2", (ITEM_A,)),
    ("tacie_fusion@v2", (ITEM_A, ITEM_B)), ("tacie_diversify@v1", (ITEM_A,)), ("tacie_fusion@v1", (ITEM_A, ITEM_B)),
])
def test_task_values_fill_either_naming(ref, items):
    """The papers' templates say prompt/extracted (prompt1, extracted2); v1 says instruction/components."""
    from ray_pipeline.methods.tacie.decomposition import Components, format_components
    from ray_pipeline.methods.tacie.pipeline import task_values

    tpl = load_template(ref)
    values = task_values(tpl, *items) | ({"n": "3"} if "n" in tpl.variables else {})
    assert set(values) == set(tpl.variables)
    text = tpl.render(**values)[-1]["content"]
    for item in items:
        assert item["instruction"] in text  # verbatim, braces and dollars included
        if any(v.startswith(("extracted", "components")) for v in tpl.variables):
            c = Components.from_lists(item["background"], item["objectives"], item["constraints"])
            assert format_components(c, tpl.elements_format) in text
    if tpl.elements_format == "appendix_b":
        assert "**Background Settings:**\n1.Prices in $ {USD}.\n\n**Objectives:**\n1.Sort them." in text


def test_validate_names_the_templates_that_are_not_the_papers(tmp_path):
    """A researcher who switches a prompt sees it before any work starts."""
    import json

    from tests.conftest import fusion_cli, write_job

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Sort a list."}\n{"instruction": "Reverse a string."}\n')
    for name in ("paper", "mine"):
        (tmp_path / name).mkdir()
    paper = write_job(tmp_path / "paper", seeds=[{"path": str(seeds)}], teacher="embedded")
    mine = write_job(tmp_path / "mine", seeds=[{"path": str(seeds)}], teacher="embedded",
                     fusion={"num_instructions": 2, "template": "if_fusion@v1"})
    out = json.loads(fusion_cli("validate", str(paper), timeout=120).stdout)
    assert out["templates"] == {"fusion": "if_fusion@v2", "response": "if_response@v2"}
    assert out["templates_not_from_papers"] == {"response": "if_response@v2 (authors_code)"}
    proc = fusion_cli("validate", str(mine), timeout=120)
    assert json.loads(proc.stdout)["templates_not_from_papers"]["fusion"] == "if_fusion@v1 (project)"
