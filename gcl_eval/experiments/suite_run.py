"""Running a suite (gcl_eval.experiments.suite): its run folders over seeds, then summary.md and suite.json.

Layout of the output folder (default suites/NAME):
    <label>/seed-<k>/   run folders of trained runs (result.json, per_query.parquet; TREC files with trec)
    <label>/            run folders of zero-shot runs (deterministic: once)
    summary.md          mean +/- std per run, comparisons with per-seed ratios and Holm-corrected tests
    suite.json          the definition, the runs (folder, seed, wall time, reused or not) and the statistics

A run folder that already holds the same run (same suite key: preset, overrides, seed, world, protocol)
is reused, so an interrupted suite continues where it stopped; checkpoints and embeddings are cached
as for `gcl-eval run`. Under torchrun the ranks run every run together and rank 0 alone writes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gcl_eval.experiments.suite import RunSpec, Suite, expand, load_suite
from gcl_eval.protocol.evaluate import EvalProtocol
from gcl_eval.util.errors import GclError


@dataclass(frozen=True)
class SuiteRequest:
    name: str  # a packaged suite (gcl_eval.experiments.suite.suite_names) or a suite .toml file
    seeds: int = 3  # training seeds 0..seeds-1 per trained run
    out: Path | None = None  # None: suites/<suite name>
    queries: int = 2000  # queries sampled per split
    data: str | Path | None = None  # a dataset folder or registered dataset instead of the suite's built-in world
    mirror: str | None = None  # fetch a registered dataset from here (default: $GCL_EVAL_MIRROR)
    trec: bool = False  # also write the TREC run files
    device: str | None = None
    workers: int | None = None


@dataclass(frozen=True)
class SuitePlan:
    definition: Suite
    specs: list[RunSpec]
    out: Path
    protocol: EvalProtocol


@dataclass(frozen=True)
class SuiteResult:
    out: Path  # the output folder
    report: dict  # suite.json
    summary: str  # summary.md


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    folder: Path
    done: bool  # the folder already holds this run: it will be reused


def plan_suite(request: SuiteRequest, *, fetch: bool = True) -> SuitePlan:
    """The suite's definition and its run folders, in order; a bad suite, seed count or data folder is a
    one-line GclError. A registered dataset is fetched unless `fetch` is False (a dry run)."""
    from gcl_eval.data.resolve import resolve_dataset

    definition = load_suite(request.name)
    protocol = EvalProtocol(queries_per_split=request.queries)
    data = resolve_dataset(request.data, mirror=request.mirror, fetch=fetch) if request.data is not None else None
    specs = expand(definition, request.seeds, protocol_key(protocol), data=str(Path(data).resolve()) if data else None)
    out = Path(request.out) if request.out else Path("suites") / definition.name
    return SuitePlan(definition, specs, out, protocol)


def suite_status(request: SuiteRequest) -> list[PlannedRun]:
    """What the suite would run (a dry run): every run folder and whether it is already done."""
    plan = plan_suite(request, fetch=False)
    return [PlannedRun(spec, plan.out / spec.folder,
                       finished_run(plan.out / spec.folder, spec.key, request.trec) is not None)
            for spec in plan.specs]


def protocol_key(protocol: EvalProtocol) -> dict:
    """The protocol settings a suite run's key depends on: everything result.json records that changes the
    numbers (a folder scored under another sampling, grade or tie rule is never reused)."""
    recorded = protocol.to_json()
    return {k: recorded[k] for k in ("top_k", "queries_per_split", "seed", "sampling", "metric_profile", "grades",
                                     "ties")}


def finished_run(folder: Path, key: str, trec: bool = False):
    """The RunResult in ``folder`` when it is a valid run folder of this exact suite run (holding TREC files
    when ``trec`` asks for them), else None."""
    from gcl_eval.protocol.results import load_run

    if not (folder / "result.json").is_file() or (trec and not any(folder.glob("run_*.trec"))):
        return None
    try:
        run = load_run(folder)
    except GclError:
        return None
    return run if isinstance(run.model, dict) and run.model.get("suite_key") == key else None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_suite(request: SuiteRequest, *, log: Callable[[str], None] = _stderr) -> SuiteResult | None:
    """Run (or reuse) every run folder, then write summary.md and suite.json. ``log`` gets one progress
    line per run folder.

    Under torchrun every rank calls this inside one process group that lives for the whole suite: rank 0
    fetches the dataset first, decides which folders are done, logs and writes the folders and the report;
    all ranks train and encode each run together. The other ranks return None."""
    from gcl_eval.util.distributed import main_first, process_group, resolve_device

    with process_group(resolve_device(request.device)):
        plan = main_first(lambda: plan_suite(request))
        return _run_plan(plan, request, log)


def _run_plan(plan: SuitePlan, request: SuiteRequest, log: Callable[[str], None]) -> SuiteResult | None:
    from gcl_eval.util.distributed import gather_objects, is_main_process

    main = is_main_process()
    if main:
        plan.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records, results = [], {}
    for i, spec in enumerate(plan.specs, 1):
        t0 = time.perf_counter()
        result = finished_run(plan.out / spec.folder, spec.key, request.trec) if main else None
        reused = gather_objects(result is not None)[0]  # rank 0's folders decide for every rank
        where = f"world {spec.world}" if spec.data is None else spec.data
        if main:
            log(f"[{i}/{len(plan.specs)}] {spec.title} ({spec.preset.name}, {where})"
                f"{': done, reused' if reused else ''}")
        if not reused:
            result = _run_spec(spec, plan, request)
        if not main:
            continue
        results.setdefault(spec.label, []).append(result)
        records.append({"label": spec.label, "seed": spec.seed, "preset": spec.preset.name, "folder": spec.folder,
                        "reused": reused, "wall_s": round(time.perf_counter() - t0, 1),
                        "timings": {k: v for k, v in result.timings.items() if k.endswith("_s")}})
    if not main:
        return None
    return write_report(plan.definition, results, records, plan.out, seeds=request.seeds, data=request.data,
                        wall_s=round(time.perf_counter() - started, 1))


def _run_spec(spec: RunSpec, plan: SuitePlan, request: SuiteRequest):
    """Run one suite run into its folder; its RunResult as read back (None on a rank other than 0)."""
    from gcl_eval.experiments.pipeline import RunOptions, run_preset
    from gcl_eval.protocol.results import load_run
    from gcl_eval.util.distributed import is_main_process

    folder = plan.out / spec.folder
    overrides = (("seed", spec.seed),) if spec.seed is not None else ()
    labels = (("label", spec.label), ("seed", spec.seed), ("suite", spec.suite), ("suite_key", spec.key),
              ("world", spec.world if spec.data is None else None))
    run_preset(RunOptions(model=spec.preset.name, preset=spec.preset, out=folder, world=spec.world,
                          data=Path(spec.data) if spec.data else None, mirror=request.mirror, protocol=plan.protocol,
                          device=request.device, workers=request.workers, train_overrides=overrides, labels=labels,
                          write_trec=request.trec))
    return load_run(folder) if is_main_process() else None


def write_report(definition: Suite, results: dict, records: list[dict], out: Path, *, seeds: int,
                 wall_s: float, data: str | Path | None = None) -> SuiteResult:
    """Write summary.md and suite.json into ``out``."""
    from gcl_eval.report.suite_summary import compare, summary
    from gcl_eval.util.atomic import atomic_write_text

    table = summary(results)
    comparisons = [compare(c.run, results[c.run], c.baseline, results[c.baseline], check_targets=c.targets)
                   for c in definition.comparisons]
    runs_s = sum(float(r["timings"].get("total_s", 0.0)) for r in records)
    report = {"suite": definition.name, "description": definition.description, "paper": definition.paper,
              "world": definition.world if data is None else None, "data": str(data) if data else None,
              "seeds": seeds, "definition": str(definition.path.name),
              "runs": records, "summary": table, "comparisons": [c.to_json() for c in comparisons],
              "wall_s": wall_s, "runs_total_s": round(runs_s, 1)}
    markdown = summary_text(definition, table, comparisons, records, results, seeds=seeds, wall_s=wall_s,
                            data=data)
    atomic_write_text(out / "summary.md", markdown)
    atomic_write_text(out / "suite.json", json.dumps(report, indent=2) + "\n")
    return SuiteResult(out, report, markdown)


def summary_text(definition: Suite, table: dict, comparisons: list, records: list[dict], results: dict, *,
                 seeds: int, wall_s: float, data: str | Path | None = None) -> str:
    """summary.md: the runs (compact and every measure), the comparisons, the learning curves, the time."""
    from gcl_eval.report.suite_summary import (compact_markdown, comparison_markdown, curves_markdown,
                                               summary_markdown)

    lines = [f"# Suite {definition.name}", "", definition.description, ""]
    if definition.paper:
        world = f"the dataset {data}" if data else definition.world
        lines += [f"Reproduces: {definition.paper}. World: {world}. Seeds: {seeds}.", ""]
    lines += ["## Runs: nDCG@10 / ERR (mean ± std over seeds)", "", compact_markdown(table), "",
              "## Runs: every reported measure", "", summary_markdown(table), ""]
    if comparisons:
        lines += ["## Comparisons", ""]
        for comparison in comparisons:
            lines += [comparison_markdown(comparison), ""]
    curves = curves_markdown(results)
    if curves:
        lines += ["## Learning curves: nDCG@10 / ERR during training (the dev evaluations: "
                  "a sample of each split's queries)", "", curves, ""]
    computed = [r for r in records if not r["reused"]]
    runs_s = sum(float(r["timings"].get("total_s", 0.0)) for r in records)
    lines += [f"Time: {runs_s / 60:.1f} min of runs (the sum of the run folders' total_s, data generation and "
              f"imports not included); this invocation took {wall_s:.0f} s ({len(computed)} runs computed, "
              f"{len(records) - len(computed)} reused).", ""]
    return "\n".join(lines)
