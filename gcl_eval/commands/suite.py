"""`gcl-eval suite NAME`: run a named set of presets over seeds, then write the summary and comparisons.

Layout of the output folder (default suites/NAME):
    <label>/seed-<k>/   run folders of trained runs (result.json, per_query.parquet; TREC files with --trec)
    <label>/            run folders of zero-shot runs (deterministic: once)
    summary.md          mean +/- std per run, comparisons with per-seed ratios and Holm-corrected tests
    suite.json          the definition, the runs (folder, seed, wall time, reused or not) and the statistics

A run folder that already holds the same run (same suite key: preset, overrides, seed, world, protocol)
is reused, so an interrupted suite continues where it stopped; checkpoints and embeddings are cached
as for `gcl-eval run`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from gcl_eval.util.errors import GclError


@click.command("suite")
@click.argument("name", required=False)
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Training seeds (0..N-1) per trained run; zero-shot runs run once.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: suites/NAME].")
@click.option("--list", "list_only", is_flag=True, help="List the packaged suites and exit.")
@click.option("--dry-run", is_flag=True, help="Print the runs the suite would do (and which are done) and exit.")
@click.option("--data", "data", type=click.Path(path_type=Path), default=None,
              help="Run on this dataset folder instead of the suite's built-in world.")
@click.option("--trec", is_flag=True, help="Also write the TREC run files (about 160 MB per run folder).")
@click.option("--queries", default=2000, show_default=True, type=int, help="Queries sampled per split.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: cuda when available].")
@click.option("--workers", default=None, type=click.IntRange(min=0), help="Data-loading worker processes.")
def suite(name, seeds, out, list_only, dry_run, data, trec, queries, device, workers):
    """Run suite NAME (see --list) or a suite .toml file: its runs over seeds, a summary and comparisons.

    Packaged suites reproduce the paper's tables in miniature on the built-in synthetic data:
    paper-table1-mini (Table 1), paper-stw-mini (Table 3), paper-fields-mini (Table 2),
    paper-batch-mini (Table 4), and paper-control-mini / paper-world2-mini (the same GCL vs CLIP
    comparison on the hidden-quality control world and on a second world).
    """
    from gcl_eval.experiments.suite import expand, load_suite, suite_names

    if list_only:
        for suite_name in suite_names():
            definition = load_suite(suite_name)
            click.echo(f"{suite_name:22s} {definition.world:8s} {len(definition.runs):2d} runs  {definition.description}")
        return
    if not name:
        raise click.UsageError("give a suite name (see `gcl-eval suite --list`) or a suite .toml file")
    from gcl_eval.protocol.evaluate import EvalProtocol

    definition = load_suite(name)
    protocol = EvalProtocol(queries_per_split=queries)
    if data is not None and not Path(data).is_dir():
        raise GclError(f"--data {data}: no such dataset folder")
    specs = expand(definition, seeds, _protocol_key(protocol), data=str(Path(data).resolve()) if data else None)
    out = Path(out) if out else Path("suites") / definition.name
    if dry_run:
        for i, spec in enumerate(specs, 1):
            state = "done" if _finished(out / spec.folder, spec.key) is not None else "to run"
            click.echo(f"[{i}/{len(specs)}] {spec.title:28s} preset {spec.preset.name:16s} -> {out / spec.folder} ({state})")
        return
    run_suite(definition, specs, out, protocol=protocol, seeds=seeds, trec=trec, device=device, workers=workers)
    click.echo((out / "summary.md").read_text(encoding="utf-8"))


def _protocol_key(protocol) -> dict:
    return {"top_k": protocol.top_k, "queries_per_split": protocol.queries_per_split, "seed": protocol.seed}


def _finished(folder: Path, key: str):
    """The run in ``folder`` when it is a valid run folder of this exact suite run, else None."""
    from gcl_eval.protocol.results import load_run

    if not (folder / "result.json").is_file():
        return None
    try:
        run = load_run(folder)
    except GclError:
        return None
    return run if isinstance(run.model, dict) and run.model.get("suite_key") == key else None


def run_suite(definition, specs, out: Path, *, protocol, seeds: int, trec: bool = False, device=None,
              workers=None) -> dict:
    """Run (or reuse) every spec, then write summary.md and suite.json into ``out``; the suite.json dict."""
    from gcl_eval.experiments.pipeline import RunOptions, run_preset
    from gcl_eval.protocol.results import load_run

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records, results = [], {}
    for i, spec in enumerate(specs, 1):
        folder = out / spec.folder
        t0 = time.perf_counter()
        result = _finished(folder, spec.key)
        reused = result is not None
        where = f"world {spec.world}" if spec.data is None else spec.data
        click.echo(f"[{i}/{len(specs)}] {spec.title} ({spec.preset.name}, {where})"
                   f"{': done, reused' if reused else ''}", err=True)
        if not reused:
            overrides = (("seed", spec.seed),) if spec.seed is not None else ()
            extra = (("label", spec.label), ("seed", spec.seed), ("suite", spec.suite), ("suite_key", spec.key),
                     ("world", spec.world if spec.data is None else None))
            run_preset(RunOptions(model=spec.preset.name, preset=spec.preset, out=folder, world=spec.world,
                                  data=Path(spec.data) if spec.data else None,
                                  protocol=protocol, device=device, workers=workers, train_overrides=overrides,
                                  extra_info=extra, write_trec=trec))
            result = load_run(folder)
        results.setdefault(spec.label, []).append(result)
        records.append({"label": spec.label, "seed": spec.seed, "preset": spec.preset.name, "folder": spec.folder,
                        "reused": reused, "wall_s": round(time.perf_counter() - t0, 1),
                        "timings": {k: v for k, v in result.timings.items() if k.endswith("_s")}})
    report = write_report(definition, results, records, out, seeds=seeds,
                          wall_s=round(time.perf_counter() - started, 1))
    return report


def write_report(definition, results: dict, records: list[dict], out: Path, *, seeds: int, wall_s: float) -> dict:
    from gcl_eval.util.atomic import atomic_write_text
    from gcl_eval.report.suite_summary import compact_markdown, compare, comparison_markdown, summary, summary_markdown

    table = summary(results)
    comparisons = [compare(c.run, results[c.run], c.baseline, results[c.baseline], check_targets=c.targets)
                   for c in definition.comparisons]
    lines = [f"# Suite {definition.name}", "", definition.description, ""]
    if definition.paper:
        lines += [f"Reproduces: {definition.paper}. World: {definition.world}. Seeds: {seeds}.", ""]
    lines += ["## Runs: nDCG@10 / ERR (mean ± std over seeds)", "", compact_markdown(table), "",
              "## Runs: every reported measure", "", summary_markdown(table), ""]
    if comparisons:
        lines += ["## Comparisons", ""]
        for comparison in comparisons:
            lines += [comparison_markdown(comparison), ""]
    computed = [r for r in records if not r["reused"]]
    runs_s = sum(float(r["timings"].get("total_s", 0.0)) for r in records)
    lines += [f"Time: {runs_s / 60:.1f} min of runs (the sum of the run folders' total_s, data generation and "
              f"imports not included); this invocation took {wall_s:.0f} s ({len(computed)} runs computed, "
              f"{len(records) - len(computed)} reused).", ""]
    report = {"suite": definition.name, "description": definition.description, "paper": definition.paper,
              "world": definition.world, "seeds": seeds, "definition": str(definition.path.name),
              "runs": records, "summary": table, "comparisons": [c.to_json() for c in comparisons],
              "wall_s": wall_s, "runs_total_s": round(runs_s, 1)}
    atomic_write_text(out / "summary.md", "\n".join(lines))
    atomic_write_text(out / "suite.json", json.dumps(report, indent=2) + "\n")
    return report
