"""The report of a TaCIE run: one self-contained HTML page and its figures.

TaCIE (Yang et al. 2024, arXiv 2410.02795) grows a pool C(t) of instructions
round by round: round 0 collects and diversifies seeds, each round t >= 1 adds
depth-evolved and task-fused children, and every item carries the scorer's
uncertainty u = mean_j |q - q_j| over perturbed copies of its instruction. The
report shows what a run did to that pool: where the evolved items lie against
the seeds (a 2-D PCA of their sentence embeddings), how u moved, which root
domains grew, pool size and diversity U per round, the success rate of each
evolution operation, and a few evolved instructions with their parents.

Inputs are the run directory's ``manifest.json`` (``kind: tacie``; ``outputs.items``
names the items Parquet, ``outputs.metrics`` the metrics JSON). The figures are
written first, each atomically, and ``index.html`` last, so a report that fails
part-way leaves the previous page in place.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ray_pipeline.core.errors import FusionError
from ray_pipeline.core.outputs import atomic_path, atomic_write_text

OPERATIONS = ("seed", "diversify", "depth", "depth_constraint", "depth_background", "fusion_in_domain", "fusion_cross_domain")
ITEM_COLUMNS = ("id", "round", "operation", "parent_ids", "root_domain", "instruction", "uncertainty", "embedding",
                "kept", "removed_reason")
FIGURES = {
    "projection.png": "Embeddings of the pool, 2-D PCA (colour: round, marker: operation)",
    "uncertainty.png": "Scorer uncertainty u, seeds vs evolved and per round",
    "domains.png": "Items per root domain per round",
    "rounds.png": "Pool size and diversity U per round",
    "success.png": "Success rate per operation per round",
}
SAMPLES_PER_OPERATION = 3
MAX_TEXT_CHARS = 600
_MARKERS = {"seed": "o", "diversify": "s", "depth": "^", "depth_constraint": "^", "depth_background": "v",
            "fusion_in_domain": "D", "fusion_cross_domain": "P"}
_FIGSIZE = (7.0, 4.5)
_DPI = 100


def write_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``index.html`` and its PNG figures for the TaCIE run in ``run_dir``; return the page's path."""
    run_dir = Path(run_dir)
    manifest, items, metrics = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    rounds = _round_numbers(items, metrics)
    plots: dict[str, Callable[[Figure], None]] = {
        "projection.png": lambda fig: _plot_projection(fig, items, rounds),
        "uncertainty.png": lambda fig: _plot_uncertainty(fig, items, rounds),
        "domains.png": lambda fig: _plot_domains(fig, items, rounds),
        "rounds.png": lambda fig: _plot_rounds(fig, metrics),
        "success.png": lambda fig: _plot_success(fig, metrics),
    }
    for name, draw in plots.items():
        _save_figure(out / name, draw)
    index = out / "index.html"
    atomic_write_text(index, render_html(manifest, items, metrics, rounds))
    return index


