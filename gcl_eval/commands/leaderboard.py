"""`gcl-eval leaderboard build RESULTS_DIR --out SITE_DIR`: run folders -> a static leaderboard site."""

from __future__ import annotations

from pathlib import Path

import click

from gcl_eval.measures.stats import TESTS


@click.group("leaderboard")
def leaderboard() -> None:
    """Build the static HTML leaderboard from run folders."""


@leaderboard.command("build")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Site folder to write (replaced as a whole once the new site is complete).")
@click.option("--baseline", "baseline", multiple=True, metavar="MODEL_OR_FOLDER",
              help="Model selected as the baseline of every table it belongs to: a model label (a suite "
                   "label), a run's label (\"tiny-clip seed 0\"), a preset name, or a folder (path, or "
                   "relative to RESULTS_DIR). Repeat it: each table starts with the first that names one "
                   "of its models. The page can switch to any other model.")
@click.option("--test", type=click.Choice(TESTS), default="t", show_default=True,
              help="Paired significance test on the per-query scores (randomisation: 10,000 sign flips, "
                   "seed 0; slower).")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="Significance level after Holm correction across the cells of a row (one model "
                   "against the baseline).")
def build(results_dir: Path, out: Path, baseline: tuple[str, ...], test: str, alpha: float) -> None:
    """Collect every run folder under RESULTS_DIR (any depth) and write a self-contained site to --out.

    One table per dataset and track with a row per model (its seeds aggregated: mean ± std), ranked by
    in_domain nDCG@10, per-split columns (nDCG@10, ERR, RBP(p=0.9)), an overview chart, relative change
    and significance against a baseline, and a page per model with its seeds, provenance and SVG plots.
    The site needs no network: open SITE_DIR/index.html in a browser.
    """
    from leaderboard.build import build_site

    summary = build_site(results_dir, out, baseline=list(baseline), test=test, alpha=alpha)
    click.echo(f"wrote {summary.out / 'index.html'}: {summary.runs} runs, {summary.models} models in "
               f"{summary.tables} tables")
