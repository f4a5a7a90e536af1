"""Compare run folders: the paper's Table 1 with relative changes and paired significance tests.

A row per run; column groups in_domain, novel_query, novel_corpus, zero_shot, each with the chosen
measures. With a baseline, every other run's cell gets its relative change and a paired test on the
per-query scores (paired by split and query id), and the p-values of the whole table are corrected
together with Holm's method, because a table of 36 cells at alpha = 0.05 would otherwise show a
"significant" difference by chance most of the time.

Numbers are only comparable on the same dataset (content fingerprint) under the same protocol; other
runs are refused with one line unless `force`. Formatters turn a Comparison into text: plain/rich
table, markdown, csv, json, latex. No CLI code here (gcl_eval/commands/compare.py is the command).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from gcl_eval.data.dataset import SPLITS
from gcl_eval.util.errors import GclError
from gcl_eval.measures.metrics import DEFAULT_MEASURES
from gcl_eval.protocol.results import RunResult, display_label
from gcl_eval.measures.stats import TEST_NAMES, TESTS, holm, paired_test

COMPARED_PROTOCOL_KEYS = ("top_k", "queries_per_split", "sampling", "seed", "metric_profile")
"""Protocol entries that must agree for numbers to be comparable (measures and splits may differ)."""

SIGNIFICANT_MARK = "\u2020"  # dagger
SPLIT_TITLES = {"in_domain": "in-domain", "novel_query": "novel query", "novel_corpus": "novel corpus",
                "zero_shot": "zero-shot"}  # the paper's column headings, used by the LaTeX table


class IncomparableRuns(GclError):
    """Runs of other data or another protocol (or other query sets); reason is the message without the hint."""

    def __init__(self, reason: str, hint: str):
        super().__init__(f"{reason} ({hint})")
        self.reason = reason


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(frozen=True)
class ComparisonRow:
    """One cell of the table: a run's value for a split and measure, and its test against the baseline.

    value is the run's reported mean (result.json); delta and rel_change (percent) compare reported
    means; p is the raw two-sided p-value of the paired test over n_pairs queries, p_holm the
    Holm-adjusted one over every tested cell of the table; significant means p_holm <= alpha.
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


@dataclass
class Comparison:
    """The result of compare_runs: labels in row order (the baseline first), and one row per cell."""

    labels: list[str]
    splits: list[str]
    measures: list[str]
    rows: list[ComparisonRow]
    baseline: str | None = None
    test: str = "t"
    alpha: float = 0.05
    n_tests: int = 0
    notes: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # per label: model, dataset, protocol, tool

    def cell(self, label: str, split: str, measure: str) -> ComparisonRow:
        for row in self.rows:
            if row.run == label and row.split == split and row.measure == measure:
                return row
        raise KeyError((label, split, measure))

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
            "rows": [{k: _finite_or_none(v) for k, v in asdict(row).items()} for row in self.rows],
            "notes": list(self.notes),
        }


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------------------
# Building the comparison


def run_label(result: RunResult, path: str | Path | None = None) -> str:
    """A row label: the suite label (and seed) or the model preset when the run has one, else the folder's name."""
    label = display_label(result.model)
    if label:
        return label
    if path is not None:
        return Path(path).resolve().name or str(path)
    return "run"


def run_labels(results: Sequence[RunResult], paths: Sequence[str | Path]) -> list[str]:
    """Labels for several runs; a label two runs share becomes the path as given, so rows stay distinct."""
    labels = [run_label(r, p) for r, p in zip(results, paths)]
    return [str(p) if labels.count(label) > 1 else label for label, p in zip(labels, paths)]


def comparability_problems(named: Sequence[tuple[str, RunResult]]) -> list[str]:
    """What makes each run incomparable with the first one: dataset fingerprint, protocol entries."""
    if not named:
        return []
    ref_label, ref = named[0]
    problems = []
    for label, run in named[1:]:
        diffs = []
        ref_fp, fp = ref.dataset.get("fingerprint"), run.dataset.get("fingerprint")
        if fp != ref_fp:
            diffs.append(f"dataset ({_dataset_id(run)} vs {_dataset_id(ref)})")
        for key in COMPARED_PROTOCOL_KEYS:
            if run.protocol.get(key) != ref.protocol.get(key):
                diffs.append(f"protocol {key} ({run.protocol.get(key)!r} vs {ref.protocol.get(key)!r})")
        if diffs:
            problems.append(f"{label} differs from {ref_label} in {', '.join(diffs)}")
    return problems


