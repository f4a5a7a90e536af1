"""`gcl-eval run`: train (when the preset trains) and evaluate a preset on a dataset, in one command."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcl_eval.commands.options import (DATA_HELP, device_option, images_option, json_option, mirror_option,
                                      queries_option, sampling_option, top_k_option, workers_option)
from gcl_eval.experiments.preset import DEFAULT_PRESET


@click.command("run")
@click.option("--model", "model", default=DEFAULT_PRESET, show_default=True,
              help="Preset name (see `gcl-eval models`) or path to a preset .toml file.")
@click.option("--data", "data", default=None,
              help=f"{DATA_HELP} [default: the preset's dataset if it names one (the paper's lineup and the "
                   "released models: marqo-gs-10m), else the built-in synthetic dataset].")
@images_option
@mirror_option
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run folder to write [default: runs/<preset>].")
@queries_option
@top_k_option
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the query sample (the reference's 1).")
@sampling_option
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the preset's epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Override the preset's batch size.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Cap training at this many optimizer steps (a smaller budget than the preset's epochs).")
@click.option("--log-every", type=click.IntRange(min=0), default=None, metavar="N",
              help="When the preset trains: a metrics.jsonl record every N steps in its checkpoint folder "
                   "(docs/training.md, 'Watching a run').")
@click.option("--eval-every", type=click.IntRange(min=0), default=None, metavar="N",
              help="When the preset trains: evaluate every N steps and at the end (in_domain and novel_corpus, "
                   "200 queries each) and record the learning curve in the run folder's result.json.")
@click.option("--report-to", multiple=True, metavar="TARGET",
              help="When the preset trains: also report the records to tensorboard or wandb (offline).")
@device_option
@workers_option()
@json_option()
def run(model, data, images_root, mirror, out, queries, top_k, seed, sampling, epochs, batch_size, max_steps, device,
        workers, as_json, log_every, eval_every, report_to):
    """Train (if the preset trains) and evaluate a preset on the four splits; write a run folder.

    With no options: the mini-gcl preset (multi-field GCL fine-tuned from a pretrained start) on the
    built-in synthetic dataset, on this CPU in minutes (its pretraining stage runs once per dataset).
    A finished checkpoint for the same preset and dataset is reused, and so are cached embeddings:
    a second run only evaluates. Without a GPU, a preset meant for one is evaluated on the CPU (with
    an estimate of the time); one that trains needs --device cpu to train there.

    Under torchrun (`torchrun --nproc_per_node N -m gcl_eval run ...`) the ranks train together and
    share the encoding; rank 0 writes the run folder and prints (docs/training.md).
    """
    from gcl_eval.experiments.pipeline import RunOptions, run_preset
    from gcl_eval.protocol.evaluate import EvalProtocol
    from gcl_eval.util.console import print_result
    from gcl_eval.util.distributed import is_main_process

    report_to = tuple(t.strip() for item in report_to for t in item.split(",") if t.strip()) or None
    overrides = tuple((k, v) for k, v in (("epochs", epochs), ("batch_size", batch_size), ("max_steps", max_steps),
                                          ("log_every", log_every), ("eval_every", eval_every),
                                          ("report_to", report_to)) if v is not None)
    options = RunOptions(model=model, data=data, images=images_root, mirror=mirror, out=out, device=device,
                         workers=workers, train_overrides=overrides,
                         protocol=EvalProtocol(top_k=top_k, queries_per_split=queries, seed=seed,
                                               sampling=sampling))
    evaluation, folder = run_preset(options)
    if not is_main_process():
        return  # under torchrun rank 0 reports
    if as_json:
        click.echo(json.dumps(evaluation.result.to_json(), indent=2))
    else:
        print_result(evaluation.result, title=f"{evaluation.result.model['preset']} -> {folder}")