# ------------------------------------------------------------------ inputs
def load_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Read and check a TaCIE run directory: (manifest, items table, metrics)."""
    if not run_dir.is_dir():
        raise FusionError(f"{run_dir}: not a run directory (no such directory)")
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FusionError(f"{run_dir}: not a run directory (no manifest.json)")
    manifest = _read_json(manifest_path, "manifest")
    kind = manifest.get("kind")
    if kind != "tacie":
        raise FusionError(f"{run_dir}: report needs a tacie run, this is {kind or 'a run of unknown kind'}")
    outputs = manifest.get("outputs") or {}
    for key in ("items", "metrics"):
        if not isinstance(outputs.get(key), str):
            raise FusionError(f"{manifest_path}: outputs.{key} is missing")
    items = _read_items(run_dir / outputs["items"])
    metrics_path = run_dir / outputs["metrics"]
    if not metrics_path.is_file():
        raise FusionError(f"{metrics_path}: metrics file is missing")
    metrics = _read_json(metrics_path, "metrics")
    if not isinstance(metrics.get("rounds"), list):
        raise FusionError(f"{metrics_path}: no 'rounds' list")
    return manifest, items, metrics


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FusionError(f"{path}: unreadable {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise FusionError(f"{path}: {what} is not a JSON object")
    return data


def _read_items(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FusionError(f"{path}: items parquet is missing")
    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in ITEM_COLUMNS if c not in names]
        if missing:
            raise FusionError(f"{path}: items parquet lacks column(s) {', '.join(missing)}")
        table = pq.read_table(path, columns=list(ITEM_COLUMNS))
    except (OSError, pa.ArrowException) as exc:
        raise FusionError(f"{path}: unreadable items parquet ({exc})") from exc
    items = table.to_pandas()
    items["uncertainty"] = pd.to_numeric(items["uncertainty"], errors="coerce").astype(float)
    items["round"] = items["round"].astype(int)
    return items


def _round_numbers(items: pd.DataFrame, metrics: dict[str, Any]) -> list[int]:
    found = {int(r["round"]) for r in metrics["rounds"] if "round" in r} | set(items["round"].tolist())
    return sorted(found)


# ----------------------------------------------------------------- figures
def _save_figure(path: Path, draw: Callable[[Figure], None]) -> None:
    fig = Figure(figsize=_FIGSIZE, dpi=_DPI)
    FigureCanvasAgg(fig)
    draw(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _marker(operation: str) -> str:
    return _MARKERS.get(operation, "*")


def _round_colours(rounds: Sequence[int]) -> dict[int, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    span = max(len(rounds) - 1, 1)
    return {r: cmap(0.9 * i / span) for i, r in enumerate(rounds)}


def embedding_matrix(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings that can be projected (the commonest non-zero length, all finite) and their row positions."""
    lengths = [len(e) if e is not None and hasattr(e, "__len__") else 0 for e in items["embedding"]]
    common = Counter(n for n in lengths if n > 0).most_common(1)
    if not common:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=int)
    dim = common[0][0]
    rows, vectors = [], []
    for i, (emb, n) in enumerate(zip(items["embedding"], lengths)):
        if n == dim:
            vec = np.asarray(emb, dtype=np.float32)
            if np.isfinite(vec).all():
                rows.append(i)
                vectors.append(vec)
    if not vectors:
        return np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=int)
    return np.stack(vectors), np.asarray(rows, dtype=int)


