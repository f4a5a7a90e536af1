"""`gcl-eval export`: a finished training run as a sentence-transformers or open_clip folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcl_eval.commands.options import json_option


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, metavar="sentence-transformers|open_clip",
              help="sentence-transformers for a `train --text-model` run, open_clip for a `train --arch` run.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Folder to write (must not exist, or be empty); written whole or not at all.")
@json_option("Print what was written as JSON.")
def export(checkpoint, fmt, out, as_json):
    """Export the finished training run CHECKPOINT (a `gcl-eval train` output folder) for other tools.

    sentence-transformers: SentenceTransformer(OUT) loads it, with the training prefixes as the prompts
    "query" and "document". open_clip: open_clip.create_model_and_transforms("local-dir:OUT") loads it.
    Both encode exactly as gcl-eval does (docs/export.md).
    """
    from gcl_eval.experiments.export import export_checkpoint

    exported = export_checkpoint(checkpoint, fmt, out)
    if as_json:
        click.echo(json.dumps({"format": exported.format, "out": str(exported.out), "files": list(exported.files)},
                              indent=2))
    else:
        click.echo(f"exported {checkpoint} as {exported.format} to {exported.out} ({len(exported.files)} files)")
