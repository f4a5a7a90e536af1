"""Run folders -> a static, self-contained leaderboard site (index.html, runs/<slug>.html, static/).

Every run folder under RESULTS_DIR (any depth) is read with `load_run`, so a broken one stops the
build with one line naming it. Runs are grouped into one table per (dataset name, track). For every
run of a table as a possible baseline, the comparison engine (gcl_eval.report.engine) computes the
relative change of every other run and a paired test on the per-query scores, Holm-corrected across
the cells of that table; runs it finds incomparable are marked, not refused. The page's baseline
selector only switches between these precomputed variants, so no statistics run in the browser.
A run that carries published numbers (a released preset on its dataset, gcl_eval.report.reported)
gets a row of them in the table's footer, marked as reported: never sorted, compared or tested.
The site is written to a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from gcl_eval import __version__
from gcl_eval.experiments.preset import TRACKS
from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.stats import TEST_NAMES
from gcl_eval.protocol.results import RunResult, display_label, load_run
from gcl_eval.report import engine
from gcl_eval.report.engine import CompareOptions, Side, change_text
from gcl_eval.report.reported import REPORTED_MARK, reported_of
from gcl_eval.util.atomic import atomic_folder
from gcl_eval.util.errors import GclError
from leaderboard.svg import Series, line_plot

HERE = Path(__file__).resolve().parent
TRACK_TITLES = {"text": "Text", "image": "Image", "multi": "Multi-field", "unknown": "Unknown track"}
MARKER = "site.json"  # written into every site; an existing --out folder is replaced only if it has one


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
    side: Side = field(init=False)  # the run in the comparison engine, labelled with its folder

    def __post_init__(self):
        self.side = Side(self.rel, (self.run,))

    @property
    def per_query(self) -> dict[str, pd.DataFrame]:
        """split -> per-query scores indexed by qid (sorted)."""
        return {split: self.side.scores(split) for split in self.run.splits}


@dataclass
class Column:
    split: str
    measure: str

    @property
    def key(self) -> str:
        return f"{self.split} {self.measure}"


@dataclass(frozen=True)
class ReportedRow:
    """Numbers published for a run's model, shown under the table: per column the value or None."""

    label: str
    source: str
    values: list[float | None]


@dataclass
class Table:
    id: str
    dataset: str
    track: str
    columns: list[Column]
    rows: list[Entry]
    baseline: str  # slug of the initially selected baseline, "" for none
    variants: dict[str, dict[str, list[list]]]  # baseline slug -> run slug -> per column [text, cls, title, rel, p_adj]
    reported: list[ReportedRow] = field(default_factory=list)  # published numbers of the table's runs

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
    options = CompareOptions(test=test, alpha=alpha, incomparable="mark")
    if baseline is not None and not any(_matches(e, baseline) for e in entries):
        raise GclError(f"baseline {baseline!r} matches no run (give a preset name or a run folder)")
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        groups.setdefault((str(entry.run.dataset.get("name", "unnamed")), entry.track), []).append(entry)
    order = {t: i for i, t in enumerate((*TRACKS, "unknown"))}
    tables = []
    for i, ((dataset, track), rows) in enumerate(sorted(groups.items(), key=lambda g: (g[0][0], order[g[0][1]]))):
        splits = engine.table_splits([e.side for e in rows])
        columns = [Column(s, m) for s in splits for m in PAPER_MEASURES]
        rows = sorted(rows, key=lambda e: (-_value(e, columns[0]) if _has(e, columns[0]) else math.inf, e.label))
        chosen = [e for e in rows if baseline is not None and _matches(e, baseline)]
        if len(chosen) > 1:
            raise GclError(f"baseline {baseline!r} matches {len(chosen)} runs of dataset {dataset} track {track} "
                           f"({', '.join(e.rel for e in chosen)}); give a run folder instead")
        variants = {base.slug: _variant(rows, base, columns, options) for base in rows}
        tables.append(Table(id=f"t{i}", dataset=dataset, track=track, columns=columns, rows=rows,
                            baseline=chosen[0].slug if chosen else "", variants=variants,
                            reported=reported_rows(rows, columns)))
    return tables


def reported_rows(rows: list[Entry], columns: list[Column]) -> list[ReportedRow]:
    """A footer row per run that carries published numbers for some of the table's columns."""
    out = []
    for entry in rows:
        reported = reported_of(entry.run.model)
        values = [reported.value(c.split, c.measure) for c in columns] if reported else []
        if any(v is not None for v in values):
            out.append(ReportedRow(entry.label + REPORTED_MARK, reported.source, values))
    return out


def _has(entry: Entry, column: Column) -> bool:
    return entry.side.has(column.split, column.measure)


def _value(entry: Entry, column: Column) -> float:
    return float(entry.run.splits[column.split]["metrics"][column.measure])


def _variant(rows: list[Entry], base: Entry, columns: list[Column], options: CompareOptions) -> dict:
    """The cells of every row against one baseline: [text, css class, tooltip, rel %, Holm p]."""
    cells = {base.slug: [["baseline", "base", f"{base.label} is the baseline of this table", None, None]
                         for _ in columns]}
    others = [e for e in rows if e is not base]
    if not others:
        return cells
    splits = list(dict.fromkeys(c.split for c in columns))
    comparison = engine.compare(base.side, [e.side for e in others], measures=PAPER_MEASURES, splits=splits,
                                options=options)
    for entry in others:
        cells[entry.slug] = [_cell(cell, base, column, options)
                             for cell, column in zip(comparison.cells_of(entry.rel), columns)]
    return {entry.slug: cells[entry.slug] for entry in rows}


def _cell(cell: engine.Cell, base: Entry, column: Column, options: CompareOptions) -> list:
    """One cell of a variant: [text, css class, tooltip, rel % rounded, Holm p]."""
    if cell.value is None or cell.baseline_value is None:
        return ["", "", "", None, None]
    if cell.incomparable:
        return ["n/c", "nc", f"not comparable: {cell.incomparable}", None, None]
    significant = cell.significant
    p_text = "undefined" if cell.p is None else f"p = {cell.p:.3g}, Holm-adjusted p = {cell.p_holm:.3g}"
    test_text = (f"{TEST_NAMES[options.test]} on {cell.n_pairs} queries: {p_text} "
                 f"({'significant' if significant else 'not significant'} at α = {options.alpha:g})")
    text = change_text(cell.rel_change) + ("*" if significant else "")
    if cell.rel_change is None:
        return [text, "na", f"{base.label} scores 0 on {column.key}: no relative change; {test_text}", None,
                cell.p_holm]
    direction = "up" if cell.delta > 0 else "down" if cell.delta < 0 else "flat"
    css = f"{direction} sig" if significant else direction
    return [text, css, f"{change_text(cell.rel_change)} vs {base.label}; {test_text}", round(cell.rel_change, 4),
            cell.p_holm]


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
    common = {"version": __version__, "test_name": TEST_NAMES[test], "alpha": alpha, "n_runs": len(entries)}
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
                            "baseline": t.baseline, "reported": [r.label for r in t.reported]} for t in tables]}
    (site / MARKER).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the whole build

def build_site(results_dir: Path | str, out: Path | str, *, baseline: str | None = None, test: str = "t",
               alpha: float = 0.05) -> SiteSummary:
    """Collect, compare and render; replace `out` only once the new site is complete."""
    results_dir, out = Path(results_dir), Path(out)
    CompareOptions(test=test, alpha=alpha)  # bad options fail before anything is read
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