def project_2d(matrix: np.ndarray) -> np.ndarray:
    """Deterministic 2-D PCA (full SVD, sklearn's sign convention)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, svd_solver="full").fit_transform(matrix.astype(np.float64))


def _plot_projection(fig: Figure, items: pd.DataFrame, rounds: list[int]) -> None:
    ax = fig.add_subplot()
    matrix, rows = embedding_matrix(items)
    ax.set_title("Pool embeddings (PCA)")
    if len(rows) < 3:
        _no_data(ax, "fewer than 3 items with an embedding")
        return
    xy = project_2d(matrix)
    sub = items.iloc[rows].reset_index(drop=True)
    colours = _round_colours(rounds)
    for (rnd, op), group in sub.groupby(["round", "operation"], sort=True):
        pos = group.index.to_numpy()
        ax.scatter(xy[pos, 0], xy[pos, 1], s=22, color=colours[rnd], marker=_marker(op), alpha=0.8, edgecolors="none")
    ops = _operations([dict.fromkeys(sub["operation"])])
    by_op = [Line2D([], [], linestyle="", marker=_marker(op), color="grey", label=op) for op in ops]
    present = set(sub["round"])
    by_round = [Patch(color=colours[r], label=f"round {r}" + (" (seeds)" if r == 0 else "")) for r in rounds if r in present]
    fig.subplots_adjust(left=0.1, right=0.7)
    first = ax.legend(handles=by_round, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
    ax.add_artist(first)
    ax.legend(handles=by_op, loc="lower left", bbox_to_anchor=(1.02, 0.0), fontsize=7)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    skipped = len(items) - len(rows)
    if skipped:
        ax.text(0.99, 0.99, f"{skipped} item(s) without an embedding not shown", transform=ax.transAxes,
                ha="right", va="top", fontsize=7, color="grey")


def _plot_uncertainty(fig: Figure, items: pd.DataFrame, rounds: list[int]) -> None:
    left, right = fig.subplots(1, 2)
    u = items["uncertainty"].to_numpy(dtype=float)
    finite = np.isfinite(u)
    seeds = u[finite & (items["round"].to_numpy() == 0)]
    evolved = u[finite & (items["round"].to_numpy() >= 1)]
    left.set_title("seeds vs evolved", fontsize=10)
    if finite.any():
        bins = np.histogram_bin_edges(u[finite], bins=20)
        for values, label, colour in ((seeds, f"seeds (n={len(seeds)})", "tab:blue"),
                                      (evolved, f"evolved (n={len(evolved)})", "tab:orange")):
            if len(values):
                left.hist(values, bins=bins, alpha=0.6, label=label, color=colour)
        left.legend(fontsize=7)
        left.set_xlabel("uncertainty u")
        left.set_ylabel("items")
    else:
        _no_data(left, "no scored items")
    right.set_title("per round", fontsize=10)
    per_round = [(r, u[finite & (items["round"].to_numpy() == r)]) for r in rounds]
    present = [(r, v) for r, v in per_round if len(v)]
    if present:
        right.boxplot([v for _, v in present], positions=[r for r, _ in present], widths=0.6)
        right.set_xticks(rounds, [f"{r}\nn={len(v)}" for r, v in per_round], fontsize=7)
        right.set_xlim(min(rounds) - 0.7, max(rounds) + 0.7)
        right.set_xlabel("round")
    else:
        _no_data(right, "no scored items")
    unscored = int((~finite).sum())
    fig.suptitle("Uncertainty" + (f" ({unscored} unscored item(s) left out)" if unscored else ""), fontsize=11)
    fig.tight_layout()


def _plot_domains(fig: Figure, items: pd.DataFrame, rounds: list[int]) -> None:
    ax = fig.add_subplot()
    ax.set_title("Items per root domain per round")
    if items.empty:
        _no_data(ax, "no items")
        return
    domain = items["root_domain"].fillna("").replace("", "(none)")
    counts = pd.crosstab(items["round"], domain).reindex(rounds, fill_value=0)
    bottom = np.zeros(len(rounds))
    for i, name in enumerate(sorted(counts.columns)):
        values = counts[name].to_numpy(dtype=float)
        ax.bar(rounds, values, bottom=bottom, label=name, color=f"C{i % 10}")
        bottom += values
    ax.set_xticks(rounds)
    ax.set_xlabel("round (items created in it)")
    ax.set_ylabel("items")
    ax.legend(fontsize=8)


def _metric_rounds(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((r for r in metrics["rounds"] if "round" in r), key=lambda r: int(r["round"]))


def _plot_rounds(fig: Figure, metrics: dict[str, Any]) -> None:
    ax = fig.add_subplot()
    ax.set_title("Pool size and diversity per round")
    rows = _metric_rounds(metrics)
    if not rows:
        _no_data(ax, "no rounds in metrics.json")
        return
    xs = [int(r["round"]) for r in rows]
    sizes = [_number(r.get("pool_size")) for r in rows]
    ax.bar(xs, [0.0 if math.isnan(s) else s for s in sizes], color="tab:blue", alpha=0.6, label="pool size")
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.set_ylabel("pool size", color="tab:blue")
    twin = ax.twinx()
    us = [(x, _number(r.get("diversity_u"))) for x, r in zip(xs, rows)]
    us = [(x, u) for x, u in us if not math.isnan(u)]
    if us:
        twin.plot([x for x, _ in us], [u for _, u in us], color="tab:red", marker="o", label="diversity U")
    twin.set_ylabel("diversity U", color="tab:red")
    fig.tight_layout()


def _plot_success(fig: Figure, metrics: dict[str, Any]) -> None:
    ax = fig.add_subplot()
    ax.set_title("Success rate per operation")
    rows = _metric_rounds(metrics)
    ops = _operations(r.get("success_rate") or {} for r in rows)
    drawn = 0
    for op in ops:
        points = [(int(r["round"]), _number((r.get("success_rate") or {}).get(op))) for r in rows]
        points = [(x, y) for x, y in points if not math.isnan(y)]
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker=_marker(op), label=op)
            drawn += 1
    if not drawn:
        _no_data(ax, "no attempts recorded")
        return
    ax.set_ylim(-0.03, 1.05)
    ax.set_xticks([int(r["round"]) for r in rows])
    ax.set_xlabel("round")
    ax.set_ylabel("ok / attempts")
    ax.legend(fontsize=8)


# -------------------------------------------------------------------- html
def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: Any) -> str:
    """A cell's text: '–' for missing values, 4 significant digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def pct(value: Any) -> str:
    number = _number(value)
    return "–" if math.isnan(number) else f"{100 * number:.1f}%"


