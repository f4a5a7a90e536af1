"""`gcl-eval gate --baseline RUN --candidate RUN`: a CI regression gate (exit 0 pass, 1 regression, 2 bad input)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gcl_eval.commands.compare import split_list
from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.stats import TESTS


@click.command("gate")
@click.option("--baseline", required=True, type=click.Path(path_type=Path), help="The reference run folder.")
@click.option("--candidate", required=True, type=click.Path(path_type=Path), help="The run folder under test.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Largest allowed absolute drop of a cell's mean.")
@click.option("--measures", "-m", "measures", multiple=True, metavar="M[,M...]",
              help=f"Measures to gate, repeatable or comma-separated [default: {', '.join(PAPER_MEASURES)}].")
@click.option("--splits", "-s", "splits", multiple=True, metavar="S[,S...]",
              help="Splits to gate, repeatable or comma-separated [default: all of the baseline's].")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Significance level for a drop, Holm-adjusted over the gated cells.")
@click.option("--test", type=click.Choice(TESTS), default="t", show_default=True,
              help="Paired test on per-query scores: t-test or sign-flip randomisation (10,000 resamples, seed 0).")
def gate(baseline: Path, candidate: Path, max_drop: float, measures: tuple[str, ...], splits: tuple[str, ...],
         alpha: float, test: str) -> None:
    """Fail (exit 1) when the candidate run regresses against the baseline run.

    A split x measure cell regresses when its mean drops by more than --max-drop, or drops
    significantly at --alpha (paired test on per-query scores, Holm-adjusted over the gated cells).
    Prints a markdown summary, and appends it to $GITHUB_STEP_SUMMARY when that is set. Exit codes:
    0 pass, 1 regression, 2 bad input (missing or incomparable runs, unknown measure or split).
    """
    from gcl_eval.util.errors import GclError
    from gcl_eval.report.gate import gate as run_gate
    from gcl_eval.protocol.results import load_run

    report = run_gate(load_run(baseline), load_run(candidate), max_drop=max_drop,
                      measures=split_list(measures) or PAPER_MEASURES, splits=split_list(splits) or None,
                      alpha=alpha, test=test, baseline_label=str(baseline), candidate_label=str(candidate))
    summary = report.markdown()
    click.echo(summary, nl=False)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        try:
            with open(summary_file, "a", encoding="utf-8") as handle:
                handle.write(summary + "\n")
        except OSError as err:
            raise GclError(f"cannot append to GITHUB_STEP_SUMMARY {summary_file}: {err.strerror or err}") from None
    if not report.passed:
        sys.exit(1)  # not ctx.exit: cli.main runs click in non-standalone mode, which returns Exit codes
