"""Models -> the leaderboard's tables: one per (dataset, track), ranked, with every baseline precomputed.

Rows are models (seeds aggregated, leaderboard.runs) ranked by the table's main measure, nDCG@10
on in_domain (the first split a table has when it has no in_domain). For every row as a possible
baseline, each other row is compared with it by the comparison engine exactly as a suite summary
compares two labels: the seed groups' means, a paired test on the seed-averaged per-query scores,
Holm-corrected over the cells of that pair (split x measure). Pairs the engine finds incomparable
are marked, not refused. The page's baseline selector only switches between these variants.
A model that carries published numbers (a released preset on its dataset, gcl_eval.report.reported)
gets a row of them in the table's footer: never ranked, compared or tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from gcl_eval.experiments.preset import TRACKS
from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.stats import TEST_NAMES
from gcl_eval.report import engine
from gcl_eval.report.engine import CompareOptions, change_text
from gcl_eval.report.reported import REPORTED_MARK, reported_of
from gcl_eval.util.errors import GclError
from leaderboard.runs import Model, dataset_order, dataset_title

MAIN_MEASURE = "nDCG@10"
MAIN_SPLIT = "in_domain"
TRACK_ORDER = (*TRACKS, "unknown")


@dataclass
class Column:
    split: str
    measure: str

    @property
    def key(self) -> str:
        return f"{self.split} {self.measure}"


@dataclass(frozen=True)
class ReportedRow:
    """Numbers published for a model, shown under the table: per column the value or None."""

    label: str
    source: str
    values: list[float | None]


@dataclass
class Table:
    id: str
    dataset: str  # the dataset's title (dataset_title)
    dataset_name: str  # as result.json records it
    track: str
    columns: list[Column]
    main: Column  # what the rows are ranked by
    rows: list[Model]  # best first by main
    ranks: list[int | None]  # per row; ties share a rank, rows without the main measure have none
    baseline: str  # slug of the initially selected baseline, "" for none
    variants: dict[str, dict[str, list[list]]]  # baseline slug -> model slug -> per column [text, cls, title, rel, p]
    reported: list[ReportedRow] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(c.split for c in self.columns))


def build_tables(models: list[Model], baseline: str | Sequence[str] | None = None, test: str = "t",
                 alpha: float = 0.05) -> list[Table]:
    """One table per (dataset, track), in dataset_order then track order, every baseline variant included.

    `baseline`: one or several names (see _baseline_matcher); a table starts with the first that
    names one of its models, or with none.
    """
    options = CompareOptions(test=test, alpha=alpha, incomparable="mark")
    specs = [baseline] if isinstance(baseline, str) else list(baseline or [])
    matchers = [(spec, _baseline_matcher(models, spec)) for spec in specs]
    groups: dict[tuple[str, str], list[Model]] = {}
    for model in models:
        groups.setdefault((model.dataset_name, model.track), []).append(model)
    keys = sorted(groups, key=lambda k: (dataset_order(k[0]), TRACK_ORDER.index(k[1])))
    tables = []
    for i, (dataset, track) in enumerate(keys):
        rows = groups[(dataset, track)]
        splits = engine.table_splits([m.side for m in rows])
        columns = [Column(s, m) for s in splits for m in PAPER_MEASURES]
        main = Column(MAIN_SPLIT if MAIN_SPLIT in splits else splits[0], MAIN_MEASURE)
        rows = sorted(rows, key=lambda m: (-m.mean(main.split, main.measure) if m.has(main.split, main.measure)
                                           else math.inf, m.label, m.rel))
        chosen = next(([m for m in rows if matches(m)] for _, matches in matchers if any(map(matches, rows))), [])
        if len(chosen) > 1:
            spec = next(spec for spec, matches in matchers if matches(chosen[0]))
            raise GclError(f"baseline {spec!r} matches {len(chosen)} models of dataset {dataset} track {track} "
                           f"({', '.join(m.rel for m in chosen)}); give a run folder instead")
        tables.append(Table(id=f"t{i}", dataset=dataset_title(dataset), dataset_name=dataset, track=track,
                            columns=columns, main=main, rows=rows, ranks=_ranks(rows, main),
                            baseline=chosen[0].slug if chosen else "",
                            variants={base.slug: _variant(rows, base, columns, options) for base in rows},
                            reported=reported_rows(rows, columns)))
    return tables


def _baseline_matcher(models: list[Model], spec: str):
    """Which models --baseline names: a model's label, folder or slug, one of its runs' labels
    ("tiny-clip seed 0") or folders, or a path; failing all of these, a preset name."""
    path = Path(spec).resolve() if Path(spec).is_dir() else None

    def named(model: Model) -> bool:
        runs = model.runs
        return (spec in (model.label, model.rel, model.slug)
                or any(spec in (e.label, e.rel) for e in runs)
                or (len(runs) == 1 and spec == runs[0].folder.name)
                or (path is not None and any(path == e.folder.resolve() for e in runs)))

    def preset(model: Model) -> bool:
        return spec == model.reference.model.get("preset")

    for rule in (named, preset):
        if any(rule(m) for m in models):
            return rule
    raise GclError(f"baseline {spec!r} matches no run (give a model label, a preset name or a run folder)")


def _ranks(rows: list[Model], main: Column) -> list[int | None]:
    """Competition ranks by the main measure (1, 2, 2, 4); None for a row without it."""
    values = [m.mean(main.split, main.measure) for m in rows]
    return [None if v is None else 1 + sum(w is not None and w > v for w in values) for v in values]


def reported_rows(rows: list[Model], columns: list[Column]) -> list[ReportedRow]:
    """A footer row per model that carries published numbers for some of the table's columns."""
    out = []
    for model in rows:
        reported = reported_of(model.reference.model)
        values = [reported.value(c.split, c.measure) for c in columns] if reported else []
        if any(v is not None for v in values):
            out.append(ReportedRow(model.label + REPORTED_MARK, reported.source, values))
    return out


