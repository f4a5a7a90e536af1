"""Compare run folders: the paper's Table 1 with relative changes and paired significance tests.

A row per run; column groups in_domain, novel_query, novel_corpus, zero_shot, each with the chosen
measures. With a baseline, every other run's cell gets its relative change and a paired test on the
per-query scores (paired by split and query id), and the p-values of the whole table are corrected
together with Holm's method, because a table of 36 cells at alpha = 0.05 would otherwise show a
"significant" difference by chance most of the time. The statistics are gcl_eval.report.engine's.

Numbers are only comparable on the same dataset (content fingerprint) under the same protocol; other
runs are refused with one line unless `force`. Formatters turn a Comparison into text: plain/rich
table, markdown, csv, json, latex. No CLI code here (gcl_eval/commands/compare.py is the command).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.protocol.results import RunResult, display_label
from gcl_eval.report.engine import (
    COMPARED_PROTOCOL_KEYS,
    SIGNIFICANT_MARK,
    Cell,
    CompareOptions,
    Comparison,
    IncomparableRuns,
    Side,
    change_text,
    check_measures,
    compare,
    plural,
)
from gcl_eval.report.reported import with_reported
from gcl_eval.util.errors import GclError

__all__ = [
    "COMPARED_PROTOCOL_KEYS", "CSV_COLUMNS", "FORMATS", "Comparison", "ComparisonRow", "IncomparableRuns",
    "compare_runs", "format_csv", "format_json", "format_latex", "format_markdown", "format_table", "latex_escape",
    "plural", "rich_table", "run_label", "run_labels",
]

ComparisonRow = Cell
"""One cell of the table (the engine's Cell), by its name in this module."""

SPLIT_TITLES = {"in_domain": "in-domain", "novel_query": "novel query", "novel_corpus": "novel corpus",
                "zero_shot": "zero-shot"}  # the paper's column headings, used by the LaTeX table


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


def compare_runs(runs: Sequence[RunResult], labels: Sequence[str] | None = None, baseline: RunResult | None = None,
                 measures: Sequence[str] | None = PAPER_MEASURES, *, baseline_label: str = "baseline",
                 splits: Sequence[str] | None = None, force: bool = False, reported: bool = True,
                 **settings) -> Comparison:
    """Tabulate runs (rows) by split and measure; with a baseline, test each cell against it.

    settings are CompareOptions fields (test, alpha, n_resamples, seed). Refuses (GclError, one line)
    runs of another dataset or protocol than the first (the baseline when given) unless force, and
    query sets that differ unless force; forced, it pairs on the shared queries and says so in
    `notes`. splits limits the columns (default: every split any run has, in the paper's order).
    reported: add a marked, untested row of the published numbers after each run that carries them
    (gcl_eval.report.reported).
    """
    runs = list(runs)
    labels = [str(x) for x in labels] if labels is not None else [f"run {i + 1}" for i in range(len(runs))]
    if len(labels) != len(runs):
        raise GclError(f"{len(runs)} runs but {len(labels)} labels")
    options = CompareOptions(incomparable="force" if force else "refuse", **settings)
    measures = list(dict.fromkeys(measures or PAPER_MEASURES))
    base = Side(baseline_label, (baseline,)) if baseline is not None else None
    sides = [Side(label, (run,)) for label, run in zip(labels, runs)]
    check_measures(([base] if base else []) + sides, measures)
    comparison = compare(base, sides, measures=measures, splits=splits, options=options)
    if not reported:
        return comparison
    models = {label: run.model for label, run in zip(labels, runs)}
    if baseline is not None:
        models[baseline_label] = baseline.model
    return with_reported(comparison, models)


# ---------------------------------------------------------------------------------------------------------
# Formatters


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _cell_text(row: ComparisonRow) -> str:
    """'0.431', or with a baseline '0.431 +12.3%' ('0.431 n/a' against 0) and a dagger when significant."""
    text = _value(row.value)
    if row.compared:
        text += f" {change_text(row.rel_change)}"
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
               "p", "p_holm", "significant", "n_pairs", "reported")


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
    if row.compared:
        text += r" {\scriptsize (" + change_text(row.rel_change).replace("-", "$-$").replace("%", r"\%") + ")}"
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

