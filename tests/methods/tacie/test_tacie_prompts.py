import re

import pytest

from ray_pipeline.methods.tacie.decomposition import (
    Components,
    format_components,
    parse_decomposition,
    parse_diversified,
    parse_evolution,
)
from ray_pipeline.prompts import available, load_template

COMPONENTS = format_components(Components(("Prices in $ {USD}.",), ("Find the total.",), ()))
VALUES = {
    "instruction": "Sort {items} by $key",
    "instruction_1": "Sort {items} by $key",
    "instruction_2": "Count {{vowels}}",
    "components": COMPONENTS,
    "components_1": COMPONENTS,
    "components_2": COMPONENTS,
    "n": "3",
}
TEMPLATES = {
    "tacie_decompose@v1": ("instruction",),
    "tacie_diversify@v1": ("instruction", "n"),
    "tacie_depth_constraint@v1": ("instruction", "components"),
    "tacie_depth_background@v1": ("instruction", "components"),
    "tacie_fusion@v1": ("instruction_1", "components_1", "instruction_2", "components_2"),
    "tacie_response@v1": ("instruction",),
}


@pytest.mark.parametrize("ref, variables", TEMPLATES.items(), ids=TEMPLATES.keys())
def test_template_loads_and_renders(ref, variables):
    assert ref in available()
    tpl = load_template(ref)
    assert tpl.variables == variables
    messages = tpl.render(**{v: VALUES[v] for v in variables})
    roles = [m["role"] for m in messages]
    assert roles[0] == "system" and roles[1::2] == ["user"] * len(roles[1::2]) and roles[-1] == "user"
    assert roles[2::2] == ["assistant"] * len(roles[2::2])  # few-shot turns alternate (Gemma's template requires it)
    user = messages[-1]["content"]
    for v in variables:
        assert VALUES[v] in user  # inserted verbatim, braces and dollars included
    assert "{{" not in user.replace(VALUES["instruction_2"], "")
    with pytest.raises(KeyError):
        tpl.render()


def _examples(ref: str) -> list[tuple[str, str]]:
    """(user turn, assistant answer) of each few-shot example in a template."""
    messages = load_template(ref).messages
    return [(messages[i][1], messages[i + 1][1]) for i in range(1, len(messages) - 1, 2)]


EVOLUTION = ["tacie_depth_constraint@v1", "tacie_depth_background@v1", "tacie_fusion@v1"]


@pytest.mark.parametrize("ref", EVOLUTION)
def test_evolution_templates_ask_for_the_format_their_example_shows(ref):
    tpl = load_template(ref)
    system = tpl.messages[0][1]
    for name in ("Background Settings", "Objectives", "Constraints", "Rewritten Prompt"):
        assert name in system
    assert ("INVALID PROMPT" in system) == (ref == "tacie_fusion@v1")
    kind = {"tacie_depth_constraint@v1": "ONE new constraint", "tacie_depth_background@v1": "ONE new background fact"}
    assert kind.get(ref, "combine two tasks") in system
    [(question, answer)] = _examples(ref)
    parents = tuple(re.findall(r"^(?:Instruction|Problem|Task \d):\n(.+)$", question, flags=re.M))
    assert len(parents) == (2 if ref == "tacie_fusion@v1" else 1)
    parsed = parse_evolution(answer, parents)
    assert (parsed.outcome, parsed.reason) == ("ok", ""), parsed.reason
    copied = parse_evolution(answer, ("another task",), template=tpl)  # a model that copies the example
    assert copied.outcome == "parse_error" and "repeats the prompt's examples" in copied.reason
    given = parse_decomposition(question[question.index("Background Settings:") :]).components
    if ref == "tacie_depth_constraint@v1":  # exactly one constraint more, nothing else changed
        assert parsed.components.constraints[:-1] == given.constraints
        assert (parsed.components.background, parsed.components.objectives) == (given.background, given.objectives)
        assert len(parsed.components.constraints) == len(given.constraints) + 1
    if ref == "tacie_depth_background@v1":  # exactly one background fact more
        assert parsed.components.background[:-1] == given.background
        assert (parsed.components.objectives, parsed.components.constraints) == (given.objectives, given.constraints)


def test_diversify_example_parses():
    tpl = load_template("tacie_diversify@v1")
    [(question, answer)] = _examples("tacie_diversify@v1")
    seed = question.split("Seed instruction:\n")[1]
    parsed = parse_diversified(answer, seed)
    assert parsed.outcome == "ok" and len(parsed.instructions) == int(re.search(r"Write (\d+)", question)[1])
    assert not parsed.dropped
    assert "repeats the prompt's examples" in parse_diversified(answer, "another seed", template=tpl).reason


def test_decomposition_examples_parse_with_our_parser():
    tpl = load_template("tacie_decompose@v1")
    examples = [answer for _, answer in _examples("tacie_decompose@v1")]
    assert len(examples) == 3
    parsed = [parse_decomposition(e) for e in examples]
    assert [p.outcome for p in parsed] == ["ok"] * 3
    assert all("repeats the prompt's examples" in parse_decomposition(e, template=tpl).reason for e in examples)
    code, math, poem = (p.components for p in parsed)
    assert code.background[1].startswith("```python\ndef largest(xs):") and code.background[1].endswith("```")
    assert code.counts == {"background": 2, "objectives": 1, "constraints": 1}
    assert math.counts == {"background": 3, "objectives": 1, "constraints": 0}  # N/A constraints
    assert poem.counts == {"background": 1, "objectives": 1, "constraints": 2}
    for c in (code, math, poem):  # the examples are written the way format_components writes
        assert parse_decomposition(format_components(c)).components == c
