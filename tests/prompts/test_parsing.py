import pytest

from ray_pipeline.prompts.parsing import parse_fusion, parse_response

PARENTS = ("Write a function that reverses a string.", "Count the vowels in a sentence.")


@pytest.mark.parametrize(
    "answer, outcome, text",
    [
        ("Write a function that reverses a sentence and counts its vowels.", "ok",
         "Write a function that reverses a sentence and counts its vowels."),
        ("#Fused Instruction#:\nWrite a function that reverses each word and counts vowels.", "ok",
         "Write a function that reverses each word and counts vowels."),
        ("**New Instruction:** Reverse a string, then count the vowels of the result.", "ok",
         "Reverse a string, then count the vowels of the result."),
        ("```\nReverse the string and report how many vowels it has.\n```", "ok",
         "Reverse the string and report how many vowels it has."),
        ("Reverse the words of a text and count vowels per word.\n\n#Instruction 1#:\nsomething else", "ok",
         "Reverse the words of a text and count vowels per word."),
        ("INVALID PROMPT", "invalid", ""),
        ("invalid prompt.", "invalid", ""),
        ("These cannot be combined sensibly. INVALID PROMPT", "invalid", ""),
        ("", "parse_error", ""),
        (None, "parse_error", ""),
        ("   \n ", "parse_error", ""),
        ("Do it.", "parse_error", ""),
        ("Write a function that reverses a string.", "parse_error", ""),
        ("#Instruction 1#:\nWrite a function", "parse_error", ""),
    ],
)
def test_parse_fusion(answer, outcome, text):
    parsed = parse_fusion(answer, PARENTS)
    assert parsed.outcome == outcome
    assert parsed.text == text
    if outcome != "ok":
        assert parsed.reason


def test_parse_response():
    assert parse_response("  def f(): pass \n").text == "def f(): pass"
    assert parse_response("").outcome == "parse_error"
    assert parse_response(None).outcome == "parse_error"
