"""Parsing large text tables (CSV, JSON, JSON lines) with pyarrow, cached as parquet.

A parsed table is cached in cache_dir("tables") under a name derived from the source file's
resolved path, size and mtime_ns plus a parser tag, so a read-only dataset folder works, an edited
file is parsed again and a corrupt cache file is rebuilt; two processes reading the same file at
once parse it once (a file lock per source in the cache folder). Every CSV column is read as a string:
ids keep their leading zeros ("00123") and callers convert numeric columns themselves, which lets
them name the first bad row instead of failing inside the parser.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gcl_eval.util.atomic import atomic_file, file_lock
from gcl_eval.util.paths import cache_dir, mark_used
from gcl_eval.util.errors import DataError

CACHE_FORMAT = "1"


def read_csv(path: str | Path, *, delimiter: str = ",") -> pa.Table:
    """All columns of a CSV file as (nullable) strings; an empty field is null. Cached."""
    path = Path(path)
    return cached_table(path, f"csv{delimiter!r}", lambda p: _parse_csv(p, delimiter))


def read_json_object(path: str | Path, parse: Callable[[Path, object], pa.Table], tag: str) -> pa.Table:
    """A JSON document turned into a table by `parse(path, loaded_json)`. Cached under `tag`."""
    path = Path(path)
    return cached_table(path, "json:" + tag, lambda p: parse(p, load_json(p)))


def load_json(path: Path):
    """json.load with a one-line DataError for a missing or malformed file."""
    _require_file(path)
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: unreadable JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: unreadable JSON: not UTF-8 text ({err.reason})") from None


def cached_table(path: Path, tag: str, parse: Callable[[Path], pa.Table]) -> pa.Table:
    """`parse(path)`, or the parquet copy of an earlier parse of the same file version.

    Looked up and built under a lock per source file, so two processes reading the same file at
    once parse it once: the second waits and reads the first one's copy.
    """
    _require_file(path)
    resolved = path.resolve()
    stat = resolved.stat()
    folder = cache_dir("tables")
    stem = hashlib.sha256(f"{CACHE_FORMAT}|{tag}|{resolved}".encode()).hexdigest()[:24]
    version = hashlib.sha256(f"{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = folder / f"{stem}-{version}.parquet"
    with file_lock(folder / stem, best_effort=True):
        if cached.is_file():
            try:
                table = pq.read_table(cached)
                mark_used(cached)
                return table
            except Exception:  # noqa: BLE001 - any unreadable cache file is rebuilt
                _unlink(cached)
        table = parse(resolved)
        after = resolved.stat()
        if (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):  # not edited meanwhile
            _store(table, cached, stale=folder.glob(f"{stem}-*.parquet"))
    return table


def _store(table: pa.Table, target: Path, stale) -> None:
    """Write the cache file atomically and drop older versions of the same source; best effort."""
    try:
        for old in stale:
            if old != target:
                _unlink(old)
        with atomic_file(target) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    except OSError:
        pass  # an unwritable cache only costs a re-parse next time


def _parse_csv(path: Path, delimiter: str) -> pa.Table:
    header = csv_header(path, delimiter)
    if not header:
        raise DataError(f"{path}: empty file, expected a header row")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: column {duplicated[0]!r} appears more than once in the header")
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable CSV: {_first_line(err)}") from None


def csv_header(path: Path, delimiter: str = ",") -> list[str]:
    """The header row of a CSV file (quoted names allowed); [] for an empty file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh, delimiter=delimiter), [])
    except UnicodeDecodeError:
        raise DataError(f"{path}: unreadable CSV: not UTF-8 text") from None


def _require_file(path: Path) -> None:
    if not path.is_file():
        what = "is a folder, expected a file" if path.is_dir() else "missing file"
        raise DataError(f"{path}: {what}")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
