"""`gcl-eval cache list` / `gcl-eval cache prune`: what the cache folder holds, and freeing it."""

from __future__ import annotations

import json
import time

import click


@click.group("cache")
def cache() -> None:
    """The gcl-eval cache folder ($GCL_EVAL_CACHE, else $XDG_CACHE_HOME/gcl-eval, else ~/.cache/gcl-eval):
    parsed tables, built-in and fetched datasets, embeddings, trained checkpoints, downloads.

    Everything in it can be rebuilt (or fetched again); see docs/cache.md.
    """


@cache.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def list_command(as_json):
    """List the cache's entries with their size and last use, least recently used first."""
    from gcl_eval.experiments.cache import format_size, list_entries
    from gcl_eval.util.console import print_table
    from gcl_eval.util.paths import cache_dir

    entries = list_entries()
    total = sum(e.size for e in entries)
    if as_json:
        click.echo(json.dumps({"root": str(cache_dir()), "bytes": total,
                               "entries": [e.to_dict() for e in entries]}, indent=2))
        return
    rows = [[e.kind, e.name, format_size(e.size), _ago(e.last_use), "being written" if e.writing else ""]
            for e in entries]
    print_table(f"gcl-eval cache {cache_dir()}", ["kind", "entry", "size", "last use", "state"], rows)
    click.echo(f"{len(entries)} entries, {format_size(total)}")


@cache.command("prune")
@click.option("--older-than", metavar="AGE", default=None,
              help="Remove entries unused for longer than AGE: a number and a unit s, m, h, d or w (30d, 12h).")
@click.option("--max-size", metavar="SIZE", default=None,
              help="Then remove the least recently used entries until the cache holds at most SIZE "
                   "(20G, 500M; K/M/G/T are powers of 1024).")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
def prune_command(older_than, max_size, dry_run):
    """Remove old or least recently used cache entries.

    An entry another command is building or reading (its lock held) or one being written is skipped.
    """
    from gcl_eval.experiments.cache import format_size, parse_age, parse_size, prune

    age = parse_age(older_than) if older_than is not None else None
    size = parse_size(max_size) if max_size is not None else None
    outcome = prune(older_than=age, max_size=size, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for entry in outcome.removed:
        click.echo(f"{verb} {entry.kind}/{entry.name} ({format_size(entry.size)}, last used {_ago(entry.last_use)})")
    for entry, why in outcome.skipped:
        click.echo(f"skipped {entry.kind}/{entry.name}: {why}")
    freed = sum(e.size for e in outcome.removed)
    click.echo(f"{verb} {len(outcome.removed)} entries ({format_size(freed)}); "
               f"{len(outcome.skipped)} skipped; the cache {'would hold' if dry_run else 'holds'} "
               f"{format_size(outcome.remaining_bytes)}")


def _ago(when: float) -> str:
    seconds = max(0.0, time.time() - when)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return "just now"
