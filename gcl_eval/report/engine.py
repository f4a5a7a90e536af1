"""The comparison engine: runs against a baseline, computed once for every report.

`compare` decides whether runs are comparable, pairs their per-query scores by (split, qid), runs
the paired test of gcl_eval.measures.stats on every cell, corrects the p-values of the whole
comparison together with Holm's method, and returns a `Comparison` (plain dataclasses). The compare
tables, the CI gate, the suite summaries and the leaderboard only render it.

- Comparable: the same dataset (content fingerprint) and the same protocol entries
  COMPARED_PROTOCOL_KEYS; otherwise the runs rank other queries or score them differently. What
  happens to an incomparable run is the caller's choice (`CompareOptions.incomparable`): refuse
  (IncomparableRuns), force (pair on the shared queries and say so in `notes`) or mark (the cells
  carry the reason and are not tested; the leaderboard shows them as not comparable).
- A side of a comparison is a labelled run or the seeds of one run (`Side`): its value is the mean
  of the seeds' reported means, its per-query scores the seeds' scores averaged query by query.
- Relative change: `rel_change = 100 * (value - baseline) / baseline` percent and `ratio = value /
  baseline`. A baseline of 0 has no relative change: both are None (JSON null, shown as "n/a"), and
  the cell is still tested.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Sequence

import numpy as np
import pandas as pd

from gcl_eval.data.dataset import SPLITS
from gcl_eval.measures.stats import TEST_NAMES, TESTS, holm, paired_test
from gcl_eval.protocol.results import RunResult
from gcl_eval.util.errors import GclError

COMPARED_PROTOCOL_KEYS = ("top_k", "queries_per_split", "sampling", "seed", "metric_profile", "grades", "ties")
"""Protocol entries that must agree for numbers to be comparable (measures and splits may differ)."""

EARLIER_PROTOCOL = {"grades": "integer-preserving", "ties": "score desc, corpus order"}
"""What a missing key means: the rule runs used before they recorded it. Their grades kept integer scores
as they were (the reference arithmetic moves some down by one), and their ties kept corpus order."""

INCOMPARABLE_POLICIES = ("refuse", "force", "mark")
SIGNIFICANT_MARK = "\u2020"  # dagger, the compare table's mark of a significant cell


class IncomparableRuns(GclError):
    """Runs of other data or another protocol (or other query sets); reason is the message without the hint."""

    def __init__(self, reason: str, hint: str):
        super().__init__(f"{reason} ({hint})")
        self.reason = reason


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def relative_change(value: float, baseline: float) -> float | None:
    """100 * (value - baseline) / baseline percent; None for a baseline of 0 (no relative change exists)."""
    return 100.0 * (value - baseline) / baseline if baseline != 0 else None


def ratio(value: float, baseline: float) -> float | None:
    """value / baseline; None for a baseline of 0, like relative_change."""
    return value / baseline if baseline != 0 else None


UNDEFINED_CHANGE = "n/a"
"""How every report shows the relative change (or ratio) against a baseline of 0."""


def change_text(rel_change: float | None) -> str:
    """'+12.3%', or 'n/a' when the baseline is 0."""
    return UNDEFINED_CHANGE if rel_change is None else f"{rel_change:+.1f}%"


def ratio_text(value: float | None, suffix: str = "x") -> str:
    """'1.23x', or 'n/a' when the baseline is 0."""
    return UNDEFINED_CHANGE if value is None else f"{value:.2f}{suffix}"


@dataclass(frozen=True)
class CompareOptions:
    """How to test: the paired test, its level after Holm, what to do with incomparable runs, and the
    randomisation test's resamples and seed."""

    test: str = "t"
    alpha: float = 0.05
    incomparable: str = "refuse"  # refuse | force | mark, see the module docstring
    n_resamples: int = 10_000
    seed: int = 0

    def __post_init__(self):
        if self.test not in TESTS:
            raise GclError(f"unknown test {self.test!r}; known: {', '.join(TESTS)}")
        if not 0.0 < self.alpha < 1.0:
            raise GclError(f"alpha must be between 0 and 1 (got {self.alpha})")
        if self.incomparable not in INCOMPARABLE_POLICIES:
            raise ValueError(f"incomparable must be one of {', '.join(INCOMPARABLE_POLICIES)}")
        whole = isinstance(self.n_resamples, (int, np.integer)) and not isinstance(self.n_resamples, bool)
        if not whole or self.n_resamples < 1:
            raise GclError(f"n_resamples must be a positive integer (got {self.n_resamples!r})")


