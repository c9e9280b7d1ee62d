import hashlib
from pathlib import Path

import pytest

from ray_pipeline.core.errors import ConfigError
from ray_pipeline.prompts import available, load_template
from tests.paths import REPO


def test_fusion_template_renders_rules_and_escape():
    tpl = load_template("if_fusion@v1")
    msgs = tpl.render(instruction_1="Sort {a} by $key", instruction_2="Parse {{json}}")
    user = msgs[-1]["content"]
    assert "Sort {a} by $key" in user and "Parse {{json}}" in user  # values inserted verbatim
    assert "INVALID PROMPT" in user
    assert all(f"{n}." in user for n in (1, 2, 3, 4))
    path = REPO / "ray_pipeline/prompts/if_fusion.v1.yaml"
    assert tpl.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_variable_and_unknown_template():
    with pytest.raises(KeyError):
        load_template("if_fusion@v1").render(instruction_1="x")
    with pytest.raises(ConfigError, match="not found"):
        load_template("if_fusion@v99")
    with pytest.raises(ConfigError, match="name@vN"):
        load_template("if_fusion")
    assert "if_fusion@v1" in available() and "if_response@v1" in available()
