"""`gcl-eval models`: the presets, what they are and what they need."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
@click.option("--family", default=None, help="Only this family (e.g. released: the published checkpoints).")
def models(as_json, family):
    """List the model presets: name, family, track, whether it trains, and what it needs.

    Any command that takes --model also accepts a path to your own preset .toml file. The family
    "released" holds the published checkpoints, with the numbers their authors report.
    """
    from gcl_eval.util.console import print_table
    from gcl_eval.experiments.preset import list_presets

    presets = [p.summary() for p in list_presets() if family is None or p.family == family]
    if not presets:
        from gcl_eval.experiments.preset import FAMILIES
        from gcl_eval.util.errors import GclError

        raise GclError(f"no preset of family {family!r}; families: {', '.join(FAMILIES)}")
    if as_json:
        click.echo(json.dumps(presets, indent=2))
        return
    rows = [[p["name"], p["family"], p["track"], "yes" if p["trains"] else "no", ", ".join(p["needs"]) or "CPU",
             p["description"]] for p in presets]
    print_table("gcl-eval presets", ["name", "family", "track", "trains", "needs", "description"], rows)