@dataclass(eq=False)
class Side:
    """One side of a comparison: a label and one run, or the runs of several seeds of one model."""

    label: str
    runs: tuple[RunResult, ...]
    _scores: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.runs = tuple(self.runs)
        if not self.runs:
            raise GclError(f"{self.label}: no runs")

    @property
    def reference(self) -> RunResult:
        """The run whose dataset and protocol stand for the side (the seeds share them)."""
        return self.runs[0]

    def has(self, split: str, measure: str) -> bool:
        return all(measure in run.splits.get(split, {}).get("metrics", {}) for run in self.runs)

    def values(self, split: str, measure: str) -> list[float]:
        """The reported mean of every seed."""
        return [float(run.metric(split, measure)) for run in self.runs]

    def mean(self, split: str, measure: str) -> float:
        return float(np.mean(self.values(split, measure)))

    def scores(self, split: str) -> pd.DataFrame:
        """Per-query scores of a split, a column per measure, indexed by qid (sorted), averaged over the seeds."""
        if split not in self._scores:
            frames = [_query_scores(run, self.label, split) for run in self.runs]
            if any(not frame.index.equals(frames[0].index) for frame in frames[1:]):
                raise GclError(f"split {split}: the seeds of a run were evaluated on different queries; "
                               "re-run the suite with one protocol")
            self._scores[split] = sum(frames) / len(frames)
        return self._scores[split]


def _query_scores(run: RunResult, label: str, split: str) -> pd.DataFrame:
    rows = run.per_query[run.per_query["split"] == split]
    qids = rows["qid"].astype(str)
    if qids.duplicated().any():
        raise GclError(f"{label}: per_query.parquet has duplicate query ids in split {split} "
                       f"(e.g. {qids[qids.duplicated()].iloc[0]!r})")
    scores = rows.drop(columns=["split", "qid"]).select_dtypes("number")
    return scores.set_index(pd.Index(qids, name="qid")).sort_index()


@dataclass(frozen=True)
class Cell:
    """One run's value for a split and measure, and its test against the baseline.

    value is the run's reported mean (result.json; over seeds, their mean); delta, rel_change
    (percent) and ratio compare reported means; p is the raw two-sided p-value of the paired test
    over n_pairs queries, p_holm the Holm-adjusted one over every tested cell of the comparison;
    significant means p_holm <= alpha. baseline_value is set when both sides have the cell;
    incomparable holds the reason when the pair was marked rather than compared. reported marks a
    value published for a model rather than measured (gcl_eval.report.reported): never tested.
    """

    run: str
    split: str
    measure: str
    value: float | None
    is_baseline: bool = False
    baseline_value: float | None = None
    delta: float | None = None
    rel_change: float | None = None
    p: float | None = None
    p_holm: float | None = None
    significant: bool = False
    n_pairs: int | None = None
    incomparable: str | None = None
    reported: bool = False

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline_value is None or self.incomparable:
            return None
        return ratio(self.value, self.baseline_value)

    @property
    def compared(self) -> bool:
        """Whether the cell has a change against the baseline (it may be undefined: a baseline of 0)."""
        return self.delta is not None


CELL_KEYS = tuple(f.name for f in fields(Cell) if f.name != "incomparable")
"""The fields of a cell in compare's JSON and CSV output."""


@dataclass(frozen=True)
class Comparison:
    """The result of `compare`: labels in row order (the baseline first), and a cell per label x split x measure."""

    labels: list[str]
    splits: list[str]
    measures: list[str]
    rows: list[Cell]
    baseline: str | None
    test: str
    alpha: float
    n_tests: int
    notes: list[str]
    runs: list[dict]  # per label: model, dataset, protocol, tool (of the reference run)

    def cell(self, label: str, split: str, measure: str) -> Cell:
        for row in self.rows:
            if row.run == label and row.split == split and row.measure == measure:
                return row
        raise KeyError((label, split, measure))

    def cells_of(self, label: str) -> list[Cell]:
        """A label's cells in column order (split by split, the measures within)."""
        return [row for row in self.rows if row.run == label]

    def legend(self) -> str:
        if self.baseline is None:
            return ""
        return (f"relative change against {self.baseline}; {SIGNIFICANT_MARK} = significant at alpha {self.alpha:g} "
                f"({TEST_NAMES[self.test]} on per-query scores, Holm-adjusted over {plural(self.n_tests, 'test')})")

    def to_json(self) -> dict:
        return {
            "baseline": self.baseline,
            "test": self.test,
            "test_name": TEST_NAMES[self.test],
            "correction": "holm",
            "alpha": self.alpha,
            "n_tests": self.n_tests,
            "splits": list(self.splits),
            "measures": list(self.measures),
            "runs": self.runs,
            "rows": [{k: _finite_or_none(v) for k, v in asdict(row).items() if k in CELL_KEYS} for row in self.rows],
            "notes": list(self.notes),
        }


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------------------
# Checks