def _dataset_id(run: RunResult) -> str:
    fingerprint = str(run.dataset.get("fingerprint") or "?")
    return f"{run.dataset.get('name') or '?'} fingerprint {fingerprint[:12]}"


def _split_scores(run: RunResult, label: str, split: str, measures: Sequence[str]):
    frame = run.per_query[run.per_query["split"] == split]
    qids = frame["qid"].astype(str)
    if qids.duplicated().any():
        raise GclError(f"{label}: per_query.parquet has duplicate query ids in split {split} "
                       f"(e.g. {qids[qids.duplicated()].iloc[0]!r})")
    return frame.assign(qid=qids).set_index("qid")[list(measures)]


def compare_runs(runs: Sequence[RunResult], labels: Sequence[str] | None = None, baseline: RunResult | None = None,
                 measures: Sequence[str] | None = DEFAULT_MEASURES, test: str = "t", alpha: float = 0.05,
                 force: bool = False, *, baseline_label: str = "baseline", splits: Sequence[str] | None = None,
                 n_resamples: int = 10000, seed: int = 0) -> Comparison:
    """Tabulate runs (rows) by split and measure; with a baseline, test each cell against it.

    Refuses (GclError, one line) runs of another dataset or protocol than the first (the baseline
    when given) unless force, and query sets that differ unless force; forced, it pairs on the
    shared queries and says so in `notes`. splits limits the columns (default: every split any run
    has, in the paper's order). randomization tests use n_resamples sign flips seeded with seed.
    """
    runs = list(runs)
    labels = [str(x) for x in labels] if labels is not None else [f"run {i + 1}" for i in range(len(runs))]
    if len(labels) != len(runs):
        raise GclError(f"{len(runs)} runs but {len(labels)} labels")
    if not runs:
        raise GclError("nothing to compare: give at least one run besides the baseline")
    if test not in TESTS:
        raise GclError(f"unknown test {test!r}; known: {', '.join(TESTS)}")
    if not 0.0 < alpha < 1.0:
        raise GclError(f"alpha must be between 0 and 1 (got {alpha})")
    measures = list(dict.fromkeys(measures or DEFAULT_MEASURES))
    named = ([(baseline_label, baseline)] if baseline is not None else []) + list(zip(labels, runs))
    all_labels = [label for label, _ in named]
    if len(set(all_labels)) != len(all_labels):
        duplicate = next(x for x in all_labels if all_labels.count(x) > 1)
        raise GclError(f"two runs have the label {duplicate!r}; labels must be distinct")

    problems = comparability_problems(named)
    if problems and not force:
        raise IncomparableRuns(f"runs are not comparable: {'; '.join(problems)}", "pass --force to compare anyway")
    notes = [f"forced: {p}" for p in problems]

    for label, run in named:
        missing = [m for m in measures if m not in run.protocol["measures"]]
        if missing:
            raise GclError(f"{label} has no {', '.join(missing)} (its measures: {', '.join(run.protocol['measures'])})")
    present = {s for _, run in named for s in run.splits}
    if splits is None:
        columns = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    else:
        columns = list(dict.fromkeys(splits))
        unknown = [s for s in columns if s not in present]
        if unknown:
            raise GclError(f"no run has split(s) {', '.join(unknown)} (present: {', '.join(sorted(present))})")

    rows: list[ComparisonRow] = []
    if baseline is not None:
        for split in columns:
            for measure in measures:
                value = baseline.metric(split, measure) if split in baseline.splits else None
                rows.append(ComparisonRow(baseline_label, split, measure, value, is_baseline=True))
    tested: list[int] = []  # indices into rows of cells with a p-value
    for label, run in zip(labels, runs):
        for split in columns:
            paired = None
            if baseline is not None and split in run.splits and split in baseline.splits:
                paired = _pair(run, label, baseline, baseline_label, split, measures, force, notes)
            for measure in measures:
                value = run.metric(split, measure) if split in run.splits else None
                if paired is None:
                    rows.append(ComparisonRow(label, split, measure, value))
                    continue
                base = baseline.metric(split, measure)
                delta = value - base
                rel = 100.0 * delta / base if base != 0 else None
                ours, theirs = paired
                p = None
                if len(ours) > 0:
                    p = paired_test(ours[measure].to_numpy(), theirs[measure].to_numpy(), test,
                                    n_resamples=n_resamples, seed=seed)
                    p = None if math.isnan(p) else p
                if p is not None:
                    tested.append(len(rows))
                rows.append(ComparisonRow(label, split, measure, value, baseline_value=base, delta=delta,
                                          rel_change=rel, p=p, n_pairs=len(ours)))
    adjusted = holm([rows[i].p for i in tested])
    for i, p_holm in zip(tested, adjusted):
        rows[i] = replace(rows[i], p_holm=float(p_holm), significant=bool(p_holm <= alpha))

    info = [{"label": label, "baseline": baseline is not None and i == 0, "model": run.model,
             "dataset": run.dataset, "protocol": run.protocol, "tool": run.tool}
            for i, (label, run) in enumerate(named)]
    return Comparison(labels=all_labels, splits=columns, measures=measures, rows=rows,
                      baseline=baseline_label if baseline is not None else None, test=test, alpha=alpha,
                      n_tests=len(tested), notes=notes, runs=info)


