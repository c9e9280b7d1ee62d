import numpy as np
import pytest

from ray_pipeline.methods.tacie.decomposition import (
    Components,
    format_components,
    parse_decomposition,
    parse_diversified,
    parse_evolution,
)
from ray_pipeline.prompts.parsing import OUTCOMES
from ray_pipeline.prompts import load_template

CODE = "```python\ndef f(xs):\n    # Objectives:\n    return [x for x in xs if x]\n1. not an item\n```"
PARENT = "Write a function that returns the even numbers of a list."


def C(background=(), objectives=(), constraints=()) -> Components:
    return Components(tuple(background), tuple(objectives), tuple(constraints))


def test_components_helpers_and_format():
    c = C(["A list of integers.", CODE], ["Return the even numbers."], [])
    assert c.counts == {"background": 2, "objectives": 1, "constraints": 0}
    assert c.as_columns() == {"background": ["A list of integers.", CODE], "objectives": ["Return the even numbers."], "constraints": []}
    assert Components.from_lists(np.array(["a"]), ["b"], np.array([], dtype=object)) == C(["a"], ["b"])
    text = format_components(c)
    assert text.startswith("Background Settings:\n1. A list of integers.\n2. ```python\n")
    assert text.endswith("Objectives:\n1. Return the even numbers.\nConstraints:\nN/A")
    assert parse_decomposition(text).components == c  # what we put into prompts reads back


def test_format_parse_round_trip_multiline_items():
    c = C(["First line\ncontinued", "x = 3.5 litres"], ["Do it.", "Then this."], ["Under 1 s."])
    assert parse_decomposition(format_components(c)).components == c


def test_appendix_b_layout_as_the_paper_writes_it():
    """TaCIE's Appendix B: bold headings, ``1.item`` without a space, a blank line between sections."""
    c = C(["age of Anika = 30", f"Code to debug:\n{CODE}"], ["Calculate the average age."], [])
    text = format_components(c, "appendix_b")
    assert text == (
        f"**Background Settings:**\n1.age of Anika = 30\n2.Code to debug:\n{CODE}\n\n"
        "**Objectives:**\n1.Calculate the average age.\n\n**Constraints:**\nN/A"
    )
    assert parse_decomposition(text).components == c  # the code block stays in its item
    with pytest.raises(ValueError, match="unknown elements format"):
        format_components(c, "latex")


