"""`gcl-eval metrics QRELS RUN`: score a TREC run file against TREC qrels."""

from __future__ import annotations

import json
import sys

import click

from gcl_eval.measures import KNOWN_MEASURES, PAPER_MEASURES, parse_measures
from gcl_eval.measures.metrics import PROFILES, MetricReport, evaluate_report
from gcl_eval.measures.trec import read_qrels, read_run

_MEASURE_HELP = (
    "A measure to compute; repeat for more (default: "
    + ", ".join(PAPER_MEASURES)
    + "). Forms: "
    + ", ".join(KNOWN_MEASURES)
    + "."
)


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _as_json(report: MetricReport, qrels_path: str, run_path: str, by_query: bool) -> str:
    doc = {
        "qrels": qrels_path,
        "run": run_path,
        "profile": report.profile,
        "max_grade": report.max_grade,
        "n_queries": report.n_queries,
        "metrics": report.means(),
    }
    if by_query:
        doc["per_query"] = report.by_query()
    return json.dumps(doc, indent=2)


def _rows(report: MetricReport, by_query: bool) -> list[list[str]]:
    """Table body: one row per query (with --by-query) and a final 'all' row of means, as trec_eval does."""
    rows = []
    if by_query:
        for qid, values in report.by_query().items():
            rows.append([qid, *(_fmt(values[name]) for name in report.measures)])
    means = report.means()
    rows.append(["all", *(_fmt(means[name]) for name in report.measures)])
    return rows


def _caption(report: MetricReport) -> str:
    scale = f", max grade {report.max_grade}" if report.max_grade is not None else ""
    return f"profile {report.profile}{scale}, {report.n_queries} queries"


def _print_plain(report: MetricReport, by_query: bool) -> None:
    header = ["query", *report.measures]
    rows = _rows(report, by_query)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    click.echo(_caption(report))
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        click.echo("  ".join(cells).rstrip())


def _print_rich(report: MetricReport, by_query: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("query")
    for name in report.measures:
        table.add_column(name, justify="right")
    rows = _rows(report, by_query)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=by_query and i == len(rows) - 2)
    console = Console()
    console.print(_caption(report), style="bold", highlight=False)
    console.print(table)


@click.command("metrics")
@click.argument("qrels", type=click.Path(dir_okay=False))
@click.argument("run", type=click.Path(dir_okay=False))
@click.option("--measure", "-m", "measures", multiple=True, metavar="M", help=_MEASURE_HELP)
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default="gcl",
    show_default=True,
    help="gcl: the GCL reference evaluation semantics; "
    "standard: trec_eval, Chapelle's ERR, binary RBP (docs/metrics.md).",
)
@click.option(
    "--max-grade",
    type=click.IntRange(min=1),
    default=None,
    help="Standard profile only: the grade scale's maximum for ERR (default: the largest grade in QRELS).",
)
@click.option("--by-query", is_flag=True, help="Also print each query's values.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON only.")
def metrics(
    qrels: str,
    run: str,
    measures: tuple[str, ...],
    profile: str,
    max_grade: int | None,
    by_query: bool,
    as_json: bool,
) -> None:
    """Score the TREC run file RUN (qid Q0 docid rank score tag) against the TREC qrels file QRELS
    (qid 0 docid grade)."""
    parsed = parse_measures(measures or PAPER_MEASURES)  # a bad name fails before the files are read
    report = evaluate_report(read_qrels(qrels), read_run(run), parsed, profile, max_grade=max_grade)
    if as_json:
        click.echo(_as_json(report, qrels, run, by_query))
    elif _stdout_is_terminal():
        _print_rich(report, by_query)
    else:
        _print_plain(report, by_query)
