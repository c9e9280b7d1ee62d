"""Seed loading: formats, row shapes, malformed rows, duplicates, language/domain detection."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_pipeline.core.config import SeedSource
from ray_pipeline.core.errors import SeedError
from ray_pipeline.core.languages import canonical_language, detect_domain, detect_language
from ray_pipeline.core.seeds import RECORD_FIELDS, SEED_SCHEMA, load_seeds, pool_to_arrow, seed_id
from tests.paths import REPO, SHARED as SHARED_ROOT

SHARED = SHARED_ROOT / "data" / "seeds"
QUICKSTART = REPO / "ray_pipeline" / "data" / "seeds" / "quickstart.jsonl"


def _shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.is_file():
        pytest.skip(f"shared seed pool {path} is not present (needs the ../shared checkout)")
    return path


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(*paths: Path | str, **kwargs) -> list[dict]:
    return load_seeds([SeedSource(path=str(p), **kwargs) for p in paths]).records


ALPACA = [
    {"instruction": "Write a Python function that adds two numbers.", "input": "", "output": "def add(a, b):\n    return a + b"},
    {"instruction": "Write a SQL query counting the rows of table t.", "input": "t(id)", "output": "SELECT COUNT(*) FROM t;"},
    {"instruction": "Write a haiku about the sea.", "output": "Waves fold into foam"},
]


# ------------------------------------------------------------- real pools
@pytest.fixture(scope="module")
def code_alpaca_2k() -> list[dict]:
    return _load(_shared("codealpaca/code_alpaca_2k.json"))


def test_code_alpaca_2k_counts_ids_and_fields(code_alpaca_2k):
    records = code_alpaca_2k
    assert len(records) == 2017
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        assert set(r) == set(RECORD_FIELDS)
        assert all(isinstance(r[k], str) for k in RECORD_FIELDS)
        assert r["instruction"] and r["source"] == "code_alpaca_2k"
    assert records[0]["origin"] == "code_alpaca_2k.json:1"
    assert records[-1]["origin"] == "code_alpaca_2k.json:2017"
    assert records[0]["id"] == seed_id(records[0]["instruction"], records[0]["input"])


def test_code_alpaca_2k_ids_stable_across_loads(code_alpaca_2k):
    again = _load(_shared("codealpaca/code_alpaca_2k.json"))
    assert [r["id"] for r in again] == [r["id"] for r in code_alpaca_2k]


def test_code_alpaca_2k_language_mix(code_alpaca_2k):
    share = sum(r["language"] == "python" for r in code_alpaca_2k) / len(code_alpaca_2k)
    assert 0.35 <= share <= 0.6, share
    assert sum(r["domain"] == "code" for r in code_alpaca_2k) / len(code_alpaca_2k) > 0.9
    by_instruction = {r["instruction"]: r["language"] for r in code_alpaca_2k}
    expected = {
        "Write a SQL query to join two tables together, table_1 and table_2, with a common column named ID.": "sql",
        "Create a Java function to compute the sum of an array of numbers.": "java",
        "Construct an array in JavaScript to store three strings.": "javascript",
        "Write a short C++ program to search for a given number in a given array.": "cpp",
        # no language named: detected from the code in the output
        "Find the maximum of three input numbers": "python",
        "Rewrite this for loop using a while loop.": "javascript",
    }
    for instruction, language in expected.items():
        assert by_instruction[instruction] == language, instruction


def test_new_codealpaca_reads_response_rows():
    records = _load(_shared("codealpaca/new_codealpaca.json"))
    assert len(records) == 4535
    assert all(r["output"] for r in records)
    assert sum(r["input"] == "" for r in records) == 955
    langs = {r["language"] for r in records}
    assert {"python", "javascript", "cpp", "java"} <= langs


def test_gsm8k_train_is_math():
    records = _load(_shared("gsm8k/train.jsonl"))
    assert len(records) == 7473
    assert {r["domain"] for r in records} == {"math"}
    assert {r["language"] for r in records} == {""}
    assert all("####" in r["output"] for r in records)
    assert records[0]["instruction"].startswith("Natalia sold clips")
    assert records[0]["origin"] == "train.jsonl:1"


def test_quickstart_sample_is_varied():
    records = _load(QUICKSTART)
    assert len(records) == 24
    langs = [r["language"] for r in records]
    for language in ("python", "javascript", "java", "sql", "cpp", "rust"):
        assert language in langs
    assert langs.count("") >= 2


# ------------------------------------------------------------- formats
def test_json_array_and_jsonl_agree(tmp_path):
    as_json = tmp_path / "a.json"
    as_json.write_text(json.dumps(ALPACA, indent=2))
    as_jsonl = _write_jsonl(tmp_path / "b.jsonl", ALPACA)
    from_json, from_jsonl = _load(as_json), _load(as_jsonl)
    assert [r["id"] for r in from_json] == [r["id"] for r in from_jsonl]
    assert [r["language"] for r in from_json] == ["python", "sql", ""]
    assert [r["domain"] for r in from_json] == ["code", "code", "general"]
    assert from_json[2]["input"] == ""
    assert [r["origin"] for r in from_jsonl] == ["b.jsonl:1", "b.jsonl:2", "b.jsonl:3"]
    assert [r["source"] for r in from_json] == ["a"] * 3


def test_json_object_with_row_list_and_jsonl_in_json(tmp_path):
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 2, "data": ALPACA}))
    disguised = _write_jsonl(tmp_path / "disguised.json", ALPACA)
    assert len(_load(wrapped)) == 3
    assert [r["instruction"] for r in _load(disguised)] == [r["instruction"] for r in ALPACA]


def test_parquet_and_gzipped_jsonl(tmp_path):
    pq.write_table(pa.Table.from_pylist(ALPACA[:2]), tmp_path / "s.parquet")
    with gzip.open(tmp_path / "s.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in ALPACA))
    parquet = _load(tmp_path / "s.parquet")
    assert [r["language"] for r in parquet] == ["python", "sql"]
    assert parquet[1]["origin"] == "s.parquet:2"
    assert len(_load(tmp_path / "s.jsonl.gz")) == 3


def test_directory_reads_supported_files_sorted(tmp_path):
    pool = tmp_path / "pool"
    (pool / "sub").mkdir(parents=True)
    _write_jsonl(pool / "b.jsonl", ALPACA[1:2])
    (pool / "a.json").write_text(json.dumps(ALPACA[:1]))
    pq.write_table(pa.Table.from_pylist(ALPACA[2:]), pool / "sub" / "c.parquet")
    (pool / "README.md").write_text("not seeds")
    _write_jsonl(pool / ".hidden.jsonl", [{"instruction": "hidden"}])
    records = _load(pool)
    assert [r["origin"] for r in records] == ["a.json:1", "b.jsonl:1", "sub/c.parquet:1"]
    assert {r["source"] for r in records} == {"pool"}


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ALPACA[:1])}).save_to_disk(str(tmp_path / "dd"))
    via_hf = load_seeds([SeedSource(hf=str(tmp_path / "ds"), name="mine")]).records
    assert [r["instruction"] for r in via_hf] == [r["instruction"] for r in ALPACA]
    assert via_hf[0]["source"] == "mine" and via_hf[0]["origin"] == "ds:1"
    assert len(_load(tmp_path / "ds")) == 3  # a saved dataset given as a plain path
    assert len(load_seeds([SeedSource(hf=str(tmp_path / "dd"))]).records) == 1
    with pytest.raises(SeedError, match="no split 'test'"):
        load_seeds([SeedSource(hf=str(tmp_path / "dd"), split="test")])


def test_hf_load_failure_is_one_line_seed_error(tmp_path):
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(SeedError) as err:
        load_seeds([SeedSource(hf=str(tmp_path / "not_a_dataset"))])
    assert "cannot load Hugging Face dataset" in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------- row shapes
def test_chat_shapes_prompt_gsm8k_and_response(tmp_path):
    rows = [
        {"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Write a Rust function that doubles an i32."},
            {"role": "assistant", "content": "fn double(x: i32) -> i32 { x * 2 }"},
            {"role": "user", "content": "Thanks"},
        ]},
        {"conversations": [
            {"from": "system", "value": "ignored"},
            {"from": "human", "value": "Explain list comprehensions in Python."},
            {"from": "gpt", "value": "They build lists: [x * x for x in xs]."},
        ]},
        {"prompt": "Name three primary colours.", "completion": "Red, yellow and blue."},
        {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3 + 4 = 7\n#### 7"},
        {"instruction": "Write a JavaScript arrow function that squares x.", "response": "const sq = (x) => x * x;"},
        {"id": "t1", "instruction": "Suggest a completion.", "instances": [{"input": "def f(", "output": "def f(): pass"}]},
    ]
    records = _load(_write_jsonl(tmp_path / "shapes.jsonl", rows))
    got = [(r["instruction"], r["output"], r["domain"], r["language"]) for r in records]
    assert got[0] == ("Write a Rust function that doubles an i32.", "fn double(x: i32) -> i32 { x * 2 }", "code", "rust")
    assert got[1] == ("Explain list comprehensions in Python.", "They build lists: [x * x for x in xs].", "code", "python")
    assert got[2] == ("Name three primary colours.", "Red, yellow and blue.", "general", "")
    assert got[3][2:] == ("math", "")
    assert got[4][1:] == ("const sq = (x) => x * x;", "code", "javascript")
    assert records[5]["input"] == "def f(" and records[5]["output"] == "def f(): pass"


def test_whitespace_is_stripped_and_id_is_content_hash(tmp_path):
    rows = [{"instruction": "  Add two numbers \n", "input": " 1 2 ", "output": None}]
    (record,) = _load(_write_jsonl(tmp_path / "ws.jsonl", rows))
    assert (record["instruction"], record["input"], record["output"]) == ("Add two numbers", "1 2", "")
    assert record["id"] == hashlib.sha256("Add two numbers\x1f1 2".encode()).hexdigest()[:16]


# ------------------------------------------------------------- bad input
def test_malformed_rows_are_skipped_and_reported(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(r) for r in ALPACA * 3]  # 9 good rows
    lines[2:2] = ["{not json", json.dumps(["a list"]), json.dumps({"text": "no instruction"}),
                  json.dumps({"instruction": "   "}), json.dumps({"instruction": "ok", "output": 42})]
    path.write_text("\n".join(lines) + "\n\n")
    with caplog.at_level(logging.WARNING, logger="ray_pipeline.core.seeds"):
        pool = load_seeds([SeedSource(path=str(path))])
    report = pool.reports[0]
    assert (report.rows_read, report.malformed) == (14, 5)
    assert report.rows_kept == 3 and report.duplicates_removed == 6
    assert [o for o, _ in report.malformed_examples] == [f"mixed.jsonl:{n}" for n in (3, 4, 5, 6, 7)]
    reasons = [r for _, r in report.malformed_examples]
    assert reasons[0].startswith("invalid JSON")
    assert "not a JSON object" in reasons[1]
    assert "no instruction field" in reasons[2]
    assert reasons[3] == "empty instruction"
    assert reasons[4] == "field 'output' is not a string"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "mixed.jsonl:3" in warnings[0] and "5 malformed" in warnings[0]
    assert pool.summary()["malformed"] == 5
    json.dumps(pool.summary())


def test_mostly_malformed_file_raises(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("oops\n" * 9 + json.dumps(ALPACA[0]) + "\n")
    with pytest.raises(SeedError) as err:
        load_seeds([SeedSource(path=str(path))])
    message = str(err.value)
    assert "seeds.jsonl: 9 of 10 rows malformed" in message
    assert "line 1: invalid JSON" in message and "\n" not in message
    # the threshold is configurable
    assert len(load_seeds([SeedSource(path=str(path), max_malformed_fraction=0.95)]).records) == 1
    # inside a directory, the message also names the file
    (tmp_path / "pool").mkdir()
    path.rename(tmp_path / "pool" / "seeds.jsonl")
    with pytest.raises(SeedError, match=r"pool: 9 of 10 rows malformed \(first: seeds.jsonl line 1: invalid JSON"):
        load_seeds([SeedSource(path=str(tmp_path / "pool"))])


def test_missing_empty_and_unsupported_sources(tmp_path):
    with pytest.raises(SeedError, match=r"nope\.jsonl: seed file not found"):
        _load(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SeedError, match="empty.jsonl: no rows"):
        _load(tmp_path / "empty.jsonl")
    (tmp_path / "seeds.csv").write_text("instruction\nhi\n")
    with pytest.raises(SeedError, match="unsupported seed file type '.csv'"):
        _load(tmp_path / "seeds.csv")
    (tmp_path / "broken.json").write_text('[{"instruction": "a"},')
    with pytest.raises(SeedError, match="broken.json: invalid JSON at line 1"):
        _load(tmp_path / "broken.json")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(SeedError, match="bad.parquet: cannot read Parquet"):
        _load(tmp_path / "bad.parquet")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SeedError, match="no .json, .jsonl or .parquet files"):
        _load(tmp_path / "nothing")
    with pytest.raises(SeedError, match="no seeds in any source"):
        load_seeds([])


# ------------------------------------------------------------- pool rules
def test_duplicates_removed_across_sources(tmp_path):
    first = _write_jsonl(tmp_path / "first.jsonl", ALPACA)
    second = _write_jsonl(tmp_path / "second.jsonl", [
        {"instruction": ALPACA[0]["instruction"] + "  ", "output": "another answer"},
        {"instruction": "Brand new task in Java."},
        {"instruction": "Brand new task in Java."},
    ])
    pool = load_seeds([SeedSource(path=str(first)), SeedSource(path=str(second))])
    assert len(pool) == 4
    assert [r.duplicates_removed for r in pool.reports] == [0, 2]
    assert pool.duplicates_removed == 2 and pool.summary()["duplicates_removed"] == 2
    kept = next(r for r in pool.records if r["instruction"] == ALPACA[0]["instruction"])
    assert kept["source"] == "first" and kept["output"] == ALPACA[0]["output"]
    assert [r["source"] for r in pool.records] == ["first"] * 3 + ["second"]


def test_limit_counts_valid_rows(tmp_path):
    rows = ["{bad"] + [json.dumps({"instruction": f"Task {i}"}) for i in range(10)]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(rows) + "\n")
    pool = load_seeds([SeedSource(path=str(path), limit=4)])
    assert [r["instruction"] for r in pool.records] == ["Task 0", "Task 1", "Task 2", "Task 3"]
    assert pool.reports[0].malformed == 1 and pool.reports[0].rows_kept == 4


def test_forced_domain_and_language(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl", ALPACA)
    records = _load(path, domain="math", language="C++", name="forced")
    assert {(r["domain"], r["language"], r["source"]) for r in records} == {("math", "cpp", "forced")}
    general = _load(path, domain="general")
    assert [r["language"] for r in general] == ["python", "sql", ""]
    gsm = _write_jsonl(tmp_path / "g.jsonl", [{"question": "What is 2 + 2?", "answer": "#### 4"}])
    assert _load(gsm, domain="code")[0]["domain"] == "code"


def test_pool_to_arrow_schema():
    empty = pool_to_arrow([])
    assert empty.num_rows == 0 and empty.schema == SEED_SCHEMA
    assert empty.column_names == list(RECORD_FIELDS)
    record = {name: name.upper() for name in RECORD_FIELDS}
    table = pool_to_arrow([record])
    assert table.to_pylist() == [record]


# ------------------------------------------------------------- detection
LANGUAGE_CASES = [
    # named in the instruction
    ("Write a Python function to add two numbers.", "", "python"),
    ("Write a JavaScript function to add two numbers.", "", "javascript"),
    ("Write a Java method to add two numbers.", "", "java"),
    ("Use Node.js to read a file line by line.", "", "javascript"),
    ("Write a JS snippet that hides a div.", "", "javascript"),
    ("Define a TypeScript interface for a user.", "", "typescript"),
    ("Implement quicksort in C++.", "", "cpp"),
    ("Write a C program that prints hello world.", "", "c"),
    ("Write a function in C to reverse a string.", "", "c"),
    ("Create a C# class for a bank account.", "", "csharp"),
    ("Write a Go program that reads a file.", "", "go"),
    ("Implement a stack in Go.", "", "go"),
    ("Write a Golang HTTP handler.", "", "go"),
    ("Go through the list and print each name.", "", ""),
    ("Write a Rust function that sums a slice.", "", "rust"),
    ("How do I remove rust from a bike chain?", "", ""),
    ("Write a Bash script that counts files.", "", "bash"),
    ("Write a SQL query that counts users.", "", "sql"),
    ("Write a query that lists all orders.", "SELECT * FROM orders;", "sql"),
    ("Write a Python function that runs an SQL query.", "", "python"),
    ("Write a PHP script that reads from MySQL.", "", "php"),
    ("Convert the following C code to Python.", "", "python"),
    ("Write a Python function to convert HTML to text.", "", "python"),
    ("Give the student a grade of C for this essay.", "", ""),
    ("Write a Kotlin data class for a point.", "", "kotlin"),
    # no language named: judged from the code
    ("Reverse a string.", "def rev(s):\n    return s[::-1]", "python"),
    ("Print hello.", 'print("hello")', "python"),
    ("Add two numbers.", "const add = (a, b) => a + b;\nconsole.log(add(1, 2));", "javascript"),
    ("Print one.", "public class A {\n  public static void main(String[] args) {\n    System.out.println(1);\n  }\n}", "java"),
    ("Print hi.", '#include <stdio.h>\nint main() { printf("hi"); }', "c"),
    ("Print one.", "#include <iostream>\nint main() { std::cout << 1; }", "cpp"),
    ("Make a counter.", "fn main() {\n    let mut x = 1;\n    x += 1;\n}", "rust"),
    ("Say hi.", "<?php echo 'hi'; ?>", "php"),
    ("Find adults.", "SELECT name FROM users WHERE age > 30;", "sql"),
    ("Say hi.", "using System;\nclass P { static void Main() { Console.WriteLine(1); } }", "csharp"),
    ("Say hi.", 'package main\nimport "fmt"\nfunc main() { fmt.Println("hi") }', "go"),
    ("Name a colour.", "Blue.", ""),
]


@pytest.mark.parametrize(("instruction", "output", "expected"), LANGUAGE_CASES)
def test_detect_language(instruction, output, expected):
    assert detect_language(instruction, "", output) == expected


DOMAIN_CASES = [
    ("Natalia sold 48 clips in April and half as many in May. How many clips did she sell?", "48/2 = 24\n#### 72", "math"),
    ("A class has 30 students and 12 are boys. How many are girls?", "", "math"),
    ("What is 15% of 80?", "", "math"),
    ("Write a function that sums an array.", "", "code"),
    ("Explain what a linked list is.", "", "code"),
    ("Write a haiku about autumn.", "", "general"),
    ("Name three primary colours.", "", "general"),
]


@pytest.mark.parametrize(("instruction", "output", "expected"), DOMAIN_CASES)
def test_detect_domain(instruction, output, expected):
    assert detect_domain(instruction, "", output) == expected


def test_canonical_language_names():
    assert [canonical_language(n) for n in ("C++", "JS", " Python ", "golang", "C#", "rust")] == [
        "cpp", "javascript", "python", "go", "csharp", "rust",
    ]


# ----------------------------------------------- both papers' seed pools (issue 15)
MATH_ROWS = [  # the shape of ../shared/data/seeds/math/train.jsonl (Hendrycks et al.'s per-problem files)
    {"unique_id": "train/algebra/3.json", "problem": "If $A=2+i$, $O=-4$, $P=-i$, and $S=2+4i$, find $A-O+P+S$.",
     "level": "Level 3", "type": "Algebra",
     "solution": "Adding real parts and imaginary parts separately, we have $(2-(-4)+0+2)+(1+0-1+4)i=\\boxed{8+4i}$."},
    {"unique_id": "train/geometry/1.json", "problem": "  What is the area of a square with side $3$?  ",
     "level": "Level 1", "type": "Geometry", "solution": "The area is $3^2=\\boxed{9}$."},
    {"unique_id": "train/algebra/9.json", "problem": "", "level": "Level 2", "type": "Algebra", "solution": "x"},
]


def test_math_rows_read_problem_as_instruction_and_solution_as_output(tmp_path):
    pool = load_seeds([SeedSource(path=str(_write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)))])
    first, second = pool.records
    assert first["instruction"] == MATH_ROWS[0]["problem"] and first["output"] == MATH_ROWS[0]["solution"]
    assert (second["instruction"], second["input"]) == ("What is the area of a square with side $3$?", "")
    assert {(r["domain"], r["language"]) for r in pool.records} == {("math", "")}
    assert pool.reports[0].malformed_examples == [("math.jsonl:3", "empty instruction")]
    # the source's declared domain still wins over the row shape's
    forced = load_seeds([SeedSource(path=str(tmp_path / "math.jsonl"), domain="general")]).records
    assert {r["domain"] for r in forced} == {"general"}


def test_math_train_reads_fully():
    pool = load_seeds([SeedSource(path=str(_shared("math/train.jsonl")), name="math")])
    report = pool.reports[0]
    assert (report.rows_read, report.rows_kept, report.malformed, report.duplicates_removed) == (7500, 7500, 0, 0)
    assert {r["domain"] for r in pool.records} == {"math"} and {r["language"] for r in pool.records} == {""}
    assert all("\\boxed" in r["output"] for r in pool.records)
    assert pool.records[1]["instruction"] == "If $A=2+i$, $O=-4$, $P=-i$, and $S=2+4i$, find $A-O+P+S$."
    assert pool.records[-1]["origin"] == "train.jsonl:7500"


SHAREGPT_ROWS = [  # ShareGPT dumps: {id, conversations: [{from: human|gpt|system, value}]}
    {"id": "QWJhYvA_0", "conversations": [
        {"from": "human", "value": "Summarize the main ideas of Jeff Walker's Product Launch Formula."},
        {"from": "gpt", "value": "Here are the main ideas: seed launch, internal launch, JV launch."},
        {"from": "human", "value": "Summarize the main ideas of Brendon Burchard's Experts Academy."},
        {"from": "gpt", "value": "Experts Academy teaches how to build an expert business."},
    ]},
    {"id": "i6IyJda_0", "conversations": [  # the assistant speaks first: its turn is not the answer
        {"from": "gpt", "value": "Hi! How can I help?"},
        {"from": "human", "value": "How do I make a cup of tea?"},
        {"from": "gpt", "value": "Boil water, steep the leaf for three minutes, then pour."},
    ]},
    {"id": "A5AbcES_0", "conversations": [{"from": "human", "value": "Tell me a joke."}]},  # no answer yet
    {"id": "wmCqh8x_0", "conversations": [{"from": "gpt", "value": "An answer to nothing."}]},
    {"id": "k2Bq0mT_0", "conversations": []},
]


def test_sharegpt_rows_first_human_turn_and_the_gpt_turn_after_it(tmp_path):
    pool = load_seeds([SeedSource(path=str(_write_jsonl(tmp_path / "sharegpt.jsonl", SHAREGPT_ROWS)),
                                  max_malformed_fraction=0.9)])
    got = [(r["instruction"], r["output"]) for r in pool.records]
    assert got == [
        ("Summarize the main ideas of Jeff Walker's Product Launch Formula.",
         "Here are the main ideas: seed launch, internal launch, JV launch."),
        ("How do I make a cup of tea?", "Boil water, steep the leaf for three minutes, then pour."),
        ("Tell me a joke.", ""),
    ]
    assert pool.reports[0].malformed_examples == [
        ("sharegpt.jsonl:4", "no user turn in 'conversations' (roles: gpt)"),
        ("sharegpt.jsonl:5", "no user turn in 'conversations' (roles: none: the list is empty)"),
    ]


def test_source_domains_are_the_declared_domains(tmp_path):
    code = _write_jsonl(tmp_path / "code.jsonl", ALPACA)
    chat = _write_jsonl(tmp_path / "chat.jsonl", SHAREGPT_ROWS[:2])
    pool = load_seeds([SeedSource(path=str(code), domain="code"), SeedSource(path=str(chat))])
    assert pool.source_domains == {"code": "code", "chat": "auto"}
    assert pool.summary()["source_domains"] == {"code": "code", "chat": "auto"}
    assert [r["domain"] for r in pool.records if r["source"] == "code"] == ["code"] * 3
    with pytest.raises(SeedError, match=r"two seed sources are labelled 'code' but declare domains 'code' and 'math'"):
        load_seeds([SeedSource(path=str(code), domain="code"), SeedSource(path=str(chat), name="code", domain="math")])


LANGUAGE_ROWS = [
    {"instruction": "Write a Python function that reverses a list.", "output": "def rev(xs):\n    return xs[::-1]"},
    {"instruction": "Write a Java method that adds two ints.", "output": "int add(int a, int b) { return a + b; }"},
    {"instruction": "Reverse a string.", "output": "def rev(s):\n    return s[::-1]"},  # python by its code
    {"instruction": "Explain recursion to a child."},  # no language
    {"instruction": "Write a C++ program that prints 1.", "output": "#include <iostream>"},
    "{broken",
]


def test_language_filter_keeps_or_drops_rows_and_counts_them(tmp_path):
    path = _write_jsonl(tmp_path / "mixed.jsonl", LANGUAGE_ROWS[:5])
    with path.open("a") as fh:
        fh.write(LANGUAGE_ROWS[5] + "\n")
    everything = load_seeds([SeedSource(path=str(path))])
    python = load_seeds([SeedSource(path=str(path), languages=["Python"])])
    rest = load_seeds([SeedSource(path=str(path), exclude_languages=["py"])])
    assert [r["language"] for r in python.records] == ["python", "python"]
    assert [r["language"] for r in rest.records] == ["java", "", "cpp"]
    # C_PI and C_NPI: a partition of the source's valid rows, in file order
    assert sorted(r["origin"] for r in python.records + rest.records) == sorted(r["origin"] for r in everything.records)
    for pool, dropped in ((python, 3), (rest, 2)):
        report = pool.reports[0]
        assert (report.filtered_language, report.malformed, report.duplicates_removed) == (dropped, 1, 0)
        assert pool.summary()["filtered_language"] == dropped and pool.summary()["malformed"] == 1
    several = load_seeds([SeedSource(path=str(path), languages=["java", "C++"])]).records
    assert [r["language"] for r in several] == ["java", "cpp"]
    # limit counts the rows the filter keeps
    limited = load_seeds([SeedSource(path=str(path), exclude_languages=["python"], limit=2)]).records
    assert [r["origin"] for r in limited] == ["mixed.jsonl:2", "mixed.jsonl:4"]


def test_language_filter_that_keeps_nothing_is_an_error(tmp_path):
    path = _write_jsonl(tmp_path / "py.jsonl", LANGUAGE_ROWS[:1] + LANGUAGE_ROWS[2:3])
    with pytest.raises(SeedError) as err:
        load_seeds([SeedSource(path=str(path), languages=["rust", "go"])])
    expected = f"{path}: languages ['rust', 'go'] keeps none of the 2 valid rows (their languages: python 2)"
    assert str(err.value) == expected


def test_python_split_of_the_quickstart_seeds_is_a_partition():
    everything = load_seeds([SeedSource(path=str(QUICKSTART))]).records
    c_pi = load_seeds([SeedSource(path=str(QUICKSTART), languages=["python"])])
    c_npi = load_seeds([SeedSource(path=str(QUICKSTART), exclude_languages=["python"])])
    assert {r["language"] for r in c_pi.records} == {"python"}
    assert "python" not in {r["language"] for r in c_npi.records} and "" in {r["language"] for r in c_npi.records}
    assert len(c_pi) + len(c_npi) == len(everything) == 24
    assert {r["id"] for r in c_pi.records} | {r["id"] for r in c_npi.records} == {r["id"] for r in everything}
    assert c_pi.reports[0].filtered_language == len(c_npi) and c_npi.reports[0].filtered_language == len(c_pi)


def _task_rows(n: int) -> list[dict]:
    return [{"instruction": f"Write a haiku about the number {i}."} for i in range(n)]


def test_random_limit_is_seeded_uniform_and_keeps_file_order(tmp_path):
    path = _write_jsonl(tmp_path / "many.jsonl", _task_rows(40))
    # domain and language forced: no detection, so 200 loads stay fast
    source = SeedSource(path=str(path), limit=10, sample="random", domain="general", language="python")

    def draw(seed: int) -> list[int]:
        return [int(r["origin"].split(":")[1]) for r in load_seeds([source], seed=seed).records]

    first = draw(3)
    assert len(first) == 10 and first == sorted(first) and first == draw(3)
    assert first != list(range(1, 11))  # not the first ten
    draws = [draw(seed) for seed in range(200)]
    assert len({tuple(d) for d in draws}) == 200
    counts = [sum(line in d for d in draws) for line in range(1, 41)]
    # each row is kept with probability 1/4: 50 of 200 draws, sd ~6.1; 26..74 is 4 sd
    assert min(counts) >= 26 and max(counts) <= 74, counts
    report = load_seeds([source], seed=3).reports[0]
    assert (report.rows_kept, report.sampled_from) == (10, 40)
    assert load_seeds([SeedSource(path=str(path), limit=10)]).reports[0].sampled_from is None


def test_random_limit_skips_duplicates_and_ignores_other_sources(tmp_path):
    rows = _task_rows(30)
    path = _write_jsonl(tmp_path / "pool.jsonl", rows + rows[:5])  # rows 31-35 repeat rows 1-5
    alone = load_seeds([SeedSource(path=str(path), limit=8, sample="random")], seed=11)
    other = _write_jsonl(tmp_path / "other.jsonl", [{"instruction": "Name a colour."}, {"instruction": "Name a bird."}])
    together = load_seeds([SeedSource(path=str(other)), SeedSource(path=str(path), limit=8, sample="random")], seed=11)
    assert [r["id"] for r in together.records[2:]] == [r["id"] for r in alone.records]
    assert all(int(r["origin"].split(":")[1]) <= 30 for r in alone.records)
    assert alone.reports[0].duplicates_removed == 5 and alone.reports[0].sampled_from == 30
    # rows already in the pool are not candidates: an earlier source holding rows 1-25 leaves rows 26-30
    earlier = _write_jsonl(tmp_path / "earlier.jsonl", rows[:25])
    after = load_seeds([SeedSource(path=str(earlier)), SeedSource(path=str(path), limit=8, sample="random")], seed=11)
    assert [r["origin"] for r in after.records[25:]] == [f"pool.jsonl:{n}" for n in range(26, 31)]
    assert after.reports[1].sampled_from == 5
