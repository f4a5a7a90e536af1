"""The CI regression gate: does a candidate run fall behind a baseline run?

A selected (split, measure) cell fails when the candidate's mean drops by more than max_drop
(absolute), or when it drops and the paired test on the per-query scores is significant at alpha
after Holm's correction over the selected cells. The first rule catches large drops on small query
samples, the second small but consistent drops on large ones. Built on the comparison engine, so
the same dataset and protocol rules apply (a mismatch is bad input, not a regression).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.stats import TEST_NAMES
from gcl_eval.protocol.results import RunResult
from gcl_eval.report.engine import Cell, CompareOptions, IncomparableRuns, Side, check_measures, compare, plural
from gcl_eval.util.errors import GclError

_TOLERANCE = 1e-12  # a drop equal to max_drop (up to rounding) passes


@dataclass(frozen=True)
class GateCell:
    """One (split, measure): the two means, delta = candidate - baseline, the test, and the verdict."""

    split: str
    measure: str
    baseline: float
    candidate: float
    delta: float
    p: float | None
    p_holm: float | None
    n_pairs: int
    too_large: bool  # dropped by more than max_drop
    significant_drop: bool  # dropped, and p_holm <= alpha

    @property
    def failed(self) -> bool:
        return self.too_large or self.significant_drop

    @property
    def status(self) -> str:
        """Either ok, or fail: followed by the rules the cell broke (drop > max_drop, significant drop)."""
        reasons = [text for broke, text in ((self.too_large, "drop > max_drop"),
                                             (self.significant_drop, "significant drop")) if broke]
        return "fail: " + ", ".join(reasons) if reasons else "ok"


@dataclass
class GateReport:
    """The gate's cells and verdict; markdown() is the CI job summary."""

    baseline: str
    candidate: str
    max_drop: float
    alpha: float
    test: str
    cells: list[GateCell]
    dataset: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[GateCell]:
        return [c for c in self.cells if c.failed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def verdict(self) -> str:
        if self.passed:
            return f"PASS: no cell of {len(self.cells)} regressed"
        return f"FAIL: {len(self.failures)} of {len(self.cells)} cells regressed"

    def markdown(self) -> str:
        icon = "\u2705" if self.passed else "\u274c"
        fingerprint = str(self.dataset.get("fingerprint") or "?")[:12]
        lines = [
            f"### gcl-eval gate: {icon} {self.verdict()}",
            "",
            f"Candidate `{self.candidate}` against baseline `{self.baseline}` on dataset "
            f"`{self.dataset.get('name') or '?'}` (fingerprint `{fingerprint}`). A cell fails when its mean "
            f"drops by more than {self.max_drop:g} (absolute) or drops significantly at alpha {self.alpha:g} "
            f"({TEST_NAMES[self.test]} on per-query scores, Holm-adjusted over {plural(len(self.cells), 'cell')}).",
            "",
            "| split | measure | baseline | candidate | delta | p | p (Holm) | queries | status |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for c in self.cells:
            status = c.status.replace("max_drop", f"{self.max_drop:g}")
            status = f"\u274c {status}" if c.failed else status
            lines.append(f"| {c.split} | {c.measure} | {c.baseline:.4f} | {c.candidate:.4f} | {c.delta:+.4f} | "
                         f"{_p(c.p)} | {_p(c.p_holm)} | {c.n_pairs} | {status} |")
        if self.notes:
            lines.append("")
            lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {"passed": self.passed, "verdict": self.verdict(), "baseline": self.baseline,
                "candidate": self.candidate, "max_drop": self.max_drop, "alpha": self.alpha, "test": self.test,
                "dataset": self.dataset, "notes": self.notes,
                "cells": [{**asdict(c), "failed": c.failed, "status": c.status} for c in self.cells]}


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}"


def gate(baseline: RunResult, candidate: RunResult, max_drop: float = 0.01,
         measures: Sequence[str] = PAPER_MEASURES, splits: Sequence[str] | None = None, *,
         baseline_label: str = "baseline", candidate_label: str = "candidate", **settings) -> GateReport:
    """Check every selected split x measure of candidate against baseline (splits default: the baseline's).

    settings are CompareOptions fields (test, alpha, n_resamples, seed). GclError (bad input) when
    the runs are not comparable, a selected split or measure is missing from either run, or
    max_drop / alpha are out of range.
    """
    if not (max_drop >= 0 and math.isfinite(max_drop)):
        raise GclError(f"max drop must be a non-negative number (got {max_drop})")
    options = CompareOptions(**settings)
    splits = list(dict.fromkeys(splits)) if splits else list(baseline.splits)
    for label, run in ((baseline_label, baseline), (candidate_label, candidate)):
        missing = [s for s in splits if s not in run.splits]
        if missing:
            raise GclError(f"{label} has no split {', '.join(missing)} (its splits: {', '.join(run.splits)})")
    # fixed labels inside: the display labels may coincide (a run gated against itself)
    base, cand = Side("baseline", (baseline,)), Side("candidate", (candidate,))
    check_measures([base, cand], measures)
    try:
        comparison = compare(base, [cand], measures=measures, splits=splits, options=options)
    except IncomparableRuns as err:  # the gate has no --force: say what to do instead
        raise GclError(f"{err.reason} (evaluate the candidate as the baseline was, or refresh the baseline)") from None
    cells = [_gate_cell(row, max_drop) for row in comparison.rows if not row.is_baseline]
    return GateReport(baseline=baseline_label, candidate=candidate_label, max_drop=max_drop, alpha=options.alpha,
                      test=options.test, cells=cells, dataset=dict(baseline.dataset), notes=comparison.notes)


def _gate_cell(row: Cell, max_drop: float) -> GateCell:
    return GateCell(split=row.split, measure=row.measure, baseline=row.baseline_value, candidate=row.value,
                    delta=row.delta, p=row.p, p_holm=row.p_holm, n_pairs=row.n_pairs,
                    too_large=-row.delta > max_drop + _TOLERANCE, significant_drop=row.delta < 0 and row.significant)