# (answer, expected components) for answers that parse
OK_CASES = {
    "plain": (
        "Background Settings:\n1. A list of integers.\nObjectives:\n1. Return the even numbers.\nConstraints:\n1. Use a comprehension.",
        C(["A list of integers."], ["Return the even numbers."], ["Use a comprehension."]),
    ),
    "extracted_and_constrains_sic": (
        "Extracted Background Settings:\n1. A list.\nExtracted Objectives:\n1. Sort it.\nExtracted Constrains:\n1. In place.",
        C(["A list."], ["Sort it."], ["In place."]),
    ),
    "extract_singular_headers_no_colons": (
        "Extract Background\n- A list.\nExtract Objective\n- Sort it.\nExtract Constraint\n- In place.",
        C(["A list."], ["Sort it."], ["In place."]),
    ),
    "markdown_headers_and_bullets": (
        "## Background Information\n* A list.\n* Of ints.\n**Goals:**\n1) Sort it.\n2) Print it.\n### **Constraints**\n(1) In place.",
        C(["A list.", "Of ints."], ["Sort it.", "Print it."], ["In place."]),
    ),
    "bold_header_colon_outside": (
        "**Background**:\n• A list.\n**Objective**:\n• Sort it.\n**Constraint(s)**:\n• In place.",
        C(["A list."], ["Sort it."], ["In place."]),
    ),
    "inline_content_and_na_variants": (
        "Background: N/A\nObjectives: Compute the total cost.\nConstraints: None.",
        C([], ["Compute the total cost."], []),
    ),
    "not_applicable_numbered": (
        "Background Settings:\n1. Not applicable\nObjectives:\n1. Sum it.\nConstraints:\n1. No constraints specified.",
        C([], ["Sum it."], []),
    ),
    "missing_constraints_section": (
        "Background Settings:\nN/A\nObjectives:\n1. Sum it.",
        C([], ["Sum it."], []),
    ),
    "sections_in_any_order": (
        "Constraints:\n1. Be brief.\nObjectives:\n1. Explain recursion.\nBackground Settings:\n1. For beginners.",
        C(["For beginners."], ["Explain recursion."], ["Be brief."]),
    ),
    # Appendix B.1's layout: the block belongs to the item whose line introduces it
    "code_block_joins_its_item_verbatim": (
        f"Background Settings:\n1. The function below:\n{CODE}\nObjectives:\n1. Fix it.\nConstraints:\nN/A",
        C([f"The function below:\n{CODE}"], ["Fix it."], []),
    ),
    "code_block_on_marker_line": (
        f"Background Settings:\n1. The function below:\n2. {CODE}\nObjectives:\n1. Fix it.\nConstraints:\nN/A",
        C(["The function below:", CODE], ["Fix it."], []),
    ),
    "code_block_after_bare_marker": (
        f"Background Settings:\n1.\n{CODE}\nObjectives:\n1. Fix it.\nConstraints:\nN/A",
        C([CODE], ["Fix it."], []),
    ),
    "continuation_lines_and_blank_lines": (
        "Background Settings:\n1. A shop sells apples\n   at $2 each.\n\n2. It opens at 9.\nObjectives:\n1. Find the cost.\n\nConstraints:\nN/A\n",
        C(["A shop sells apples\nat $2 each.", "It opens at 9."], ["Find the cost."], []),
    ),
    "unnumbered_lines_are_items": (
        "Background Settings:\nA list of words.\nSome are empty.\nObjectives:\nRemove the empty ones.\nConstraints:\nN/A",
        C(["A list of words.", "Some are empty."], ["Remove the empty ones."], []),
    ),
    "preamble_and_rule_ignored": (
        "Sure! Here is the breakdown.\n\n---\nBackground Settings:\n1. A list.\n---\nObjectives:\n1. Sort it.\nConstraints:\nN/A",
        C(["A list."], ["Sort it."], []),
    ),
    "code_in_preamble_is_not_read": (
        "Instruction:\n```python\nObjectives:\n1. x = 1\n```\nBackground Settings:\nN/A\nObjectives:\n1. Explain the code.",
        C([], ["Explain the code."], []),
    ),
    "echo_of_new_example_stops": (
        "Background Settings:\n1. A list.\nObjectives:\n1. Sort it.\nConstraints:\nN/A\n\n### Example 4\nInstruction:\nReverse a string.\n"
        "Background Settings:\nN/A\nObjectives:\n1. Reverse it.",
        C(["A list."], ["Sort it."], []),
    ),
    "echo_input_marker_stops": (
        "Background Settings:\n1. A list.\nObjectives:\n1. Sort it.\nConstraints:\nN/A\nInput: [3, 1, 2]\nObjectives:\n1. Other.",
        C(["A list."], ["Sort it."], []),
    ),
    "repeated_header_stops": (
        "Background Settings:\n1. A list.\nObjectives:\n1. Sort it.\nConstraints:\nN/A\nBackground Settings:\n1. Something else.",
        C(["A list."], ["Sort it."], []),
    ),
    "turn_token_stops": (
        "Objectives:\n1. Sort it.<end_of_turn>\n<start_of_turn>user\nObjectives:\n1. More.",
        C([], ["Sort it."], []),
    ),
    "numbered_section_headers": (
        "1. **Background Settings:**\n- A list.\n2. **Objectives:**\n- Sort it.\n3. **Constraints:**\n- N/A",
        C(["A list."], ["Sort it."], []),
    ),
}


@pytest.mark.parametrize("answer, expected", OK_CASES.values(), ids=OK_CASES.keys())
def test_parse_decomposition_ok(answer, expected):
    parsed = parse_decomposition(answer)
    assert (parsed.outcome, parsed.reason) == ("ok", "")
    assert parsed.components == expected


FAIL_CASES = {
    "none": (None, "empty"),
    "blank": ("  \n", "empty"),
    "no_header": ("The task asks to sort a list in place.", "no section header"),
    "prose_mentioning_objectives": ("Objectives are what must be done here.", "no section header"),
    "no_objectives": ("Background Settings:\n1. A list.\nConstraints:\n1. In place.", "no objectives"),
    "objectives_na": ("Background Settings:\n1. A list.\nObjectives:\nN/A\nConstraints:\nN/A", "no objectives"),
    "unclosed_fence": ("Objectives:\n1. Fix it.\nBackground Settings:\n1. ```python\ndef f():", "unclosed code block"),
}


