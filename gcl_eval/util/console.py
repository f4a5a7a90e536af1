"""Terminal output: rich tables and progress bars on a terminal, plain text otherwise.

Progress goes to stderr and only when stderr is a terminal (or GCL_EVAL_PROGRESS=1), so piped
output and --json stay clean.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence, TypeVar

import click

from gcl_eval.measures import PAPER_MEASURES

T = TypeVar("T")


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_enabled() -> bool:
    flag = os.environ.get("GCL_EVAL_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false")
    return _is_tty(sys.stderr)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (rich, on stderr) when progress is enabled."""
    if not progress_enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def status(message: str):
    """A spinner with a message while a step runs (stderr, terminals only)."""
    if not progress_enabled():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A rich table on a terminal, aligned plain text otherwise (stdout)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    if _is_tty(sys.stdout):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for i, name in enumerate(columns):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in cells:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *cells)]
    if title:
        click.echo(title)
    click.echo("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(columns, widths))))
    for row in cells:
        click.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_result(result, title: str = "") -> None:
    """The split x measure table of a RunResult (the paper's triple first, then the rest)."""
    measures = list(result.protocol["measures"])
    ordered = [m for m in PAPER_MEASURES if m in measures] + [m for m in measures if m not in PAPER_MEASURES]
    rows = [[split, body["n_queries"], body["corpus_size"], *[body["metrics"][m] for m in ordered]]
            for split, body in result.splits.items()]
    print_table(title, ["split", "queries", "corpus", *ordered], rows)
