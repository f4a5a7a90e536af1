"""`gcl-eval data list` and `gcl-eval data get`: the registered datasets, fetched in one command."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def list_command(as_json):
    """List the datasets `data get` can fetch: name, subset, archive sizes, whether the cache holds it."""
    from gcl_eval.data.get import list_datasets
    from gcl_eval.data.transfer_progress import human_size
    from gcl_eval.util.console import print_table

    rows = list_datasets()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table("", ["name", "subset", "text archive", "image archive", "cached"],
                [[r["name"], r["subset"], _size(r["text"], human_size), _size(r["images"], human_size), r["cached"]]
                 for r in rows])


def _size(remote: dict | None, human_size) -> str:
    if remote is None:
        return "-"
    return human_size(remote["size"]) if remote["size"] else "not recorded"


@click.command("get")
@click.argument("name")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Dataset folder to create (it will hold the split CSVs) [default: in the gcl-eval cache].")
@click.option("--images/--no-images", default=True, show_default=True,
              help="Also fetch the image archive and point the image paths at the extracted images.")
@click.option("--mirror", default=None, metavar="URL",
              help="Fetch each file from URL/<file name> instead of its official URL [default: $GCL_EVAL_MIRROR].")
@click.option("--keep-archives", is_flag=True,
              help="Keep the downloaded archives in the cache (another subset then extracts without downloading).")
def get_command(name, out, images, mirror, keep_archives):
    """Download, verify and extract the registered dataset NAME (see `gcl-eval data list`).

    Downloads resume where they stopped (also after an interrupted call); a dataset already
    fetched is not downloaded again. Prints the dataset folder (what --data accepts).
    """
    from gcl_eval.data.get import get_dataset

    click.echo(get_dataset(name, out=out, images=images, mirror=mirror, keep_archives=keep_archives))