@pytest.mark.parametrize("answer, reason", FAIL_CASES.values(), ids=FAIL_CASES.keys())
def test_parse_decomposition_failures(answer, reason):
    parsed = parse_decomposition(answer)
    assert parsed.outcome == "parse_error" and parsed.components is None
    assert reason in parsed.reason


SECTIONS = "Background Settings:\n1. A list of integers.\nObjectives:\n1. Return the even numbers.\nConstraints:\n1. Keep the order.\n"
EXPECTED = C(["A list of integers."], ["Return the even numbers."], ["Keep the order."])
NEW = "Given a list of integers, write a function that returns its even numbers, keeping their order."

EVOLUTION_OK = {
    "plain": (f"{SECTIONS}Rewritten Prompt:\n{NEW}", NEW, EXPECTED),
    "inline_and_decorated": (f"{SECTIONS}**Rewritten Prompt:** {NEW}", NEW, EXPECTED),
    "hash_style_header": (f"{SECTIONS}#Rewritten Prompt#:\n{NEW}", NEW, EXPECTED),
    "new_instruction_header": (f"{SECTIONS}New Instruction:\n{NEW}", NEW, EXPECTED),
    "updated_section_names": (
        f"Updated Background Settings:\n1. A list of integers.\nUpdated Objectives:\n1. Return the even numbers.\n"
        f"Updated Constraints:\n1. Keep the order.\nRewritten Prompt:\n{NEW}",
        NEW,
        EXPECTED,
    ),
    "prompt_first_then_sections": (f"Rewritten Prompt:\n{NEW}\n\n{SECTIONS}", NEW, EXPECTED),
    "prompt_with_code_and_input": (
        f"{SECTIONS}Rewritten Prompt:\n{NEW}\nInput:\n```python\nxs = [1, 2]\n# Instruction: keep me\n```",
        f"{NEW}\nInput:\n```python\nxs = [1, 2]\n# Instruction: keep me\n```",
        EXPECTED,
    ),
    "prompt_keeps_requirements_list": (
        f"{SECTIONS}Rewritten Prompt:\n{NEW}\nRequirements:\n- O(n) time.",
        f"{NEW}\nRequirements:\n- O(n) time.",
        EXPECTED,
    ),
    "echo_after_prompt_stops": (f"{SECTIONS}Rewritten Prompt:\n{NEW}\n\nInstruction:\nSort a list.", NEW, EXPECTED),
    "pattern_restart_stops": (f"{SECTIONS}Rewritten Prompt:\n{NEW}\nBackground Settings:\n1. Other.", NEW, EXPECTED),
    "fenced_prompt": (f"{SECTIONS}Rewritten Prompt:\n```\n{NEW}\n```", NEW, EXPECTED),
}


@pytest.mark.parametrize("answer, instruction, components", EVOLUTION_OK.values(), ids=EVOLUTION_OK.keys())
def test_parse_evolution_ok(answer, instruction, components):
    parsed = parse_evolution(answer, (PARENT,))
    assert (parsed.outcome, parsed.reason) == ("ok", "")
    assert parsed.instruction == instruction
    assert parsed.components == components


EVOLUTION_FAIL = {
    "none": (None, "parse_error", "empty"),
    "invalid_alone": ("INVALID PROMPT", "invalid", "declined"),
    "invalid_as_prompt": (f"{SECTIONS}Rewritten Prompt:\nINVALID PROMPT", "invalid", "declined"),
    "invalid_with_reason": ("These tasks have nothing in common. INVALID PROMPT.", "invalid", "declined"),
    "no_rewritten_prompt": (SECTIONS, "parse_error", "no 'Prompt:'"),
    "empty_rewritten_prompt": (f"{SECTIONS}Rewritten Prompt:\n\n", "parse_error", "prompt: empty"),
    "copies_parent": (f"{SECTIONS}Rewritten Prompt:\n{PARENT.upper()}", "parse_error", "copies a parent"),
    "copies_second_parent": (f"{SECTIONS}Rewritten Prompt:\nCount the vowels in a sentence.", "parse_error", "copies a parent"),
    "no_sections": (f"Rewritten Prompt:\n{NEW}", "parse_error", "sections: no section header"),
    "sections_without_objectives": (
        f"Background Settings:\n1. A list.\nConstraints:\nN/A\nRewritten Prompt:\n{NEW}",
        "parse_error",
        "sections: no objectives",
    ),
}