def _pair(run, label, baseline, baseline_label, split, measures, force, notes):
    """Per-query scores of run and baseline on their shared queries of a split, in the baseline's order."""
    ours = _split_scores(run, label, split, measures)
    theirs = _split_scores(baseline, baseline_label, split, measures)
    shared = theirs.index[theirs.index.isin(ours.index)]
    if len(shared) != len(ours) or len(shared) != len(theirs):
        message = (f"{split}: {label} and {baseline_label} have different query sets ({len(ours)} and "
                   f"{len(theirs)} queries, {len(shared)} shared)")
        if not force:
            raise IncomparableRuns(message, "pass --force to test on the shared queries")
        notes.append(f"{message}; tested on the shared queries, values and changes are the runs' own means")
    return ours.loc[shared], theirs.loc[shared]


# ---------------------------------------------------------------------------------------------------------
# Formatters


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _change(row: ComparisonRow) -> str:
    return "" if row.rel_change is None else f"{row.rel_change:+.1f}%"


def _cell_text(row: ComparisonRow) -> str:
    """'0.431', or with a baseline '0.431 +12.3%' and a dagger when significant."""
    text = _value(row.value)
    if row.value is not None and row.rel_change is not None:
        text += f" {_change(row)}"
    return text + (SIGNIFICANT_MARK if row.significant else "")


def _row_label(comparison: Comparison, label: str) -> str:
    return f"{label} (baseline)" if label == comparison.baseline else label


def _grid(comparison: Comparison) -> list[tuple[str, list[ComparisonRow]]]:
    """(label, cells in column order) per table row."""
    by_key = {(r.run, r.split, r.measure): r for r in comparison.rows}
    return [(label, [by_key[(label, s, m)] for s in comparison.splits for m in comparison.measures])
            for label in comparison.labels]


def _footer(comparison: Comparison) -> list[str]:
    lines = [comparison.legend()] if comparison.baseline else []
    return lines + [f"note: {n}" for n in comparison.notes]


def format_table(comparison: Comparison) -> str:
    """Plain text, Table 1 layout: a header line of split groups over a line of measure names."""
    grid = _grid(comparison)
    labels = [_row_label(comparison, label) for label, _ in grid]
    texts = [[_cell_text(c) for c in cells] for _, cells in grid]
    n_measures = len(comparison.measures)
    widths = [max([len(m)] + [len(t[j]) for t in texts])
              for j, m in enumerate(comparison.measures * len(comparison.splits))]
    for g, split in enumerate(comparison.splits):  # a group is at least as wide as its title
        span = slice(g * n_measures, (g + 1) * n_measures)
        short = len(split) - (sum(widths[span]) + 2 * (n_measures - 1))
        if short > 0:
            widths[span.stop - 1] += short
    first = max([len("run")] + [len(x) for x in labels])
    group_widths = [sum(widths[g * n_measures:(g + 1) * n_measures]) + 2 * (n_measures - 1)
                    for g in range(len(comparison.splits))]
    lines = [
        " " * first + "".join(f"   {s.ljust(w)}" for s, w in zip(comparison.splits, group_widths)),
        " " * first + "".join(f"   {'-' * w}" for w in group_widths),
        "run".ljust(first) + _join_groups([m.rjust(w) for m, w in
                                           zip(comparison.measures * len(comparison.splits), widths)], n_measures),
    ]
    for label, row in zip(labels, texts):
        lines.append(label.ljust(first) + _join_groups([t.rjust(w) for t, w in zip(row, widths)], n_measures))
    lines += _footer(comparison)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _join_groups(cells: list[str], n_measures: int) -> str:
    groups = [cells[i:i + n_measures] for i in range(0, len(cells), n_measures)]
    return "".join("   " + "  ".join(g) for g in groups)


