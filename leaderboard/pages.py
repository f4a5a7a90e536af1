"""Tables and models -> the site's files: index.html, runs/<slug>.html (one page per model), static/, site.json.

Everything is rendered from the run folders alone (no clock, no absolute path of the results
folder), so the same run folders give the same bytes.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from gcl_eval import __version__
from gcl_eval.experiments.preset import TRACKS
from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.stats import TEST_NAMES
from leaderboard.runs import Model, dataset_title
from leaderboard.svg import DotRow, Series, dot_plot, line_plot
from leaderboard.tables import Table

HERE = Path(__file__).resolve().parent
TRACK_TITLES = {"text": "Text", "image": "Image", "multi": "Multi-field", "unknown": "Unknown track"}
MARKER = "site.json"  # written into every site; an existing --out folder is replaced only if it has one


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = lambda v: "—" if v is None else f"{v:.4f}"
    env.filters["sd"] = lambda v: "" if v is None else f"±{v:.4f}"
    env.filters["pretty"] = _pretty
    env.filters["breakable"] = _breakable
    env.filters["flat"] = _flat
    return env


def _flat(mapping, prefix: str = "") -> list[tuple[str, object]]:
    """Nested provenance dicts as (dotted key, value) rows: timings.splits_s.in_domain -> splits_s.in_domain."""
    if not isinstance(mapping, dict):
        return [(prefix or "value", mapping)]
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        rows.extend(_flat(value, name) if isinstance(value, dict) and value else [(name, value)])
    return rows


def _breakable(name: str) -> Markup:
    """A measure name that may wrap before its parameters: RBP<wbr>(p=0.9)."""
    head, paren, tail = str(name).partition("(")
    return Markup(escape(head) + (Markup("<wbr>") + escape(paren + tail) if paren else ""))


def _pretty(value) -> str:
    """A provenance value as one line of text."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------- plots

def overview_plot(table: Table) -> Markup | None:
    """The table's main measure on every split, a line per model in rank order (mean over seeds)."""
    measure = table.main.measure
    rows = []
    for model, rank in zip(table.rows, table.ranks):
        values = [model.mean(split, measure) for split in table.splits]
        notes = [_mean_std_text(model, split, measure) for split in table.splits]
        rows.append(DotRow(f"{rank}. {model.label}" if rank else model.label, values, notes))
    if not any(v is not None for row in rows for v in row.values):
        return None
    return dot_plot(rows, table.splits, title=f"{measure} per split (mean over seeds), best {table.main.key} first",
                    x_label=f"mean {measure}")


def _mean_std_text(model: Model, split: str, measure: str) -> str:
    mean, std = model.mean(split, measure), model.std(split, measure)
    if mean is None:
        return "—"
    seeds = f"{model.n_seeds} seed{'s' if model.n_seeds != 1 else ''}"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "") + f" ({seeds})"


def _mean_curves(model: Model) -> list[Series]:
    """Mean nDCG@k for k = 1..depth per split, averaged over the seeds that recorded the same depth."""
    series = []
    for split in model.reference.splits:
        curves = []
        for entry in model.runs:
            body = entry.run.splits.get(split, {})
            curve = body.get("curves", {}).get("nDCG@k") if isinstance(body.get("curves"), dict) else None
            if isinstance(curve, list) and curve:
                curves.append([_float(v) for v in curve])
        curves = [c for c in curves if curves and len(c) == len(curves[0])]
        if curves:
            mean = [sum(values) / len(values) for values in zip(*curves)]
            series.append(Series(split, list(range(1, len(mean) + 1)), mean))
    return series


def curve_plot(model: Model) -> Markup | None:
    series = _mean_curves(model)
    if not series or not any(math.isfinite(y) for s in series for y in s.ys):
        return None
    depth = max(len(s.xs) for s in series)
    title = "nDCG@k by split" + (f" (mean over {model.n_seeds} seeds)" if model.n_seeds > 1 else "")
    return line_plot(series, title=title, x_label="cut-off k", y_label="mean nDCG@k",
                     x_ticks=_cutoff_ticks(depth), y_range=(0.0, 1.0))