@pytest.mark.parametrize("answer, outcome, reason", EVOLUTION_FAIL.values(), ids=EVOLUTION_FAIL.keys())
def test_parse_evolution_failures(answer, outcome, reason):
    parsed = parse_evolution(answer, (PARENT, "Count the vowels in a sentence."))
    assert parsed.outcome == outcome and outcome in OUTCOMES
    assert parsed.instruction == "" and parsed.components is None
    assert reason in parsed.reason


D1 = "Write a function that returns the odd numbers of a list."
D2 = "Write a function that squares every number in a dictionary's values."
D3 = "Given the code below, add type hints.\n```python\ndef f(x):\n    return x\n```"

DIVERSIFIED = {
    "plain": (f"1. {D1}\n2. {D2}\n3. {D3}", [D1, D2, D3], []),
    "preamble_and_paren_numbers": (f"Here are three:\n\n1) {D1}\n2) {D2}", [D1, D2], []),
    "bold_numbers": (f"**1.** {D1}\n**2.** {D2}", [D1, D2], []),
    "instruction_n_labels": (f"Instruction 1: {D1}\nInstruction 2: {D2}", [D1, D2], []),
    "nested_list_stays_in_entry": (
        f"1. Write a program that:\n   1. reads a file\n   2. counts its lines\n2. {D2}",
        ["Write a program that:\n   1. reads a file\n   2. counts its lines", D2],
        [],
    ),
    "unindented_restart_stays_in_entry": (
        f"1. Write a program that does the following steps:\n1. read a file\n2. {D2}",
        ["Write a program that does the following steps:\n1. read a file", D2],
        [],
    ),
    "code_with_numbers_in_entry": (f"1. {D3[:-4]}\n2. not an entry\n```\n2. {D1}", [f"{D3[:-4]}\n2. not an entry\n```", D1], []),
    "drops_copy_short_duplicate": (
        f"1. {PARENT}\n2. Do it.\n3. {D1}\n4. {D1.lower()}\n5. {D2}",
        [D1, D2],
        ["entry 1: copies a parent instruction", "entry 2: too short (6 chars)", "entry 4: repeats an earlier entry"],
    ),
    "echo_stops": (f"1. {D1}\n2. {D2}\n\nSeed instruction:\n{PARENT}\n1. {D3}", [D1, D2], []),
    "turn_token_stops": (f"1. {D1}<end_of_turn>\n2. {D2}", [D1], []),
}


@pytest.mark.parametrize("answer, kept, dropped", DIVERSIFIED.values(), ids=DIVERSIFIED.keys())
def test_parse_diversified(answer, kept, dropped):
    parsed = parse_diversified(answer, PARENT)
    assert parsed.outcome == "ok"
    assert list(parsed.instructions) == kept
    assert list(parsed.dropped) == dropped


@pytest.mark.parametrize(
    "answer, outcome, reason",
    [
        (None, "parse_error", "empty answer"),
        (D1, "parse_error", "no numbered list"),
        ("2. " + D1, "parse_error", "no numbered list"),
        (f"1. {PARENT}\n2. Short.", "parse_error", "entry 1: copies a parent instruction; entry 2: too short"),
        ("1. INVALID PROMPT", "invalid", "declined"),
    ],
)
def test_parse_diversified_failures(answer, outcome, reason):
    parsed = parse_diversified(answer, PARENT)
    assert parsed.outcome == outcome and parsed.instructions == ()
    assert reason in parsed.reason


# ---------------------------------------------------------------- what a weak model writes
# Shapes seen from the embedded Gemma 3 270M: it repeats the prompt's text or its
# examples, loops on one line, and runs on into the next turn's input markers.
def test_decomposition_repeating_the_prompt_is_a_parse_error():
    tpl = load_template("tacie_decompose@v1")
    rules = "- Background Settings: the context of the task and everything it gives: data, facts, code."
    example_line = "Background Settings:\n1. Tina works 10 hours a day.\nObjectives:\n1. Write a poem about autumn."
    assert "repeats the prompt's text" in parse_decomposition(f"{rules}\n{SECTIONS}", template=tpl).reason
    assert "repeats the prompt's examples" in parse_decomposition(example_line, template=tpl).reason
    assert parse_decomposition(example_line).outcome == "ok"  # without the template nothing to compare
    short = "Objectives:\n1. Write a poem.\nConstraints:\n1. Every line rhymes."  # lines under four words do not count
    assert parse_decomposition(short, template=tpl).components == C([], ["Write a poem."], ["Every line rhymes."])
    # a looping model runs on without a line break: a line that starts with an example line counts
    run_on = "Objectives:\n1. The poem is for a children's book. anaknya\n2. Write a poem about autumn.ีก"
    assert "repeats the prompt's examples" in parse_decomposition(run_on, template=tpl).reason
    # the marker of the prompt's input ends the answer
    echoed = f"{SECTIONS}Instruction:\nSort a list.\nObjectives:\n1. Other."
    assert parse_decomposition(echoed, template=tpl).components == EXPECTED


