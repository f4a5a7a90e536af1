"""`gcl-eval compare RUN_DIR...`: the paper's Table 1 from run folders, with significance against a baseline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.stats import TESTS

FORMAT_NAMES = ("table", "markdown", "csv", "json", "latex")


def split_list(values: tuple[str, ...]) -> list[str]:
    """Repeated options whose values may also be comma-separated lists: -m nDCG@10 -m ERR == -m nDCG@10,ERR."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@click.command("compare")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="Run folder the others are tested against (relative change, paired test, Holm).")
@click.option("--measures", "-m", "measures", multiple=True, metavar="M[,M...]",
              help=f"Measures to show, repeatable or comma-separated [default: {', '.join(PAPER_MEASURES)}].")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), default="table", show_default=True,
              help="table: rich on a terminal, plain text otherwise; csv: a line per cell; json: everything.")
@click.option("--test", type=click.Choice(TESTS), default="t", show_default=True,
              help="Paired test on per-query scores: t-test or sign-flip randomisation (10,000 resamples, seed 0).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Significance level, after Holm's correction over the whole table.")
@click.option("--force", is_flag=True,
              help="Compare runs of different datasets or protocols, pairing on the queries they share.")
def compare(run_dirs: tuple[Path, ...], baseline: Path | None, measures: tuple[str, ...], fmt: str, test: str,
            alpha: float, force: bool) -> None:
    """Tabulate run folders: a row per run, the four splits as column groups.

    With --baseline, each cell shows its relative change and a dagger where the paired test on the
    per-query scores is significant after Holm's correction. Runs of another dataset (fingerprint)
    or protocol (top_k, queries per split, sampling, seed, metric profile) are refused unless --force.
    """
    from gcl_eval.report.compare import FORMATS, compare_runs, rich_table, run_label, run_labels
    from gcl_eval.util.errors import GclError
    from gcl_eval.protocol.results import load_run

    base_key = baseline.resolve() if baseline is not None else None
    paths = list({p.resolve(): p for p in reversed(run_dirs) if p.resolve() != base_key}.values())[::-1]
    if not paths:
        raise GclError("nothing to compare: give one or more RUN_DIRs (besides --baseline)")
    results = [load_run(p) for p in paths]
    base = load_run(baseline) if baseline is not None else None
    labels = run_labels(results, paths)
    base_label = run_label(base, baseline) if base is not None else "baseline"
    if base_label in labels:
        base_label = str(baseline)
    comparison = compare_runs(results, labels, base, split_list(measures) or PAPER_MEASURES, test=test,
                              alpha=alpha, force=force, baseline_label=base_label)
    if fmt == "table" and sys.stdout.isatty():
        from rich.console import Console

        Console().print(rich_table(comparison))
        return
    click.echo(FORMATS[fmt](comparison), nl=False)
