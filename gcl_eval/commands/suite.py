"""`gcl-eval suite NAME`: run a named set of presets over seeds, then write the summary and comparisons.

The output folder's layout and the reuse of finished run folders: gcl_eval.experiments.suite_run.
"""

from __future__ import annotations

from pathlib import Path

import click

from gcl_eval.commands.options import DATA_HELP, device_option, mirror_option, queries_option, workers_option


@click.command("suite")
@click.argument("name", required=False)
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Training seeds (0..N-1) per trained run; zero-shot runs run once.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: suites/NAME].")
@click.option("--list", "list_only", is_flag=True, help="List the packaged suites and exit.")
@click.option("--dry-run", is_flag=True, help="Print the runs the suite would do (and which are done) and exit.")
@click.option("--data", "data", default=None, help=f"{DATA_HELP}: run on it instead of the suite's built-in world.")
@mirror_option
@click.option("--trec", is_flag=True, help="Also write the TREC run and qrels files (about 160 MB per run folder).")
@queries_option
@device_option
@workers_option()
def suite(name, seeds, out, list_only, dry_run, data, mirror, trec, queries, device, workers):
    """Run suite NAME (see --list) or a suite .toml file: its runs over seeds, a summary and comparisons.

    Packaged suites reproduce the paper's tables in miniature on the built-in synthetic data:
    paper-table1-mini (Table 1), paper-stw-mini (Table 3), paper-fields-mini (Table 2),
    paper-batch-mini (Table 4), and paper-control-mini / paper-world2-mini (the same GCL vs CLIP
    comparison on the hidden-quality control world and on a second world).

    Under torchrun (`torchrun --nproc_per_node N -m gcl_eval suite NAME ...`) the ranks run each run
    together; rank 0 writes the folders and the summary (docs/training.md).
    """
    from gcl_eval.experiments.suite_run import SuiteRequest, run_suite, suite_status

    if list_only:
        from gcl_eval.experiments.suite import packaged_suites

        for definition in packaged_suites():
            click.echo(f"{definition.name:22s} {definition.world:8s} {len(definition.runs):2d} runs  "
                       f"{definition.description}")
        return
    if not name:
        raise click.UsageError("give a suite name (see `gcl-eval suite --list`) or a suite .toml file")
    request = SuiteRequest(name=name, seeds=seeds, out=out, queries=queries, data=data, mirror=mirror, trec=trec,
                           device=device, workers=workers)
    if dry_run:
        planned = suite_status(request)
        for i, run in enumerate(planned, 1):
            state = "done" if run.done else "to run"
            click.echo(f"[{i}/{len(planned)}] {run.spec.title:28s} preset {run.spec.preset.name:16s} -> {run.folder} "
                       f"({state})")
        return
    result = run_suite(request)
    if result is not None:  # None: a torchrun rank other than 0, which helped train and encode
        click.echo(result.summary)
