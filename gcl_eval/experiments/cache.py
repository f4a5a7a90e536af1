"""What the gcl-eval cache folder holds, and pruning it (`gcl-eval cache list` / `prune`).

The cache (gcl_eval.util.paths.cache_dir) holds six kinds of entries:

- ``tables``: parquet copies of parsed CSV/JSON files (gcl_eval.data.tables), one file each;
- ``datasets``: the built-in synthetic worlds and the datasets `gcl-eval data get` fetched, one folder each;
- ``embeddings``: embedding matrices (gcl_eval.retrieval.embedding_cache), a ``.npy`` and its ``.json`` sidecar;
- ``checkpoints``: trained presets (gcl_eval.experiments.checkpoints), one folder each;
- ``models``: downloaded model checkpoints, a file and its ``.sha256`` (and a partial ``.part`` download);
- ``downloads``: dataset archives, the same way.

An entry's size is the sum of its files; its last use is the newest modification time among them
(and of its folder). Reading an entry from the cache refreshes it (gcl_eval.util.paths.mark_used: one
``utime`` per hit of a table, an embedding, a dataset looked up by name or a reused checkpoint), so the
time is the last write or cached read, whichever came later.

Pruning never removes what another command is working on: each entry is removed under the same file
lock (gcl_eval.util.atomic.file_lock) that the code building or looking it up takes, acquired without
waiting (an entry whose lock is held is skipped and reported), and an entry with a temporary sibling
or temporary file inside (``.NAME.tmp-*``, an atomic write in progress or interrupted) is left alone,
as are the temporaries themselves and the lock files. A folder entry is first renamed aside, then
deleted, so an interrupted prune never leaves a half folder that looks like an entry. A command that
has already loaded an entry (a table, an embedding matrix, a checkpoint) keeps its copy in memory.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from gcl_eval.util.atomic import lock_file
from gcl_eval.util.errors import GclError
from gcl_eval.util.paths import cache_dir

KINDS = ("tables", "datasets", "embeddings", "checkpoints", "models", "downloads")
_DOWNLOAD_SUFFIXES = (".part.json", ".part", ".sha256")
_TEMPORARY = re.compile(r"^\..+\.(tmp|old|del)-")


@dataclass(frozen=True)
class CacheEntry:
    """One cache entry: ``files`` are what removing it deletes, ``locks`` the file_lock targets guarding it."""

    kind: str
    name: str
    files: tuple[Path, ...]
    locks: tuple[Path, ...]
    size: int
    last_use: float
    writing: bool  # a temporary sibling or temporary file inside: an atomic write in progress (or interrupted)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "bytes": self.size,
                "last_use": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.last_use)),
                "writing": self.writing, "paths": [str(p) for p in self.files]}


@dataclass(frozen=True)
class PruneOutcome:
    removed: tuple[CacheEntry, ...]  # or, in a dry run, what would be removed
    skipped: tuple[tuple[CacheEntry, str], ...]  # (entry, why)
    remaining_bytes: int


def list_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every entry of the cache folder ``root`` (default: gcl-eval's), least recently used first."""
    if root is None:
        try:
            root = cache_dir()
        except OSError as err:
            raise GclError(f"cannot use the cache folder {err.filename or ''}: {err.strerror or err}") from None
    root = Path(root)
    entries: list[CacheEntry] = []
    for kind in KINDS:
        folder = root / kind
        if folder.is_dir():
            entries.extend(_LISTERS[kind](root, folder))
    return sorted(entries, key=lambda e: (e.last_use, e.kind, e.name))


def prune(*, older_than: float | None = None, max_size: int | None = None, dry_run: bool = False,
          root: Path | None = None, now: float | None = None) -> PruneOutcome:
    """Remove entries unused for more than ``older_than`` seconds, then the least recently used ones
    until the cache holds at most ``max_size`` bytes. Entries in use are skipped (see the module)."""
    if older_than is None and max_size is None:
        raise GclError("nothing to prune by: give --older-than or --max-size (or both)")
    now = time.time() if now is None else now
    entries = list_entries(root)
    total = sum(e.size for e in entries)
    removed, skipped = [], []
    for entry in entries:
        too_old = older_than is not None and now - entry.last_use > older_than
        too_big = max_size is not None and total > max_size
        if not (too_old or too_big):
            break  # oldest first: every later entry is newer, and the total only shrinks
        why = "being written" if entry.writing else None
        if why is None and not dry_run:
            why = _remove(entry)
        if why is None:
            removed.append(entry)
            total -= entry.size
        else:
            skipped.append((entry, why))
    return PruneOutcome(tuple(removed), tuple(skipped), total)


def parse_size(text: str) -> int:
    """'20G', '500M', '1.5T', '4096' (bytes; K/M/G/T are powers of 1024, a trailing B or iB is allowed)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise GclError(f"size {text!r}: expected a number with an optional unit K, M, G or T (e.g. 20G, 500M)")
    unit = "_KMGT".index(match.group(2).upper() or "_")
    return int(float(match.group(1)) * 1024 ** unit)


def parse_age(text: str) -> float:
    """'30d', '12h', '45m', '90s', '2w' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text, re.IGNORECASE)
    if not match:
        raise GclError(f"age {text!r}: expected a number and a unit s, m, h, d or w (e.g. 30d, 12h)")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2).lower()]