def _operations(dicts: Any) -> list[str]:
    seen: set[str] = set()
    for d in dicts:
        seen.update(d)
    return [op for op in OPERATIONS if op in seen] + sorted(seen - set(OPERATIONS))


def _e(value: Any) -> str:
    return html.escape(fmt(value), quote=True)


def _pairs(mapping: dict[str, Any] | None) -> str:
    if not mapping:
        return "–"
    return "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in mapping.items())


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>\n" if header else ""
    return f'<table class="{cls}">{thead}<tbody>\n{body}</tbody></table>'


def _truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + f" … [{len(text) - limit} more chars]"


def removal_counts(items: pd.DataFrame) -> dict[str, int]:
    """Removed items by reason; ids are dropped from ``near_duplicate:<id>``, benchmarks kept in ``contaminated:<name>``."""
    counts: Counter[str] = Counter()
    for kept, reason in zip(items["kept"], items["removed_reason"].fillna("")):
        if bool(kept):
            continue
        reason = str(reason) or "unspecified"
        counts[reason if reason.startswith("contaminated:") else reason.split(":", 1)[0]] += 1
    return dict(sorted(counts.items()))


def _summary(manifest: dict[str, Any], items: pd.DataFrame, metrics: dict[str, Any], rounds: list[int]) -> str:
    config = manifest.get("config") or {}
    teacher = manifest.get("teacher") or config.get("teacher") or {}
    scorer = manifest.get("scorer") or config.get("scorer") or {}
    if isinstance(scorer, dict):
        scorer = f"{scorer.get('model') or 'bundled default'} ({scorer.get('backend', 'hf')})"
    diversity = metrics.get("diversity") or {}
    filters = metrics.get("filters") or {}
    kept = int(items["kept"].fillna(False).astype(bool).sum())
    removed = removal_counts(items)
    removed_text = ", ".join(f"{html.escape(k)}: {v}" for k, v in removed.items()) or "none"
    checked = filters.get("contaminated") or {}
    rows = [
        ("job", _e(manifest.get("job") or config.get("name"))),
        ("teacher model", _e(teacher.get("model") if isinstance(teacher, dict) else teacher)),
        ("scorer", _e(scorer)),
        ("evolution rounds", _e(max((r for r in rounds if r >= 1), default=0))),
        ("items", _e(len(items))),
        ("kept", _e(kept)),
        ("removed by filters", removed_text),
        ("near-duplicate filter (metrics)", _e(filters.get("near_duplicate"))),
        ("contamination checked (metrics)", ", ".join(f"{_e(k)}: {_e(v)}" for k, v in checked.items()) or "–"),
        ("diversity U: seeds", _e(diversity.get("seeds"))),
        ("diversity U: evolved", _e(diversity.get("evolved"))),
        ("diversity U: all", _e(diversity.get("all"))),
        ("diversity U: kept", _e(diversity.get("kept"))),
    ]
    return _table((), [(html.escape(k), v) for k, v in rows], "summary")


