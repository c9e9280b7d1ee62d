"""The one-line forms of an error that every user-facing message uses (``core.errors``)."""

from ray_pipeline.core.errors import first_line, joined_lines, typed_line


def test_first_line_takes_the_first_line_or_the_type():
    assert first_line(OSError("disk full\ntraceback follows")) == "disk full"
    assert first_line(ValueError("")) == "ValueError"


def test_joined_lines_keeps_every_line_on_one():
    err = ValueError("values don't meet the schema:\n- replicas: must be >= 0\n\n- image: required")
    assert joined_lines(err) == "values don't meet the schema:; replicas: must be >= 0; image: required"


def test_typed_line_names_the_type_and_is_bounded():
    assert typed_line(RuntimeError("cannot\n  allocate   memory")) == "RuntimeError: cannot allocate memory"
    assert typed_line(RuntimeError(""), 300) == "RuntimeError: RuntimeError"
    assert len(typed_line(ValueError("x" * 1000), 50)) == 50
