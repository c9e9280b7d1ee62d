import pytest
import yaml

from ray_pipeline.core.config import EmbeddedTeacherConfig
from ray_pipeline.jobs import load_job, parse_job
from ray_pipeline.core.errors import ConfigError

BASE = {
    "kind": "instruction_fusion",
    "name": "t",
    "seeds": [{"path": "seeds.jsonl"}],
    "teacher": {"kind": "openai", "model": "gpt-4o", "api_key": "sk-secret-123"},
    "fusion": {"num_instructions": 4},
}


def _with(**changes):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p] if not p.isdigit() else node[int(p)]
        node[leaf] = value
    return data


def test_valid_job_and_defaults():
    job = parse_job(BASE)
    assert job.fusion.attempt_budget == 16
    assert job.teacher.resolved_api_key() == "sk-secret-123"
    assert job.run_dir().as_posix() == "runs/t"


def test_teacher_shorthand():
    job = parse_job(_with(teacher="embedded"))
    assert isinstance(job.teacher, EmbeddedTeacherConfig)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"teacher__concurrency": 0}, "teacher.concurrency"),
        ({"teacher": {"kind": "bogus"}}, "teacher"),
        ({"fusion__num_instructions": -1}, "fusion.num_instructions"),
        ({"fusion__max_attempts": 2}, "max_attempts must be at least num_instructions"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [{"path": "a", "hf": "b"}]}, "seeds.0"),
        ({"name": "bad name!"}, "name"),
        ({"fusion__typo": 1}, "fusion.typo"),
    ],
)
def test_errors_name_the_field(changes, field):
    with pytest.raises(ConfigError) as info:
        parse_job(_with(**changes), "job.yaml")
    msg = str(info.value)
    assert msg.startswith("job.yaml: ") and field in msg and "\n" not in msg


def test_missing_kind_and_non_mapping():
    with pytest.raises(ConfigError, match="kind"):
        parse_job({"name": "x"})
    with pytest.raises(ConfigError, match="mapping"):
        parse_job(["a"])


def test_load_job_resolves_paths_and_reports_yaml_errors(tmp_path):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(BASE))
    job = load_job(tmp_path / "job.yaml")
    assert job.seeds[0].path == str(tmp_path / "seeds.jsonl")
    (tmp_path / "bad.yaml").write_text("kind: instruction_fusion\nname: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_job(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="job file not found"):
        load_job(tmp_path / "nope.yaml")


def test_secret_masked_in_dump():
    from ray_pipeline.core.config import job_to_dict

    dumped = job_to_dict(parse_job(BASE))
    assert "sk-secret-123" not in repr(dumped)


@pytest.mark.parametrize(
    "source, message",
    [
        ({"languages": ["python", "cobol", "Klingon"]},
         "seeds.0.languages: unknown languages 'cobol', 'Klingon' (known: bash, c, "),
        ({"exclude_languages": ["brainfk"]}, "seeds.0.exclude_languages: unknown language 'brainfk' (known: "),
        ({"languages": ["python"], "exclude_languages": ["java"]},
         "give at most one of 'languages' and 'exclude_languages'"),
        ({"languages": []}, "seeds.0.languages"),
        ({"sample": "random"}, "sample: random needs a limit"),
        ({"sample": "shuffled", "limit": 3}, "seeds.0.sample"),
        ({"clusters": 0}, "seeds.0.clusters"),
        ({"language": "java", "languages": ["python"]}, "language 'java' is forced on every row"),
        ({"language": "Python", "exclude_languages": ["py"]}, "language 'Python' is forced on every row"),
        ({"domain": "math", "languages": ["python"]}, "domain: math seeds get no programming language"),
    ],
)
def test_seed_source_filter_errors(source, message):
    with pytest.raises(ConfigError) as info:
        parse_job(_with(seeds=[{"path": "seeds.jsonl", **source}]), "job.yaml")
    msg = str(info.value)
    assert msg.startswith("job.yaml: ") and message in msg and "\n" not in msg


def test_seed_source_new_fields_and_defaults():
    from ray_pipeline.core.config import SeedSource

    plain = SeedSource(path="s.jsonl")
    assert (plain.languages, plain.exclude_languages, plain.sample, plain.clusters) == (None, None, "first", None)
    assert SeedSource(path="s.jsonl", languages=["Python", "C++", "py"]).languages == ["python", "cpp"]
    assert SeedSource(path="s.jsonl", exclude_languages=["JS"]).exclude_languages == ["javascript"]
    source = SeedSource(path="s.jsonl", limit=30000, sample="random", clusters=3000, domain="math")
    assert (source.limit, source.sample, source.clusters) == (30000, "random", 3000)
    description = SeedSource.model_fields["domain"].description
    assert "declared domain" in description and "root domain" in description