def test_decomposition_drops_repeated_items():
    looping = "Objectives:\n1. Sort it.\nConstraints:\n1. Keep it short.\n2. Keep it short.\n2. Keep it short.\n3. Be exact."
    assert parse_decomposition(looping).components == C([], ["Sort it."], ["Keep it short.", "Be exact."])


FUSION_PARENTS = ("Sort a list of numbers in place.", "Count the vowels of every word.")


@pytest.mark.parametrize(
    "answer, outcome, reason_or_instruction",
    [
        # the example's rewritten prompt, copied
        (f"{SECTIONS}Rewritten Prompt:\nWrite a Python function that reverses a sentence and returns the reversed sentence "
         "together with the number of vowels it contains. Do not use regular expressions.", "parse_error", "repeats the prompt's examples"),
        # the same, reworded at the end: eight words in a row from the template
        (f"{SECTIONS}Rewritten Prompt:\nWrite a Python function that reverses a sentence and counts the digits.",
         "parse_error", "repeats the prompt's examples: 'a python function that reverses a sentence and'"),
        # a rule, altered at its start
        (f"{SECTIONS}Rewritten Prompt:\nSort the numbers. It is a task. Merge the background settings and constraints of both tasks, ok",
         "parse_error", "repeats the prompt's text: 'merge the background settings and constraints of both'"),
        (f"{SECTIONS}Rewritten Prompt:\nTask 1:\nSort a list of numbers in place.", "parse_error", "prompt: empty"),
        # INVALID PROMPT inside an echo of the rules is no refusal
        ("4. If the two tasks cannot be combined, answer exactly: INVALID PROMPT\n\nTask 1:\nSort a list of numbers in place.",
         "parse_error", "no 'Prompt:' section"),
        # a refusal that quotes the rule is still a refusal
        ("The two tasks cannot be combined into one coherent, solvable task.\nRewritten Prompt:\nINVALID PROMPT", "invalid", "declined"),
        (f"{SECTIONS}Rewritten Prompt:\n{NEW}\n\nTask 2 elements:\nBackground Settings:\nN/A", "ok", NEW),
        (f"{SECTIONS}Rewritten Prompt:\n{NEW}\nConstraints:\nN/A\nObjectives:\n1. x", "ok", NEW),
        (f"{SECTIONS}Rewritten Prompt:\n{NEW}\n2. The list is sorted in place.\n2. The list is sorted in place.\n"
         "3. The list is sorted in place.", "parse_error", "degenerate output: a line repeated 3 times"),
    ],
)
def test_evolution_answers_of_a_weak_model(answer, outcome, reason_or_instruction):
    parsed = parse_evolution(answer, FUSION_PARENTS, template=load_template("tacie_fusion@v1"))
    assert parsed.outcome == outcome
    assert reason_or_instruction in (parsed.instruction if outcome == "ok" else parsed.reason)


def test_diversified_answers_of_a_weak_model():
    tpl = load_template("tacie_diversify@v1")
    example = "Given a list of words, write a Python function that groups them by their first letter and returns a dictionary of sorted lists."
    loop = "Write a program that prints numbers.\n" * 3
    answer = f"1. {D1}\n2. {example}世話\n3. {loop}4. {D2}\n5. {D3}"
    parsed = parse_diversified(answer, PARENT, template=tpl, n=4)
    assert parsed.instructions == (D1, D2)  # entry 5 is beyond the 4 asked for
    assert [d.split(":")[0] for d in parsed.dropped] == ["entry 2", "entry 3"]
    assert "repeats the prompt's examples" in parsed.dropped[0] and "degenerate output" in parsed.dropped[1]
    assert parse_diversified(answer, PARENT, template=tpl).instructions == (D1, D2, D3)
    rules = "1. Each new instruction has a DIFFERENT objective from the seed and from the other new instructions.\n2. " + D1
    assert parse_diversified(rules, PARENT, template=tpl).instructions == (D1,)
    preamble = f"You are an expert Prompt Creator. From a seed instruction you write new instructions:\n1. {D1}"
    assert "repeats the prompt's text" in parse_diversified(preamble, PARENT, template=tpl).reason