def rich_table(comparison: Comparison):
    """The same table as a rich renderable: significant gains green, significant losses red."""
    from rich.table import Table
    from rich.text import Text

    table = Table(caption="\n".join(_footer(comparison)) or None, caption_justify="left")
    table.add_column("run", justify="left")
    for split in comparison.splits:
        for j, measure in enumerate(comparison.measures):
            table.add_column(f"{split if j == 0 else ''}\n{measure}", justify="right")
    for label, cells in _grid(comparison):
        styled = []
        for cell in cells:
            style = ""
            if cell.significant:
                style = "green" if (cell.delta or 0) > 0 else "red"
            styled.append(Text(_cell_text(cell), style=style))
        table.add_row(Text(_row_label(comparison, label), style="bold" if label == comparison.baseline else ""),
                      *styled)
    return table


_MD_SPECIAL = re.compile(r"([\\`*_|<>\[\]])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def format_markdown(comparison: Comparison) -> str:
    """A GitHub-flavoured markdown table; header cells are 'split measure'."""
    header = ["run"] + [f"{s} {m}" for s in comparison.splits for m in comparison.measures]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for label, cells in _grid(comparison):
        name = _md_escape(_row_label(comparison, label))
        if label == comparison.baseline:
            name = f"**{name}**"
        lines.append("| " + " | ".join([name] + [_cell_text(c) for c in cells]) + " |")
    footer = _footer(comparison)
    if footer:
        lines.append("")
        lines += [_md_escape(line) for line in footer]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("run", "is_baseline", "split", "measure", "value", "baseline_value", "delta", "rel_change",
               "p", "p_holm", "significant", "n_pairs")


def format_csv(comparison: Comparison) -> str:
    """Long form, a line per (run, split, measure) cell, full precision; empty where not applicable."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in comparison.rows:
        values = asdict(row)
        writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
    return out.getvalue()


def format_json(comparison: Comparison) -> str:
    return json.dumps(comparison.to_json(), indent=2) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (one pass, so the replacements are not escaped again)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], text)


def _latex_cell(row: ComparisonRow) -> str:
    text = _value(row.value)
    if row.significant:
        text += r"$^{\dagger}$"
    if row.value is not None and row.rel_change is not None:
        text += r" {\scriptsize (" + _change(row).replace("-", "$-$").replace("%", r"\%") + ")}"
    return text


def format_latex(comparison: Comparison) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); the legend and notes as % comments above it."""
    n = len(comparison.measures)
    lines = [f"% {latex_escape(line)}" for line in _footer(comparison)]
    lines += [r"\begin{tabular}{l" + "r" * (n * len(comparison.splits)) + "}", r"\toprule"]
    groups = [rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(SPLIT_TITLES.get(s, s))}}}" for s in comparison.splits]
    lines.append(" & " + " & ".join(groups) + r" \\")
    lines.append("".join(rf"\cmidrule(lr){{{2 + g * n}-{1 + (g + 1) * n}}}" for g in range(len(comparison.splits))))
    lines.append("Run & " + " & ".join(latex_escape(m) for m in comparison.measures * len(comparison.splits)) + r" \\")
    lines.append(r"\midrule")
    for label, cells in _grid(comparison):
        name = latex_escape(_row_label(comparison, label))
        lines.append(" & ".join([name] + [_latex_cell(c) for c in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


FORMATS = {"table": format_table, "markdown": format_markdown, "csv": format_csv, "json": format_json,
           "latex": format_latex}
"""format name -> Comparison -> str. 'table' is the plain-text table; rich_table renders it for a terminal."""

