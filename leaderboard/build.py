"""Run folders -> a static, self-contained leaderboard site (index.html, runs/<slug>.html, static/).

The build reads every run folder (leaderboard.runs), puts the seeds of each model together,
makes one ranked table per (dataset, track) with every baseline's comparison precomputed by the
comparison engine (leaderboard.tables), and renders the pages (leaderboard.pages) into a temporary
sibling folder that is renamed into place once complete. The same run folders give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gcl_eval.report.engine import CompareOptions
from gcl_eval.util.atomic import atomic_folder
from gcl_eval.util.errors import GclError
from leaderboard.pages import MARKER, render_site
from leaderboard.runs import Entry, Model, collect_runs, group_models
from leaderboard.tables import Column, Table, build_tables

__all__ = ["Column", "Entry", "Model", "SiteSummary", "Table", "build_site", "build_tables", "collect_runs",
           "group_models"]


@dataclass(frozen=True)
class SiteSummary:
    out: Path
    runs: int
    models: int
    tables: int


def build_site(results_dir: Path | str, out: Path | str, *, baseline: str | Sequence[str] | None = None,
               test: str = "t", alpha: float = 0.05) -> SiteSummary:
    """Collect, group, compare and render; replace `out` only once the new site is complete."""
    results_dir, out = Path(results_dir), Path(out)
    CompareOptions(test=test, alpha=alpha)  # bad options fail before anything is read
    _check_out(results_dir, out)
    entries = collect_runs(results_dir)
    models = group_models(entries)
    tables = build_tables(models, baseline, test, alpha)
    with atomic_folder(out) as tmp:
        render_site(tables, models, tmp, test=test, alpha=alpha)
    return SiteSummary(out=out, runs=len(entries), models=len(models), tables=len(tables))


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