def stw_plot(model: Model) -> Markup | None:
    stw = model.reference.model.get("stw")
    curve = stw.get("curve") if isinstance(stw, dict) else None
    if not isinstance(curve, list) or not curve or not any(math.isfinite(_float(v)) for v in curve):
        return None
    name = str(stw.get("name", "STW"))
    return line_plot([Series(f"w(s), {name}", list(range(1, len(curve) + 1)), [_float(v) for v in curve])],
                     title=f"Score-to-weight function: {name}", x_label="ranking score s", y_label="weight w(s)",
                     x_ticks=_cutoff_ticks(len(curve)))


def _cutoff_ticks(depth: int) -> list[int]:
    if depth <= 10:
        return list(range(1, depth + 1))
    step = 20 if depth > 50 else 10 if depth > 20 else 5
    return [1, *range(step, depth + 1, step)] if depth % step == 0 else [1, *range(step, depth + 1, step), depth]


MODEL_KEYS = ("preset", "family", "track", "trains", "arch", "source", "checkpoint_sha256", "doc_fields")


def model_rows(model: dict) -> list[tuple[str, object]]:
    """A run's model record as provenance rows: the main keys first, the STW without its curve."""
    rows = [(key, model.get(key)) for key in MODEL_KEYS]
    rows += [(key, value) for key, value in model.items() if key not in MODEL_KEYS and key != "stw"]
    stw = model.get("stw")
    if isinstance(stw, dict):
        rows.append(("stw", {k: v for k, v in stw.items() if k != "curve"}))
    return rows


# ---------------------------------------------------------------- the files

def render_site(tables: list[Table], models: list[Model], site: Path, *, test: str, alpha: float) -> None:
    """Write index.html, runs/<slug>.html and static/ into the (empty) folder `site`."""
    env = _environment()
    static = site / "static"
    static.mkdir(parents=True)
    for name in ("site.css", "site.js"):
        shutil.copyfile(HERE / "static" / name, static / name)
    facets = {
        "track": sorted({m.track for m in models}, key=lambda t: (*TRACKS, "unknown").index(t)),
        "family": sorted({m.family for m in models}),
        "training": sorted({m.training for m in models}),
        "dataset": list(dict.fromkeys(t.dataset for t in tables)),
    }
    n_runs = sum(m.n_seeds for m in models)
    common = {"version": __version__, "test_name": TEST_NAMES[test], "alpha": alpha, "n_runs": n_runs,
              "n_models": len(models)}
    charts = {t.id: overview_plot(t) for t in tables}
    (site / "index.html").write_text(env.get_template("index.html.j2").render(
        tables=tables, charts=charts, facets=facets, track_titles=TRACK_TITLES, root="", **common),
        encoding="utf-8")
    runs = site / "runs"
    runs.mkdir()
    template = env.get_template("run.html.j2")
    for model in models:
        reference = model.reference
        measures = list(dict.fromkeys(m for body in reference.splits.values() for m in body["metrics"]))
        (runs / f"{model.slug}.html").write_text(template.render(
            model=model, run=reference, dataset=dataset_title(model.dataset_name), measures=measures,
            seed_columns=[(s, m) for s in reference.splits for m in PAPER_MEASURES
                          if model.has(s, m)],
            seed_splits=[s for s in reference.splits if any(model.has(s, m) for m in PAPER_MEASURES)],
            model_rows=model_rows, curve_plot=curve_plot(model), stw_plot=stw_plot(model), root="../", **common),
            encoding="utf-8")
    (site / MARKER).write_text(json.dumps(_manifest(tables, models, test, alpha), indent=2, ensure_ascii=False)
                               + "\n", encoding="utf-8")


def _manifest(tables: list[Table], models: list[Model], test: str, alpha: float) -> dict:
    return {"generator": "gcl-eval leaderboard", "version": __version__, "test": test, "alpha": alpha,
            "models": {m.slug: {"label": m.label, "folder": m.rel, "runs": [e.rel for e in m.runs]} for m in models},
            "tables": [{"dataset": t.dataset, "dataset_name": t.dataset_name, "track": t.track,
                        "ranked_by": t.main.key, "models": [m.slug for m in t.rows], "ranks": t.ranks,
                        "baseline": t.baseline, "reported": [r.label for r in t.reported]} for t in tables]}