def _round_table(metrics: dict[str, Any]) -> str:
    rows = []
    for r in _metric_rounds(metrics):
        unc = r.get("uncertainty") or {}
        rows.append([
            _e(r["round"]), _e(r.get("pool_size")), _pairs(r.get("added")),
            "<br>".join(f"{_e(op)}: {pct(v)}" for op, v in (r.get("success_rate") or {}).items()) or "–",
            _e(r.get("diversity_u")), _e(unc.get("mean")), _e(unc.get("median")), _pairs(r.get("domains")),
        ])
    header = ("round", "pool size", "added", "success rate", "diversity U", "mean u", "median u", "domains")
    return _table(header, rows, "rounds")


def _attempt_table(metrics: dict[str, Any]) -> str:
    rows = []
    for r in _metric_rounds(metrics):
        attempts = r.get("attempts") or {}
        rates = r.get("success_rate") or {}
        for op in _operations([attempts]):
            a = attempts[op] or {}
            outcomes = [a.get(k, 0) for k in ("ok", "parse_error", "api_error", "invalid")]
            total = sum(int(_number(v)) for v in outcomes if not math.isnan(_number(v)))
            rows.append([_e(r["round"]), _e(op), _e(total), *(_e(v) for v in outcomes), pct(rates.get(op))])
    if not rows:
        return "<p>No attempts recorded.</p>"
    header = ("round", "operation", "attempts", "ok", "parse_error", "api_error", "invalid", "success rate")
    return _table(header, rows, "attempts")


def _samples(items: pd.DataFrame) -> str:
    parts = []
    evolved = items[items["operation"] != "seed"]
    for op in _operations([dict.fromkeys(evolved["operation"])]):
        group = evolved[evolved["operation"] == op]
        group = group.assign(_removed=~group["kept"].fillna(False).astype(bool), _age=-group["round"])
        group = group.sort_values(["_removed", "_age"], kind="stable")  # kept first, latest round first
        parts.append(f"<h3>{html.escape(op)} <small>({len(group)} item(s), showing "
                     f"{min(len(group), SAMPLES_PER_OPERATION)})</small></h3>")
        for _, item in group.head(SAMPLES_PER_OPERATION).iterrows():
            parents = ", ".join(str(p) for p in (item["parent_ids"] if item["parent_ids"] is not None else [])) or "–"
            status = "kept" if bool(item["kept"]) else f"removed: {item['removed_reason'] or 'unspecified'}"
            parts.append(
                '<div class="sample"><div class="meta">'
                f"id <code>{_e(item['id'])}</code> · round {_e(item['round'])} · parents <code>{html.escape(parents)}</code>"
                f" · u {_e(float(item['uncertainty']))} · {html.escape(status)}</div>"
                f"<pre>{html.escape(_truncate(str(item['instruction'] or '')))}</pre></div>"
            )
    return "\n".join(parts) or "<p>No evolved instructions.</p>"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
figure { display: inline-block; margin: 0.5em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
.sample { border-left: 3px solid #88a; margin: 0.6em 0; padding: 0.2em 0.8em; }
.meta { font-size: 0.85em; color: #555; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #f8f8f8; padding: 0.5em; }
"""


def render_html(manifest: dict[str, Any], items: pd.DataFrame, metrics: dict[str, Any], rounds: list[int]) -> str:
    """The report page; every text from the run is HTML-escaped and figures are referenced by file name."""
    title = html.escape(f"TaCIE report: {fmt(manifest.get('job') or (manifest.get('config') or {}).get('name'))}")
    figures = "\n".join(
        f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, caption in FIGURES.items()
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>\n<body>\n'
        f"<h1>{title}</h1>\n<h2>Summary</h2>\n{_summary(manifest, items, metrics, rounds)}\n"
        f"<h2>Rounds</h2>\n{_round_table(metrics)}\n"
        f"<h2>Attempts per operation</h2>\n{_attempt_table(metrics)}\n"
        f"<h2>Figures</h2>\n{figures}\n"
        f"<h2>Sample of evolved instructions</h2>\n{_samples(items)}\n"
        "</body></html>\n"
    )
