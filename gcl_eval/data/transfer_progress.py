"""Progress of one download on stderr: a rich bar on a terminal, plain lines otherwise.

Plain lines (logs, CI) come at the start, at every tenth of the file (every 100 MB when the size is
unknown), on each retry and at the end, with the transfer rate of this call.
"""

from __future__ import annotations

import time

import click

from gcl_eval.util.console import progress_enabled

MB = 1_000_000
UNKNOWN_SIZE_STEP = 100 * MB


def human_size(size: int | None) -> str:
    """Bytes as a short decimal size (1.5 GB); 'unknown' for None."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


class TransferProgress:
    """Bytes done of one file; `start` is called for every request (a resume starts part-way)."""

    def __init__(self, name: str, url: str, total: int | None):
        self.name, self.url, self.total = name, url, total
        self.done = self.first = 0
        self.started: float | None = None
        self.next_line = 0
        self._bar = self._task = None
        if progress_enabled():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(name, total=total)

    def start(self, done: int) -> None:
        self.done = done
        if self.started is None:
            self.started, self.first = time.perf_counter(), done
            where = f" from byte {done}" if done else ""
            self._line(f"downloading {self.url} ({human_size(self.total)}){where}")
            self.next_line = self._next_step(done)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)

    def advance(self, size: int) -> None:
        self.done += size
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.done >= self.next_line:
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            self._line(f"  {self.name}: {human_size(self.done)} of {human_size(self.total)}{share}, {self._rate()}")
            self.next_line = self._next_step(self.done)

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message)
        else:
            self._line(f"  {message}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()  # the bar's last state stays on the terminal
        elif self.started is not None:
            self._line(f"  {self.name}: {human_size(self.done)} received, {self._rate()}")

    def _rate(self) -> str:
        elapsed = time.perf_counter() - (self.started or time.perf_counter())
        received = self.done - self.first
        return f"{received / MB / elapsed:.1f} MB/s" if elapsed > 0 else "-"

    def _next_step(self, done: int) -> int:
        step = max(self.total // 10, 1) if self.total else UNKNOWN_SIZE_STEP
        return (done // step + 1) * step

    def _line(self, text: str) -> None:
        if self._bar is None:
            click.echo(text, err=True)
