"""Numbers a model's authors report, shown beside the measured ones: clearly marked, never tested.

A released preset carries the numbers the reference README reports for it (its [reported] table,
docs/presets.md). `gcl-eval run` copies them into result.json's model record under "reported" when
the dataset it evaluated is the one they were reported on. A comparison then gets, after each such
run, a row labelled "<label> [reported]" whose cells hold those values only: no change against a
baseline, no test, not counted in Holm's correction, and a note saying where they come from. The
leaderboard shows them the same way (leaderboard/tables.py).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Mapping

from gcl_eval.data.dataset import SPLITS
from gcl_eval.measures import parse_measure
from gcl_eval.util.errors import GclError

REPORTED_MARK = " [reported]"


@dataclass(frozen=True)
class ReportedNumbers:
    """What a source reports for a model on a dataset: split -> measure name -> value."""

    source: str
    dataset: str  # the registered dataset they were reported on (gcl-eval data list)
    values: Mapping[str, Mapping[str, float]]

    def to_json(self) -> dict:
        return {"source": self.source, "dataset": self.dataset,
                "values": {split: dict(cells) for split, cells in self.values.items()}}

    def value(self, split: str, measure: str) -> float | None:
        """The reported value of a measure however it is spelt ("RBP(p=.9)" finds "RBP(p=0.9)"), else None."""
        wanted = parse_measure(measure)
        for name, value in self.values.get(split, {}).items():
            if parse_measure(name) == wanted:
                return value
        return None


def parse_reported(table, *, dataset: str | None, where: str) -> ReportedNumbers:
    """A preset's [reported] table: `source = "..."` and per split a table of measure = value.

    `dataset` is the preset's dataset, the one the numbers were reported on (required)."""
    if not isinstance(table, dict):
        raise GclError(f"{where}: reported must be a table: source = \"...\", in_domain = {{ \"nDCG@10\" = 0.5 }}")
    if not dataset:
        raise GclError(f"{where}: reported numbers need the preset's dataset (dataset = \"NAME\")")
    source = table.get("source")
    if not isinstance(source, str) or not source:
        raise GclError(f"{where}: reported.source is required (where the numbers come from)")
    values = {}
    for split, cells in table.items():
        if split == "source":
            continue
        if split not in SPLITS or not isinstance(cells, dict) or not cells:
            raise GclError(f"{where}: reported.{split}: expected one of {', '.join(SPLITS)} with a table of "
                           "measure = value")
        for measure, value in cells.items():
            parse_measure(measure)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
                raise GclError(f"{where}: reported.{split}.{measure} = {value!r}: expected a number in [0, 1]")
        values[split] = {measure: float(value) for measure, value in cells.items()}
    if not values:
        raise GclError(f"{where}: reported has no split (e.g. in_domain = {{ \"nDCG@10\" = 0.5 }})")
    return ReportedNumbers(source, dataset, values)


def reported_of(model: Mapping) -> ReportedNumbers | None:
    """The reported numbers a run's model record carries, or None (also for a malformed record)."""
    record = model.get("reported") if isinstance(model, Mapping) else None
    if not isinstance(record, Mapping):
        return None
    values = record.get("values")
    if not isinstance(values, Mapping) or not all(isinstance(v, Mapping) for v in values.values()):
        return None
    try:
        cleaned = {str(s): {str(m): float(v) for m, v in cells.items()} for s, cells in values.items()}
    except (TypeError, ValueError):
        return None
    return ReportedNumbers(str(record.get("source", "")), str(record.get("dataset", "")), cleaned)


def with_reported(comparison, models: Mapping[str, Mapping]):
    """`comparison` (gcl_eval.report.engine.Comparison) with a "[reported]" row after each label whose model
    record (`models`: label -> result.json "model") carries reported numbers for the table's cells."""
    from gcl_eval.report.engine import Cell

    labels, rows, runs, sources = [], [], list(comparison.runs), []
    for label in comparison.labels:
        labels.append(label)
        rows += comparison.cells_of(label)
        reported = reported_of(models.get(label, {}))
        if reported is None:
            continue
        cells = [Cell(label + REPORTED_MARK, split, measure, reported.value(split, measure), reported=True)
                 for split in comparison.splits for measure in comparison.measures]
        if all(cell.value is None for cell in cells):
            continue
        labels.append(label + REPORTED_MARK)
        rows += cells
        runs.append({"label": label + REPORTED_MARK, "baseline": False, "reported_for": label,
                     "reported": reported.to_json()})
        sources.append(f"{label}: {reported.source}")
    if len(labels) == len(comparison.labels):
        return comparison
    note = (f"rows marked{REPORTED_MARK} hold the numbers published for the model ({'; '.join(sources)}), "
            "not measured here: shown for reference, not tested and not counted in the correction")
    return replace(comparison, labels=labels, rows=rows, runs=runs, notes=[*comparison.notes, note])
