"""A suite's results over seeds: mean +/- std per run, and paired comparisons with Holm-corrected tests.

Statistics (docs/reproducing.md says why):
- mean and sample standard deviation (ddof=1) over the seeds of each split's metric;
- a comparison's p-value is a paired test over the queries of the split: each query's score averaged
  over the seeds of the run, against the same for the baseline (the query sample is the same for every
  seed and model, so the pairs are exact); Holm across the cells (splits x measures) of one comparison;
- per-seed ratios (seed k of the run over seed k of the baseline) show whether every seed agrees.

The reproduction targets (GCL against CLIP fine-tuned with the same model, data and budget) are checked
for comparisons marked ``targets = true``: >= 2x in-domain ERR, >= 1.3x ERR on novel_corpus and zero_shot,
a higher nDCG@10 on every split, each significant; ``targets = "above"`` checks the higher nDCG@10 only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gcl_eval.data.dataset import SPLITS
from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.protocol.results import RunResult
from gcl_eval.report import engine
from gcl_eval.report.engine import CompareOptions, IncomparableRuns, Side, ratio, ratio_text
from gcl_eval.util.errors import GclError

ALPHA = 0.05


@dataclass(frozen=True)
class Cell:
    """A comparison cell: run vs baseline on one split and measure (the engine's cell over seed means and
    seed-averaged per-query scores), and the per-seed ratios (None where that seed's baseline is 0)."""

    stats: engine.Cell
    seed_ratios: list[float | None]

    @property
    def split(self) -> str:
        return self.stats.split

    @property
    def measure(self) -> str:
        return self.stats.measure

    @property
    def run_mean(self) -> float:
        return self.stats.value

    @property
    def baseline_mean(self) -> float:
        return self.stats.baseline_value

    @property
    def ratio(self) -> float | None:
        """run_mean / baseline_mean; None for a baseline of 0."""
        return self.stats.ratio

    @property
    def p(self) -> float | None:
        return self.stats.p

    @property
    def p_holm(self) -> float | None:
        return self.stats.p_holm

    @property
    def significant(self) -> bool:
        return self.stats.significant

    def to_json(self) -> dict:
        return {"split": self.split, "measure": self.measure, "run_mean": self.run_mean,
                "baseline_mean": self.baseline_mean, "ratio": _finite(self.ratio),
                "seed_ratios": [_finite(r) for r in self.seed_ratios], "p": _finite(self.p),
                "p_holm": _finite(self.p_holm), "significant": self.significant}


@dataclass
class ComparisonResult:
    run: str
    baseline: str
    cells: list[Cell]
    targets: list[dict] = field(default_factory=list)  # empty unless the comparison checks targets

    def cell(self, split: str, measure: str) -> Cell:
        found = next((c for c in self.cells if c.split == split and c.measure == measure), None)
        if found is None:
            raise GclError(f"{self.run} vs {self.baseline} has no {measure} on {split} (the comparison's measures "
                           f"must include it)")
        return found

    @property
    def targets_met(self) -> bool | None:
        return all(t["met"] for t in self.targets) if self.targets else None

    def to_json(self) -> dict:
        return {"run": self.run, "baseline": self.baseline, "cells": [c.to_json() for c in self.cells],
                "targets": self.targets, "targets_met": self.targets_met}


def _finite(value: float | None):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def splits_of(results: list[RunResult]) -> list[str]:
    present = set.intersection(*(set(r.splits) for r in results))
    return [s for s in SPLITS if s in present]


def summary(runs: dict[str, list[RunResult]], measures=PAPER_MEASURES) -> dict:
    """{label: {"seeds": n, split: {measure: {"mean", "std", "values"}}}} (std None for one seed)."""
    out = {}
    for label, results in runs.items():
        side = Side(label, tuple(results))
        entry = {"seeds": len(results)}
        for split in splits_of(results):
            entry[split] = {}
            for measure in measures:
                values = side.values(split, measure)
                std = float(np.std(values, ddof=1)) if len(values) > 1 else None
                entry[split][measure] = {"mean": side.mean(split, measure), "std": std, "values": values}
        out[label] = entry
    return out


def compare(label: str, results: list[RunResult], base_label: str, base: list[RunResult], *,
            measures=PAPER_MEASURES, test: str = "t", check_targets: str = "") -> ComparisonResult:
    """Run vs baseline over their seeds; seed k is paired with seed k (a zero-shot side has one result).
    ``check_targets``: "" (none), "gcl" or "above" (TARGET_CHECKS)."""
    run, baseline = Side(label, tuple(results)), Side(base_label, tuple(base))
    try:
        comparison = engine.compare(baseline, [run], measures=measures, splits=splits_of(results + base),
                                    options=CompareOptions(test=test, alpha=ALPHA))
    except IncomparableRuns as err:  # a suite has no --force
        raise GclError(f"{err.reason} (runs evaluated on different queries or under other protocols cannot be "
                       "paired; re-run the suite with one protocol)") from None
    cells = [Cell(c, _seed_ratios(run, baseline, c.split, c.measure)) for c in comparison.cells_of(label)]
    result = ComparisonResult(label, base_label, cells)
    if check_targets:
        result.targets = TARGET_CHECKS[check_targets](result)
    return result


def _seed_ratios(run: Side, base: Side, split: str, measure: str) -> list[float | None]:
    """Seed k of the run over seed k of the baseline (the last seed of a side with fewer)."""
    ours, theirs = run.values(split, measure), base.values(split, measure)
    return [ratio(ours[min(k, len(ours) - 1)], theirs[min(k, len(theirs) - 1)])
            for k in range(max(len(ours), len(theirs)))]


def _target(text: str, cell: Cell, minimum: float) -> dict:
    """{"target", "value", "met"}: the ratio reaches ``minimum``, significantly and upwards. A baseline of 0
    has no ratio: a significant gain over it meets any ratio."""
    reaches = cell.ratio is None or cell.ratio >= minimum
    met = reaches and cell.significant and cell.run_mean > cell.baseline_mean
    return {"target": text, "value": f"{ratio_text(cell.ratio)} (p_holm {_p(cell.p_holm)})", "met": met}


def check_gcl_targets(comparison: ComparisonResult) -> list[dict]:
    """The reproduction targets of GCL against CLIP: ERR >= 2x in-domain and >= 1.3x on novel_corpus and
    zero_shot, nDCG@10 higher on every split."""
    splits = {c.split for c in comparison.cells}
    targets = [_target("in_domain ERR >= 2x", comparison.cell("in_domain", "ERR"), 2.0)] if "in_domain" in splits else []
    targets += [_target(f"{split} ERR >= 1.3x", comparison.cell(split, "ERR"), 1.3)
                for split in ("novel_corpus", "zero_shot") if split in splits]
    return targets + check_above_targets(comparison)


def check_above_targets(comparison: ComparisonResult) -> list[dict]:
    """nDCG@10 higher than the baseline's on every split (significant)."""
    splits = {c.split for c in comparison.cells}
    return [_target(f"{split} nDCG@10 higher", comparison.cell(split, "nDCG@10"), 1.0 + 1e-12)
            for split in SPLITS if split in splits]


TARGET_CHECKS = {"gcl": check_gcl_targets, "above": check_above_targets}


# ------------------------------------------------------------------------------------------ markdown


def _p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.1e}" if value < 0.001 else f"{value:.3f}"