def comparability_problem(run: Side, reference: Side) -> str | None:
    """What makes run incomparable with reference (dataset fingerprint, protocol entries), or None."""
    ours, theirs = run.reference, reference.reference
    diffs = []
    if ours.dataset.get("fingerprint") != theirs.dataset.get("fingerprint"):
        diffs.append(f"dataset ({_dataset_id(ours)} vs {_dataset_id(theirs)})")
    for key in COMPARED_PROTOCOL_KEYS:
        mine, other = (side.protocol.get(key, EARLIER_PROTOCOL.get(key)) for side in (ours, theirs))
        if mine != other:
            diffs.append(f"protocol {key} ({mine!r} vs {other!r})")
    return f"{run.label} differs from {reference.label} in {', '.join(diffs)}" if diffs else None


def _dataset_id(run: RunResult) -> str:
    fingerprint = str(run.dataset.get("fingerprint") or "?")
    return f"{run.dataset.get('name') or '?'} fingerprint {fingerprint[:12]}"


def check_measures(sides: Sequence[Side], measures: Sequence[str]) -> None:
    """GclError naming the first side whose runs did not compute every measure."""
    for side in sides:
        for run in side.runs:
            missing = [m for m in measures if m not in run.protocol["measures"]]
            if missing:
                raise GclError(f"{side.label} has no {', '.join(missing)} "
                               f"(its measures: {', '.join(run.protocol['measures'])})")


def table_splits(sides: Sequence[Side], requested: Sequence[str] | None = None) -> list[str]:
    """The requested splits (each held by some run), or every split any run has, in the paper's order."""
    present = {split for side in sides for run in side.runs for split in run.splits}
    if requested is None:
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    columns = list(dict.fromkeys(requested))
    unknown = [s for s in columns if s not in present]
    if unknown:
        raise GclError(f"no run has split(s) {', '.join(unknown)} (present: {', '.join(sorted(present))})")
    return columns


def _check_labels(sides: Sequence[Side]) -> None:
    labels = [side.label for side in sides]
    if len(set(labels)) != len(labels):
        duplicate = next(x for x in labels if labels.count(x) > 1)
        raise GclError(f"two runs have the label {duplicate!r}; labels must be distinct")


# ---------------------------------------------------------------------------------------------------------
# The comparison


def compare(base: Side | None, runs: Sequence[Side], *, measures: Sequence[str], splits: Sequence[str] | None = None,
            options: CompareOptions = CompareOptions()) -> Comparison:
    """Every run against base on every split x measure (splits default: table_splits), Holm over all tests.

    Without a base the cells only carry values. The runs are checked against the base (or the first
    run) with comparability_problem and handled as options.incomparable says.
    """
    runs = list(runs)
    if not runs:
        raise GclError("nothing to compare: give at least one run besides the baseline")
    sides = ([base] if base is not None else []) + runs
    _check_labels(sides)
    measures = list(dict.fromkeys(measures))
    columns = table_splits(sides, splits)
    marked, notes = _apply_comparability(sides, options)
    cells = _CellMaker(base, measures, options, notes)
    rows = [] if base is None else [Cell(base.label, split, measure, _value(base, split, measure), is_baseline=True)
                                    for split in columns for measure in measures]
    for run in runs:
        for split in columns:
            rows += cells.split_cells(run, split, marked.get(run.label))
    rows, n_tests = _holm(rows, options.alpha)
    info = [{"label": side.label, "baseline": base is not None and i == 0, "model": side.reference.model,
             "dataset": side.reference.dataset, "protocol": side.reference.protocol, "tool": side.reference.tool}
            for i, side in enumerate(sides)]
    return Comparison(labels=[side.label for side in sides], splits=columns, measures=measures, rows=rows,
                      baseline=base.label if base is not None else None, test=options.test, alpha=options.alpha,
                      n_tests=n_tests, notes=notes, runs=info)


