"""The TaCIE run report: page content, figures, escaping, errors, atomicity."""

from __future__ import annotations

import html
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib import image as mpimg

from ray_pipeline.core.errors import FusionError
from ray_pipeline.methods.tacie.report import FIGURES, embedding_matrix, project_2d, removal_counts, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCRIPT_TEXT = 'Fix this: <script>alert("x")</script> & keep a < b'
LONG_TEXT = "Write a parser for the following grammar. " + "rule -> term | term '+' rule; " * 40

ITEM_SCHEMA = pa.schema([
    ("id", pa.string()), ("round", pa.int64()), ("operation", pa.string()), ("parent_ids", pa.list_(pa.string())),
    ("source", pa.string()), ("domain", pa.string()), ("root_domain", pa.string()), ("language", pa.string()),
    ("instruction", pa.string()), ("response", pa.string()), ("background", pa.list_(pa.string())),
    ("objectives", pa.list_(pa.string())), ("constraints", pa.list_(pa.string())),
    ("decomposition_outcome", pa.string()), ("q", pa.float64()), ("uncertainty", pa.float64()),
    ("instruction_tokens", pa.int64()), ("n_fusions", pa.int64()), ("evolvable", pa.bool_()),
    ("embedding", pa.list_(pa.float32())), ("kept", pa.bool_()), ("removed_reason", pa.string()),
])

# round -> [(operation, count)]; 24 + 18 + 18 = 60 items, round 3 ran but added nothing
PLAN = {
    0: [("seed", 8), ("diversify", 16)],
    1: [("depth_constraint", 5), ("depth_background", 5), ("fusion_in_domain", 4), ("fusion_cross_domain", 4)],
    2: [("depth_constraint", 6), ("depth_background", 4), ("fusion_in_domain", 5), ("fusion_cross_domain", 3)],
}
METRIC_ROUNDS: list[dict[str, Any]] = [
    {"round": 0, "pool_size": 24, "added": {"seed": 8, "diversify": 16},
     "attempts": {"diversify": {"ok": 16, "parse_error": 1, "api_error": 0, "invalid": 1}},
     "success_rate": {"diversify": 16 / 18}, "diversity_u": 0.0123,
     "uncertainty": {"mean": 0.0512, "median": 0.0431}, "domains": {"code": 12, "math": 12}},
    {"round": 1, "pool_size": 42,
     "added": {"depth_constraint": 5, "depth_background": 5, "fusion_in_domain": 4, "fusion_cross_domain": 4},
     "attempts": {"depth_constraint": {"ok": 5, "parse_error": 1, "api_error": 0, "invalid": 0},
                  "depth_background": {"ok": 5, "parse_error": 0, "api_error": 0, "invalid": 0},
                  "fusion_in_domain": {"ok": 4, "parse_error": 0, "api_error": 1, "invalid": 3},
                  "fusion_cross_domain": {"ok": 4, "parse_error": 0, "api_error": 0, "invalid": 4}},
     "success_rate": {"depth_constraint": 5 / 6, "depth_background": 1.0, "fusion_in_domain": 0.5,
                      "fusion_cross_domain": 0.5},
     "diversity_u": 0.0234, "uncertainty": {"mean": 0.0677, "median": 0.0588}, "domains": {"code": 22, "math": 20}},
    {"round": 2, "pool_size": 60,
     "added": {"depth_constraint": 6, "depth_background": 4, "fusion_in_domain": 5, "fusion_cross_domain": 3},
     "attempts": {"depth_constraint": {"ok": 6, "parse_error": 0, "api_error": 0, "invalid": 0},
                  "depth_background": {"ok": 4, "parse_error": 2, "api_error": 0, "invalid": 0},
                  "fusion_in_domain": {"ok": 5, "parse_error": 0, "api_error": 0, "invalid": 5},
                  "fusion_cross_domain": {"ok": 3, "parse_error": 0, "api_error": 0, "invalid": 9}},
     "success_rate": {"depth_constraint": 1.0, "depth_background": 4 / 6, "fusion_in_domain": 0.5,
                      "fusion_cross_domain": 0.25},
     "diversity_u": 0.0345, "uncertainty": {"mean": 0.0791, "median": 0.0702}, "domains": {"code": 31, "math": 29}},
    {"round": 3, "pool_size": 60, "added": {},
     "attempts": {"depth_constraint": {"ok": 0, "parse_error": 0, "api_error": 0, "invalid": 0}},
     "success_rate": {"depth_constraint": None}, "diversity_u": 0.0345,
     "uncertainty": {"mean": 0.0791, "median": 0.0702}, "domains": {"code": 31, "math": 29}},
]
METRICS = {
    "rounds": METRIC_ROUNDS,
    "diversity": {"seeds": 0.0111, "evolved": 0.0222, "all": 0.0333},
    "filters": {"near_duplicate": 2, "contaminated": {"humaneval": 0, "mbpp": 1, "gsm8k": 0}, "kept": 56},
}