def format_size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} T"


# ------------------------------------------------------------------------------------ listing


def _tables(root: Path, folder: Path):
    """<stem>-<version>.parquet, locked by gcl_eval.data.tables under <stem>."""
    for path in _visible(folder):
        if path.is_file() and path.suffix == ".parquet":
            stem = path.name.rsplit("-", 1)[0]
            yield _entry("tables", path.name, [path], [folder / stem])


def _datasets(root: Path, folder: Path):
    """Folders; a built-in world is locked under its own path, a fetched dataset also in locks/."""
    from gcl_eval.data.get import dataset_lock_path

    for path in _visible(folder):
        if path.is_dir():
            locks = [path] if path.name.startswith("synth-") else [path, dataset_lock_path(path)]
            yield _entry("datasets", path.name, [path], locks)


def _embeddings(root: Path, folder: Path):
    """<key[:2]>/<key>.npy + <key>.json, locked under <key[:2]>/<key>."""
    for sub in _visible(folder):
        if not sub.is_dir():
            continue
        keys = sorted({p.name.split(".", 1)[0] for p in _visible(sub) if p.suffix in (".npy", ".json")})
        for key in keys:
            files = [f for f in (sub / f"{key}.json", sub / f"{key}.npy") if f.exists()]
            yield _entry("embeddings", f"{sub.name}/{key}", files, [sub / key])


def _checkpoints(root: Path, folder: Path):
    for path in _visible(folder):
        if path.is_dir():
            yield _entry("checkpoints", path.name, [path], [path])


def _downloads(root: Path, folder: Path):
    """<name> with <name>.sha256 (and a partial <name>.part, <name>.part.json), locked under <name>."""
    for name in sorted({_download_name(p.name) for p in _visible(folder) if p.is_file()}):
        files = [folder / (name + suffix) for suffix in ("", *_DOWNLOAD_SUFFIXES)]
        yield _entry(folder.name, name, [f for f in files if f.exists()], [folder / name])


def _models(root: Path, folder: Path):
    """models/<url key>/: downloaded checkpoints, one entry per file (the lock files stay)."""
    for sub in _visible(folder):
        if sub.is_dir():
            for entry in _downloads(root, sub):
                yield CacheEntry("models", f"{sub.name}/{entry.name}", entry.files, entry.locks, entry.size,
                                 entry.last_use, entry.writing)


_LISTERS = {"tables": _tables, "datasets": _datasets, "embeddings": _embeddings, "checkpoints": _checkpoints,
            "models": _models, "downloads": _downloads}


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _download_name(name: str) -> str:
    for suffix in _DOWNLOAD_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _entry(kind: str, name: str, files: list[Path], locks: list[Path]) -> CacheEntry:
    size, last_use, writing = 0, 0.0, False
    for path in files:
        siblings = path.parent.glob(f".{_glob_escape(path.name)}.tmp-*")
        writing = writing or any(True for _ in siblings)
        for file, st in _walk(path):
            size += st.st_size if not file.is_dir() else 0
            last_use = max(last_use, st.st_mtime)
            writing = writing or bool(_TEMPORARY.match(file.name)) and file != path
    return CacheEntry(kind, name, tuple(files), tuple(locks), size, last_use, writing)


def _glob_escape(name: str) -> str:
    """``name`` as a glob pattern matching only itself."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _walk(path: Path):
    """(path, lstat) of ``path`` and, for a folder, of everything in it (links not followed)."""
    try:
        yield path, path.lstat()
    except FileNotFoundError:
        return
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, names in os.walk(path):
            for name in dirs + names:
                item = Path(folder, name)
                try:
                    yield item, item.lstat()
                except FileNotFoundError:
                    continue


# ------------------------------------------------------------------------------------ removing


def _remove(entry: CacheEntry) -> str | None:
    """Remove the entry under its locks, taken without waiting; None when removed, else why not."""
    from filelock import FileLock, Timeout

    with ExitStack() as held:
        for target in entry.locks:
            lock = FileLock(str(lock_file(target)))
            try:
                lock.acquire(blocking=False)
            except Timeout:
                return "in use (locked by another process)"
            except OSError as err:
                return f"cannot lock ({err.strerror or err})"
            held.callback(lock.release)
        if _entry(entry.kind, entry.name, list(entry.files), list(entry.locks)).writing:
            return "being written"
        try:
            for path in entry.files:  # the committing file first (a sidecar, the downloaded file): without it the rest is no entry
                _delete(path)
        except OSError as err:
            return f"cannot remove ({err.strerror or err})"
    return None


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        aside = path.with_name(f".{path.name}.del-{os.getpid()}-{secrets.token_hex(6)}")
        os.replace(path, aside)
        shutil.rmtree(aside)
    else:
        path.unlink(missing_ok=True)