def _apply_comparability(sides: Sequence[Side], options: CompareOptions) -> tuple[dict[str, str], list[str]]:
    """Check every side against the first: raise, or return (label -> reason for marked runs, forced notes)."""
    problems = {side.label: problem for side in sides[1:]
                if (problem := comparability_problem(side, sides[0])) is not None}
    if not problems:
        return {}, []
    if options.incomparable == "refuse":
        raise IncomparableRuns(f"runs are not comparable: {'; '.join(problems.values())}",
                               "pass --force to compare anyway")
    if options.incomparable == "mark":
        return problems, []
    return {}, [f"forced: {problem}" for problem in problems.values()]


def _value(side: Side, split: str, measure: str) -> float | None:
    return side.mean(split, measure) if side.has(split, measure) else None


@dataclass
class _CellMaker:
    """The cells of each run against one baseline; forced pairings on shared queries are noted in notes."""

    base: Side | None
    measures: list[str]
    options: CompareOptions
    notes: list[str]

    def split_cells(self, run: Side, split: str, marked: str | None) -> list[Cell]:
        """A run's cells of one split: values, and where both sides have a measure its change and test."""
        base = self.base
        both = [m for m in self.measures if base is not None and run.has(split, m) and base.has(split, m)]
        if not both:
            return [Cell(run.label, split, m, _value(run, split, m)) for m in self.measures]
        ours, theirs, mismatch = (None, None, None) if marked else _pair(run, base, split)
        marked = marked or self._query_sets(mismatch)
        cells = []
        for measure in self.measures:
            value = _value(run, split, measure)
            if measure not in both:
                cells.append(Cell(run.label, split, measure, value))
            elif marked:
                cells.append(Cell(run.label, split, measure, value, baseline_value=base.mean(split, measure),
                                  incomparable=marked))
            else:
                cell = Cell(run.label, split, measure, value, baseline_value=base.mean(split, measure))
                cells.append(self._tested(cell, ours[measure].to_numpy(), theirs[measure].to_numpy()))
        return cells

    def _query_sets(self, mismatch: str | None) -> str | None:
        """Different query sets: raise, note the forced pairing (None), or the reason to mark the cells with."""
        if mismatch is None:
            return None
        if self.options.incomparable == "refuse":
            raise IncomparableRuns(mismatch, "pass --force to test on the shared queries")
        if self.options.incomparable == "mark":
            return mismatch
        self.notes.append(f"{mismatch}; tested on the shared queries, values and changes are the runs' own means")
        return None

    def _tested(self, cell: Cell, ours: np.ndarray, theirs: np.ndarray) -> Cell:
        """The cell with its change and the paired test's p-value (None for no pairs or an undefined test)."""
        p = None
        if len(ours) > 0:
            p = paired_test(ours, theirs, self.options.test, n_resamples=self.options.n_resamples,
                            seed=self.options.seed)
            p = None if math.isnan(p) else p
        return replace(cell, delta=cell.value - cell.baseline_value,
                       rel_change=relative_change(cell.value, cell.baseline_value), p=p, n_pairs=len(ours))


def _pair(run: Side, base: Side, split: str) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """Per-query scores of run and base on their shared queries (in qid order), and what differs when the sets do."""
    ours, theirs = run.scores(split), base.scores(split)
    if ours.index.equals(theirs.index):
        return ours, theirs, None
    shared = theirs.index[theirs.index.isin(ours.index)]
    mismatch = (f"{split}: {run.label} and {base.label} have different query sets ({len(ours)} and "
                f"{len(theirs)} queries, {len(shared)} shared)")
    return ours.loc[shared], theirs.loc[shared], mismatch


def _holm(rows: list[Cell], alpha: float) -> tuple[list[Cell], int]:
    """Holm-adjust the p-values of every tested cell together; (cells, number of tests)."""
    tested = [i for i, row in enumerate(rows) if row.p is not None]
    adjusted = holm([rows[i].p for i in tested])
    rows = list(rows)
    for i, p_holm in zip(tested, adjusted):
        rows[i] = replace(rows[i], p_holm=float(p_holm), significant=bool(p_holm <= alpha))
    return rows, len(tested)