def make_items(seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    items: list[dict[str, Any]] = []
    for rnd, plan in PLAN.items():
        earlier = list(items)
        for op, count in plan:
            for _ in range(count):
                n = len(items)
                domain = "code" if n % 2 == 0 else "math"
                if op == "seed":
                    parents: list[str] = []
                elif op == "diversify":
                    parents = [items[n % 8]["id"]]
                elif op.startswith("fusion"):
                    a, b = rng.choice(len(earlier), size=2, replace=False)
                    parents = [earlier[a]["id"], earlier[b]["id"]]
                else:
                    parents = [earlier[int(rng.integers(len(earlier)))]["id"]]
                emb = rng.normal(size=384) + (2.0 * rnd)  # evolved items drift: PCA has something to show
                items.append({
                    "id": f"{n:016x}", "round": rnd, "operation": op, "parent_ids": parents, "source": "codealpaca",
                    "domain": domain, "root_domain": domain, "language": "python" if domain == "code" else "",
                    "instruction": f"{op} instruction number {n} (round {rnd})", "response": f"response {n}",
                    "background": [], "objectives": ["do it"], "constraints": [], "decomposition_outcome": "ok",
                    "q": float(rng.uniform(0.2, 0.9)), "uncertainty": float(rng.uniform(0.0, 0.2)),
                    "instruction_tokens": int(rng.integers(10, 200)), "n_fusions": 0, "evolvable": True,
                    "embedding": (emb / np.linalg.norm(emb)).astype(np.float32).tolist(),
                    "kept": True, "removed_reason": "",
                })
    def first_of_round_2(op: str) -> dict[str, Any]:  # the report samples the latest round first
        return next(it for it in items if it["operation"] == op and it["round"] == 2)

    first_of_round_2("depth_constraint")["instruction"] = SCRIPT_TEXT
    first_of_round_2("fusion_cross_domain")["instruction"] = LONG_TEXT
    for i in (3, 17, 30, 44, 59):  # failed scoring
        items[i]["uncertainty"] = math.nan if i % 2 else None
    for i in (5, 33):
        items[i]["embedding"] = []
    items[50]["embedding"] = None
    for i, reason in ((20, f"near_duplicate:{items[2]['id']}"), (40, f"near_duplicate:{items[9]['id']}"),
                      (41, "contaminated:mbpp"), (55, "no_response")):
        items[i]["kept"], items[i]["removed_reason"] = False, reason
    return items


def make_run(directory: Path, items: list[dict[str, Any]] | None = None, metrics: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(make_items() if items is None else items, schema=ITEM_SCHEMA),
                   directory / "tacie-test.parquet")
    (directory / "metrics.json").write_text(json.dumps(METRICS if metrics is None else metrics))
    manifest = {
        "job": "tacie-test", "kind": "tacie",
        "config": {"name": "tacie-test", "scorer": {"backend": "hf", "model": "gemma-3-270m-scorer"}},
        "teacher": {"kind": "openai", "model": "teacher-model-x"},
        "outputs": {"items": "tacie-test.parquet", "metrics": "metrics.json"},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


class _Tables(HTMLParser):
    """Cell texts of every table on a page, by the table's class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._current: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._current = self.tables.setdefault(dict(attrs).get("class") or "", [])
        elif tag == "tr" and self._current is not None:
            self._current.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._current is not None:
            self._current[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, list[list[str]]]]:
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    index = write_report(run)
    page = index.read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(page)
    return index, page, parser.tables


def test_report_page_has_a_row_per_round(report: tuple[Path, str, dict[str, list[list[str]]]]) -> None:
    index, _, tables = report
    assert index.parent.name == "report" and index.name == "index.html"
    assert (index.parent.parent / "manifest.json").is_file()
    header, *rows = tables["rounds"]
    assert header[:2] == ["round", "pool size"]
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]
    by_round = {int(r[0]): dict(zip(header, r)) for r in rows}
    assert by_round[0]["pool size"] == "24" and by_round[2]["pool size"] == "60"
    assert by_round[0]["added"] == "seed: 8\ndiversify: 16"
    assert by_round[0]["success rate"] == "diversify: 88.9%"
    assert by_round[2]["success rate"].splitlines()[-1] == "fusion_cross_domain: 25.0%"
    assert [by_round[r]["diversity U"] for r in range(3)] == ["0.0123", "0.0234", "0.0345"]
    assert [by_round[r]["mean u"] for r in range(3)] == ["0.0512", "0.0677", "0.0791"]
    assert [by_round[r]["median u"] for r in range(3)] == ["0.0431", "0.0588", "0.0702"]
    assert by_round[1]["domains"] == "code: 22\nmath: 20"
    assert by_round[3]["added"] == "–" and by_round[3]["success rate"] == "depth_constraint: –"


def test_attempt_table_counts_every_outcome(report: tuple[Path, str, dict[str, list[list[str]]]]) -> None:
    header, *rows = report[2]["attempts"]
    assert header == ["round", "operation", "attempts", "ok", "parse_error", "api_error", "invalid", "success rate"]
    assert ["1", "fusion_in_domain", "8", "4", "0", "1", "3", "50.0%"] in rows
    assert ["0", "diversify", "18", "16", "1", "0", "1", "88.9%"] in rows
    assert ["3", "depth_constraint", "0", "0", "0", "0", "0", "–"] in rows
    assert len(rows) == 1 + 4 + 4 + 1


def test_summary_numbers(report: tuple[Path, str, dict[str, list[list[str]]]]) -> None:
    summary = {row[0]: row[1] for row in report[2]["summary"]}
    assert summary["job"] == "tacie-test"
    assert summary["teacher model"] == "teacher-model-x"
    assert summary["scorer"] == "gemma-3-270m-scorer (hf)"
    assert summary["evolution rounds"] == "3"
    assert summary["items"] == "60"
    assert summary["kept"] == "56"
    assert summary["removed by filters"] == "contaminated:mbpp: 1, near_duplicate: 2, no_response: 1"
    assert summary["contamination checked (metrics)"] == "humaneval: 0, mbpp: 1, gsm8k: 0"
    assert (summary["diversity U: seeds"], summary["diversity U: evolved"], summary["diversity U: all"]) == (
        "0.0111", "0.0222", "0.0333")


def test_figures_are_valid_pngs_referenced_by_name(report: tuple[Path, str, dict[str, list[list[str]]]]) -> None:
    index, page, _ = report
    assert set(FIGURES) == {"projection.png", "uncertainty.png", "domains.png", "rounds.png", "success.png"}
    for name in FIGURES:
        assert f'<img src="{name}"' in page
        png = index.parent / name
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1024, name
        assert mpimg.imread(png).shape[:2] == (450, 700), name
    assert not [p for p in index.parent.iterdir() if p.name.endswith(".tmp")]


def test_texts_are_escaped_and_samples_name_parents(report: tuple[Path, str, dict[str, list[list[str]]]]) -> None:
    _, page, _ = report
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; keep a &lt; b" in page
    items = make_items()
    sampled = next(it for it in items if it["instruction"] == SCRIPT_TEXT)
    assert sampled["parent_ids"][0] in page
    fused = next(it for it in items if it["instruction"] == LONG_TEXT)
    assert ", ".join(fused["parent_ids"]) in page
    assert html.escape(LONG_TEXT[:200]) in page and html.escape(LONG_TEXT) not in page and "more chars]" in page
    for op in ("diversify", "depth_constraint", "depth_background", "fusion_in_domain", "fusion_cross_domain"):
        assert f"<h3>{op} <small>" in page
    assert "<h3>seed <small>" not in page


def test_degenerate_run_still_reports(tmp_path: Path) -> None:
    """Nothing scored, no embeddings, no attempts: every figure is still drawn (as 'no data')."""
    items = [it for it in make_items() if it["round"] == 0][:5]
    for it in items:
        it["uncertainty"], it["embedding"] = None, []
    metrics = {"rounds": [{"round": 0, "pool_size": 5, "added": {"seed": 5}, "attempts": {}, "success_rate": {}}]}
    run = make_run(tmp_path / "run", items=items, metrics=metrics)
    index = write_report(run, out_dir=tmp_path / "elsewhere")
    assert index == tmp_path / "elsewhere" / "index.html"
    for name in FIGURES:
        assert (index.parent / name).read_bytes()[:8] == PNG_MAGIC
    assert "No attempts recorded." in index.read_text()


def test_projection_separates_seeds_from_drifted_items() -> None:
    items = make_items()
    import pandas as pd

    frame = pd.DataFrame(items)
    matrix, rows = embedding_matrix(frame)
    assert matrix.shape == (57, 384) and 5 not in rows and 50 not in rows
    xy = project_2d(matrix)
    assert np.array_equal(xy, project_2d(matrix))
    rounds = frame["round"].to_numpy()[rows]
    pc1 = xy[:, 0]
    assert (pc1[rounds == 0].max() < pc1[rounds == 2].min()) or (pc1[rounds == 0].min() > pc1[rounds == 2].max())
    assert removal_counts(frame) == {"contaminated:mbpp": 1, "near_duplicate": 2, "no_response": 1}


@pytest.mark.parametrize("case, expected", [
    ("missing_dir", "not a run directory (no such directory)"),
    ("no_manifest", "not a run directory (no manifest.json)"),
    ("if_run", "report needs a tacie run, this is instruction_fusion"),
    ("no_parquet", "items parquet is missing"),
    ("no_metrics", "metrics file is missing"),
])
def test_bad_inputs_raise_one_line_errors(tmp_path: Path, case: str, expected: str) -> None:
    run = tmp_path / "run"
    if case != "missing_dir":
        make_run(run)
    if case == "no_manifest":
        (run / "manifest.json").unlink()
    elif case == "if_run":
        (run / "manifest.json").write_text(json.dumps({"kind": "instruction_fusion", "outputs": {"parquet": "x.parquet"}}))
    elif case == "no_parquet":
        (run / "tacie-test.parquet").unlink()
    elif case == "no_metrics":
        (run / "metrics.json").unlink()
    with pytest.raises(FusionError) as err:
        write_report(run)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert str(run) in message
    assert not (run / "report" / "index.html").exists()


def test_failed_report_leaves_previous_index(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    report_dir = run / "report"
    report_dir.mkdir()
    (report_dir / "index.html").write_text("previous report")
    (run / "tacie-test.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(FusionError, match="unreadable items parquet"):
        write_report(run)
    assert (report_dir / "index.html").read_text() == "previous report"
    assert sorted(p.name for p in report_dir.iterdir()) == ["index.html"]


def test_figure_failure_leaves_previous_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures are written before the page: a figure that fails leaves the old page in place."""
    import ray_pipeline.methods.tacie.report as report_module

    def broken(fig: Any, metrics: Any) -> None:
        raise RuntimeError("plot failed")

    run = make_run(tmp_path / "run")
    (run / "report").mkdir()
    (run / "report" / "index.html").write_text("previous report")
    monkeypatch.setattr(report_module, "_plot_success", broken)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_report(run)
    assert (run / "report" / "index.html").read_text() == "previous report"
    assert not [p for p in (run / "report").iterdir() if p.name.endswith(".tmp")]
