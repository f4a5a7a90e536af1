"""Options several commands share, defined once (decorators, applied like click.option)."""

from __future__ import annotations

from pathlib import Path

import click

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps [default: auto: cuda, then mps, then cpu]."


def device_option(command):
    return click.option("--device", default=None, help=DEVICE_HELP)(command)


def workers_option(help: str = "Data-loading worker processes."):
    return click.option("--workers", default=None, type=click.IntRange(min=0), help=help)


def queries_option(command):
    return click.option("--queries", default=2000, show_default=True, type=int,
                        help="Queries sampled per split.")(command)


def top_k_option(command):
    return click.option("--top-k", default=1000, show_default=True, type=int,
                        help="Documents retrieved per query.")(command)


def json_option(help: str = "Print result.json instead of the table."):
    return click.option("--json", "as_json", is_flag=True, help=help)


def sampling_option(command):
    return click.option("--sampling", type=click.Choice(["reference", "numpy"]), default="reference",
                        show_default=True,
                        help="Query-sample rule: the reference code's draw (queries keyed by text, pandas "
                             "DataFrame.sample) or gcl-eval's earlier numpy draw (keyed by query id).")(command)


DATA_HELP = ("Dataset folder, or the name of a registered dataset (gcl-eval data list), fetched into the cache "
             "the first time")


def mirror_option(command):
    return click.option("--mirror", default=None, metavar="URL",
                        help="Fetch registered datasets and checkpoint URLs from URL/<file name> instead of their "
                             "official URLs [default: $GCL_EVAL_MIRROR].")(command)


def images_option(command):
    return click.option("--images", "images_root", type=click.Path(path_type=Path), default=None,
                        help="Folder the dataset's image paths are re-rooted to (Marqo-GS layout).")(command)