def _variant(rows: list[Model], base: Model, columns: list[Column], options: CompareOptions) -> dict:
    """The cells of every row against one baseline, each pair compared on its own (as a suite summary)."""
    cells = {}
    for model in rows:
        if model is base:
            cells[model.slug] = [["baseline", "base", f"{base.label} is the baseline of this table", None, None]
                                 for _ in columns]
            continue
        splits = [s for s in dict.fromkeys(c.split for c in columns)
                  if any(s in run.splits for side in (base.side, model.side) for run in side.runs)]
        comparison = engine.compare(base.side, [model.side], measures=PAPER_MEASURES, splits=splits,
                                    options=options)
        found = {(c.split, c.measure): c for c in comparison.cells_of(model.rel)}
        cells[model.slug] = [_cell(found.get((c.split, c.measure)), base, c, options, comparison.n_tests)
                             for c in columns]
    return cells


def _cell(cell: engine.Cell | None, base: Model, column: Column, options: CompareOptions, n_tests: int) -> list:
    """One cell of a variant: [text, css class, tooltip, rel % rounded, Holm p]."""
    if cell is None or cell.value is None or cell.baseline_value is None:
        return ["", "", "", None, None]
    if cell.incomparable:
        return ["n/c", "nc", f"not comparable: {cell.incomparable}", None, None]
    significant = cell.significant
    p_text = "undefined" if cell.p is None else (f"p = {cell.p:.3g}, Holm-adjusted over this row's "
                                                 f"{n_tests} tests p = {cell.p_holm:.3g}")
    test_text = (f"{TEST_NAMES[options.test]} on {cell.n_pairs} queries (scores averaged over seeds): {p_text} "
                 f"({'significant' if significant else 'not significant'} at α = {options.alpha:g})")
    text = change_text(cell.rel_change) + ("*" if significant else "")
    if cell.rel_change is None:
        return [text, "na", f"{base.label} scores 0 on {column.key}: no relative change; {test_text}", None,
                cell.p_holm]
    direction = "up" if cell.delta > 0 else "down" if cell.delta < 0 else "flat"
    css = f"{direction} sig" if significant else direction
    return [text, css, f"{change_text(cell.rel_change)} vs {base.label}; {test_text}", round(cell.rel_change, 4),
            cell.p_holm]