def _mean_std(stat: dict) -> str:
    return f"{stat['mean']:.3f}" if stat["std"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def summary_markdown(table: dict, measures=PAPER_MEASURES) -> str:
    """One row per run label; a column per split with the measures as 'mean ± std' (over seeds)."""
    splits = [s for s in SPLITS if any(s in entry for entry in table.values())]
    head = "| run | seeds | " + " | ".join(f"{s} {m}" for s in splits for m in measures) + " |"
    lines = [head, "|" + "---|" * (2 + len(splits) * len(measures))]
    for label, entry in table.items():
        cells = [_mean_std(entry[s][m]) if s in entry else "-" for s in splits for m in measures]
        lines.append(f"| {label} | {entry['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(stat: dict) -> str:
    mean = f"{stat['mean']:.3f}".lstrip("0")
    return mean if stat["std"] is None else f"{mean} ± {stat['std']:.3f}".replace("± 0.", "± .")


def compact_markdown(table: dict, measures=("nDCG@10", "ERR")) -> str:
    """The paper's layout: a column per split, each cell 'nDCG@10 / ERR' as mean ± std over seeds."""
    splits = [s for s in SPLITS if any(s in entry for entry in table.values())]
    lines = [f"| run | seeds | " + " | ".join(splits) + " |", "|---|---|" + "---|" * len(splits),
             f"| | | " + " | ".join(" / ".join(measures) for _ in splits) + " |"]
    for label, entry in table.items():
        cells = [" / ".join(_short(entry[s][m]) for m in measures) if s in entry else "-" for s in splits]
        lines.append(f"| {label} | {entry['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_markdown(comparison: ComparisonResult, measures=PAPER_MEASURES) -> str:
    """Ratio of means (run / baseline), per-seed ratios and Holm-corrected p per cell; * = significant."""
    splits = [s for s in SPLITS if any(c.split == s for c in comparison.cells)]
    lines = [f"**{comparison.run}** vs **{comparison.baseline}** (ratio of means; per seed; Holm p; * p_holm <= {ALPHA})",
             "", "| split | " + " | ".join(measures) + " |", "|---|" + "---|" * len(measures)]
    for split in splits:
        cells = []
        for measure in measures:
            c = comparison.cell(split, measure)
            star = "*" if c.significant else ""
            seeds = "/".join(ratio_text(r, suffix="") for r in c.seed_ratios)
            cells.append(f"{ratio_text(c.ratio)}{star} ({seeds}; p {_p(c.p_holm)})")
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    if comparison.targets:
        lines += ["", "| target | value | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |" for t in comparison.targets]
    return "\n".join(lines)


def curves_markdown(results: dict[str, list[RunResult]], measures=("nDCG@10", "ERR")) -> str:
    """The evaluations during training of every run that had them: a table per run and seed, a row per
    evaluated step, 'nDCG@10 / ERR' per evaluated split; "" when no run has a learning curve."""
    blocks = []
    for label, seeds in results.items():
        for seed, result in enumerate(seeds):
            curve = result.model.get("train", {}).get("learning_curve") or []
            if not curve:
                continue
            splits = [s for s in SPLITS if s in curve[0]["splits"]]
            lines = [f"**{label}** (seed {seed})", "", "| step | " + " | ".join(splits) + " |",
                     "|---|" + "---|" * len(splits), "| | " + " | ".join(" / ".join(measures) for _ in splits) + " |"]
            for point in curve:
                cells = [" / ".join(_value(point["splits"].get(s, {}).get(m)) for m in measures) for s in splits]
                lines.append(f"| {point['step']} | " + " | ".join(cells) + " |")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _value(value: float | None) -> str:
    return "-" if _finite(value) is None else f"{value:.3f}".lstrip("0")
