"""Run folders -> a static, self-contained leaderboard site (index.html, runs/<slug>.html, static/).

Every run folder under RESULTS_DIR (any depth) is read with `load_run`, so a broken one stops the
build with one line naming it. Runs are grouped into one table per (dataset name, track). For every
run of a table as a possible baseline, the relative change of every other run and a paired test on
the per-query scores are computed here, Holm-corrected across the cells of that table; the page's
baseline selector only switches between these precomputed variants, so no statistics run in the
browser. The site is written to a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from gcl_eval import __version__
from gcl_eval.measures import stats
from gcl_eval.util.atomic import atomic_folder
from gcl_eval.data.dataset import SPLITS
from gcl_eval.util.errors import GclError
from gcl_eval.protocol.results import RunResult, display_label, load_run
from leaderboard.svg import Series, line_plot

HERE = Path(__file__).resolve().parent
TRACKS = ("text", "image", "multi")
TRACK_TITLES = {"text": "Text", "image": "Image", "multi": "Multi-field", "unknown": "Unknown track"}
TABLE_MEASURES = ("nDCG@10", "ERR", "RBP(p=0.9)")
MARKER = "site.json"  # written into every site; an existing --out folder is replaced only if it has one
N_RESAMPLES, TEST_SEED = 10_000, 0  # the randomisation test's settings


@dataclass
class Entry:
    """One run as the site shows it."""

    run: RunResult
    folder: Path
    rel: str  # the folder relative to RESULTS_DIR, "/"-separated
    slug: str  # file name stem of its page under runs/
    label: str  # preset, else the folder name
    family: str
    track: str  # text | image | multi | unknown
    training: str  # trained | zero-shot | unknown
    per_query: dict[str, pd.DataFrame] = field(default_factory=dict)  # split -> rows indexed by qid


@dataclass
class Column:
    split: str
    measure: str

    @property
    def key(self) -> str:
        return f"{self.split} {self.measure}"


@dataclass
class Table:
    id: str
    dataset: str
    track: str
    columns: list[Column]
    rows: list[Entry]
    baseline: str  # slug of the initially selected baseline, "" for none
    variants: dict[str, dict[str, list[list]]]  # baseline slug -> run slug -> per column [text, cls, title, rel, p_adj]

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(c.split for c in self.columns))


@dataclass(frozen=True)
class SiteSummary:
    out: Path
    runs: int
    tables: int


# ---------------------------------------------------------------- collecting runs

def collect_runs(results_dir: Path) -> list[Entry]:
    """Every run folder (a folder with result.json) under results_dir, validated, in path order.

    Hidden folders are skipped: `save_run` builds a run in `.<name>.*` before renaming it, and a
    half-written one must not appear on the site.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise GclError(f"{results_dir}: results folder does not exist or is not a folder")
    files = sorted(p for p in results_dir.rglob("result.json")
                   if not any(part.startswith(".") for part in p.relative_to(results_dir).parts[:-1]))
    if not files:
        raise GclError(f"{results_dir}: no run folders (no result.json at any depth)")
    entries, used = [], set()
    for path in files:
        folder = path.parent
        run = load_run(folder)  # GclError naming the folder's file when it is not valid
        if not isinstance(run.model, dict):
            raise GclError(f"{path}: \"model\" must be an object")
        rel = folder.relative_to(results_dir).as_posix()
        name = folder.resolve().name if rel == "." else folder.name
        model = run.model
        shown = display_label(model)
        track = model.get("track")
        trains = model.get("trains")
        entry = Entry(run=run, folder=folder, rel=rel if rel != "." else name,
                      slug=_unique_slug(name if rel == "." else rel, used),
                      label=shown if shown else name,
                      family=str(model.get("family") or "unknown"),
                      track=track if track in TRACKS else "unknown",
                      training="trained" if trains is True else "zero-shot" if trains is False else "unknown")
        for split in run.splits:
            rows = run.per_query[run.per_query["split"] == split]
            entry.per_query[split] = rows.set_index(rows["qid"].astype(str)).sort_index()
        entries.append(entry)
    return entries


def _unique_slug(rel: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", rel.lower().replace("/", "--")).strip(".-") or "run"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def _matches(entry: Entry, spec: str) -> bool:
    if spec in (entry.run.model.get("preset"), entry.label, entry.rel, entry.folder.name):
        return True
    candidate = Path(spec)
    return candidate.is_dir() and candidate.resolve() == entry.folder.resolve()


# ---------------------------------------------------------------- tables and statistics

def build_tables(entries: list[Entry], baseline: str | None = None, test: str = "t",
                 alpha: float = 0.05) -> list[Table]:
    """One table per (dataset, track), rows best first by the first column, with every baseline variant."""
    if test not in stats.TESTS:
        raise GclError(f"unknown test {test!r}; known: {', '.join(stats.TESTS)}")
    if baseline is not None and not any(_matches(e, baseline) for e in entries):
        raise GclError(f"baseline {baseline!r} matches no run (give a preset name or a run folder)")
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        groups.setdefault((str(entry.run.dataset.get("name", "unnamed")), entry.track), []).append(entry)
    order = {t: i for i, t in enumerate((*TRACKS, "unknown"))}
    tables = []
    for i, ((dataset, track), rows) in enumerate(sorted(groups.items(), key=lambda g: (g[0][0], order[g[0][1]]))):
        present = {s for e in rows for s in e.run.splits}
        splits = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
        columns = [Column(s, m) for s in splits for m in TABLE_MEASURES]
        rows = sorted(rows, key=lambda e: (-_value(e, columns[0]) if _has(e, columns[0]) else math.inf, e.label))
        chosen = [e for e in rows if baseline is not None and _matches(e, baseline)]
        if len(chosen) > 1:
            raise GclError(f"baseline {baseline!r} matches {len(chosen)} runs of dataset {dataset} track {track} "
                           f"({', '.join(e.rel for e in chosen)}); give a run folder instead")
        variants = {base.slug: _variant(rows, base, columns, test, alpha) for base in rows}
        tables.append(Table(id=f"t{i}", dataset=dataset, track=track, columns=columns, rows=rows,
                            baseline=chosen[0].slug if chosen else "", variants=variants))
    return tables


def _has(entry: Entry, column: Column) -> bool:
    return column.measure in entry.run.splits.get(column.split, {}).get("metrics", {})


def _value(entry: Entry, column: Column) -> float:
    return float(entry.run.splits[column.split]["metrics"][column.measure])


def _incomparable(run: Entry, base: Entry) -> str | None:
    """Why per-query scores of two runs cannot be paired (None when they can, split by split)."""
    if run.run.dataset.get("fingerprint") != base.run.dataset.get("fingerprint"):
        return "not comparable: different dataset fingerprint"
    for key in ("metric_profile", "top_k"):
        if run.run.protocol.get(key) != base.run.protocol.get(key):
            return (f"not comparable: different {key.replace('_', ' ')} "
                    f"({run.run.protocol.get(key)} vs {base.run.protocol.get(key)})")
    return None


def _variant(rows: list[Entry], base: Entry, columns: list[Column], test: str, alpha: float) -> dict:
    """The cells of every row against one baseline: [text, css class, tooltip, rel %, Holm p]."""
    test_name = stats.TEST_NAMES[test]
    cells: dict[str, list[list]] = {}
    pending = []  # (row slug, column index, raw p, relative change %, paired queries)
    for entry in rows:
        out = cells[entry.slug] = [["", "", "", None, None] for _ in columns]
        if entry is base:
            for cell in out:
                cell[:3] = ["baseline", "base", f"{base.label} is the baseline of this table"]
            continue
        reason = _incomparable(entry, base)
        for ci, column in enumerate(columns):
            if not (_has(entry, column) and _has(base, column)):
                continue
            if reason:
                out[ci][:3] = ["n/c", "nc", reason]
                continue
            mine, theirs = entry.per_query[column.split], base.per_query[column.split]
            if not mine.index.equals(theirs.index):
                out[ci][:3] = ["n/c", "nc", f"not comparable: different queries on {column.split}"]
                continue
            base_mean = _value(base, column)
            if base_mean == 0:
                out[ci][:3] = ["n/a", "na", f"{base.label} scores 0 on {column.key}: no relative change"]
                continue
            rel = (_value(entry, column) / base_mean - 1) * 100
            p = stats.paired_test(mine[column.measure].to_numpy(), theirs[column.measure].to_numpy(), test,
                                  n_resamples=N_RESAMPLES, seed=TEST_SEED)
            pending.append((entry.slug, ci, p, rel, len(mine)))
    adjusted = stats.holm([p for _, _, p, _, _ in pending]) if pending else []
    for (slug, ci, p, rel, n), p_adj in zip(pending, adjusted):
        significant = bool(np.isfinite(p_adj) and p_adj <= alpha)
        direction = "up" if rel > 0 else "down" if rel < 0 else "flat"
        p_text = "undefined" if not math.isfinite(p) else f"p = {p:.3g}, Holm-adjusted p = {p_adj:.3g}"
        title = (f"{rel:+.1f}% vs {base.label}; {test_name} on {n} queries: {p_text} "
                 f"({'significant' if significant else 'not significant'} at α = {alpha:g})")
        cells[slug][ci] = [f"{rel:+.1f}%" + ("*" if significant else ""),
                           f"{direction} sig" if significant else direction, title,
                           round(rel, 4), None if not np.isfinite(p_adj) else float(p_adj)]
    return cells


# ---------------------------------------------------------------- rendering

def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = lambda v: "—" if v is None else f"{v:.4f}"
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


def _curve_plot(entry: Entry):
    series = []
    for split, body in entry.run.splits.items():
        curve = body.get("curves", {}).get("nDCG@k") if isinstance(body.get("curves"), dict) else None
        if isinstance(curve, list) and curve:
            series.append(Series(split, list(range(1, len(curve) + 1)), [_float(v) for v in curve]))
    if not series or not any(math.isfinite(y) for s in series for y in s.ys):
        return None
    depth = max(len(s.xs) for s in series)
    return line_plot(series, title="nDCG@k by split", x_label="cut-off k", y_label="mean nDCG@k",
                     x_ticks=_cutoff_ticks(depth), y_range=(0.0, 1.0))


def _stw_plot(entry: Entry):
    stw = entry.run.model.get("stw")
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


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


MODEL_KEYS = ("preset", "family", "track", "trains", "arch", "source", "checkpoint_sha256", "doc_fields")


def _model_rows(entry: Entry) -> list[tuple[str, object]]:
    model = entry.run.model
    rows = [(key, model.get(key)) for key in MODEL_KEYS]
    rows += [(key, value) for key, value in model.items() if key not in MODEL_KEYS and key != "stw"]
    stw = model.get("stw")
    if isinstance(stw, dict):
        rows.append(("stw", {k: v for k, v in stw.items() if k != "curve"}))
    return rows


def render_site(tables: list[Table], entries: list[Entry], site: Path, *, test: str, alpha: float) -> None:
    """Write index.html, runs/<slug>.html and static/ into the (empty) folder `site`."""
    env = _environment()
    static = site / "static"
    static.mkdir(parents=True)
    for name in ("site.css", "site.js"):
        shutil.copyfile(HERE / "static" / name, static / name)
    facets = {
        "track": sorted({e.track for e in entries}, key=lambda t: (*TRACKS, "unknown").index(t)),
        "family": sorted({e.family for e in entries}),
        "training": sorted({e.training for e in entries}),
        "dataset": sorted({t.dataset for t in tables}),
    }
    common = {"version": __version__, "test_name": stats.TEST_NAMES[test], "alpha": alpha, "n_runs": len(entries)}
    (site / "index.html").write_text(env.get_template("index.html.j2").render(
        tables=tables, facets=facets, track_titles=TRACK_TITLES, root="", **common), encoding="utf-8")
    runs = site / "runs"
    runs.mkdir()
    template = env.get_template("run.html.j2")
    for entry in entries:
        measures = list(dict.fromkeys(m for body in entry.run.splits.values() for m in body["metrics"]))
        (runs / f"{entry.slug}.html").write_text(template.render(
            entry=entry, run=entry.run, model_rows=_model_rows(entry), measures=measures,
            curve_plot=_curve_plot(entry), stw_plot=_stw_plot(entry), root="../", **common), encoding="utf-8")
    manifest = {"generator": "gcl-eval leaderboard", "version": __version__, "test": test, "alpha": alpha,
                "runs": {e.slug: e.rel for e in entries},
                "tables": [{"dataset": t.dataset, "track": t.track, "runs": [e.slug for e in t.rows],
                            "baseline": t.baseline} for t in tables]}
    (site / MARKER).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the whole build

def build_site(results_dir: Path | str, out: Path | str, *, baseline: str | None = None, test: str = "t",
               alpha: float = 0.05) -> SiteSummary:
    """Collect, compare and render; replace `out` only once the new site is complete."""
    results_dir, out = Path(results_dir), Path(out)
    if not 0 < alpha < 1:
        raise GclError(f"alpha must be between 0 and 1 (got {alpha})")
    _check_out(results_dir, out)
    entries = collect_runs(results_dir)
    tables = build_tables(entries, baseline, test, alpha)
    with atomic_folder(out) as tmp:
        render_site(tables, entries, tmp, test=test, alpha=alpha)
    return SiteSummary(out=out, runs=len(entries), tables=len(tables))


def _check_out(results_dir: Path, out: Path) -> None:
    """Refuse an --out that would replace the results or a folder that is not a previous site."""
    res, dest = results_dir.resolve(), out.resolve()
    if dest == res or dest in res.parents:
        raise GclError(f"--out {out} would replace the results folder {results_dir}; choose another folder")
    if out.exists():
        if not out.is_dir():
            raise GclError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise GclError(f"--out {out} exists and is not a leaderboard site (no {MARKER}); "
                           f"choose a new folder or remove it")
