"""Atomic writes and cache-entry locks: a file or folder appears whole or not at all.

Every writer builds its result under a hidden temporary sibling of the target (same folder, so the
final rename never crosses filesystems), named ``.NAME.tmp-<pid>-<random>`` so that two writers,
in threads or processes, never share one. The data is flushed to disk (fsync of the file, of every
file of a folder, and of the folders where the platform allows) before the rename, so after a crash
or power loss the target holds the previous content or the new one, never a mix.

A failure at any point (an exception in the caller's block, a failed flush or rename) removes the
temporary and leaves the previous content in place; replacing a folder moves the old one aside and
moves it back when the final rename fails.

:func:`file_lock` serialises "build it if missing" between processes: the second one waits, then
finds the entry the first one built.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gcl_eval.util.errors import GclError

# fsync of many small files (a dataset's images) is bound by journal commits that concurrent calls share
_FLUSH_THREADS = 32


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for the block to write; when the block succeeds it is
    flushed and renamed onto ``path``, when anything fails it is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = _temp_sibling(path, "tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data``, whole or not at all."""
    with atomic_file(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8, newlines as given), whole or not at all."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out``; when the block succeeds it replaces ``out`` (an
    existing folder only once the new one is complete and flushed); when anything fails, nothing of
    it is left behind and an existing ``out`` is kept."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; results and sites are meant to be read
        _flush_tree(tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_folder(out.parent)


@contextmanager
def file_lock(path: str | os.PathLike, *, best_effort: bool = False) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (a cache entry, file or folder) across processes and threads
    for the block; a second holder waits until the first one leaves (or dies). Yields True.

    The lock is the hidden sibling file ``.NAME.lock``; it stays on disk (removing it while another
    process waits on it would let two in). With ``best_effort``, a lock that cannot be created (a
    read-only cache folder) is skipped and the block runs unlocked (yields False); otherwise the
    OSError propagates. Locks are not reentrant: do not take the same one twice in one thread.
    """
    from filelock import FileLock  # imported here: most commands never lock, and it costs tens of ms

    path = Path(path)
    lock = FileLock(str(lock_file(path)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError:
        if not best_effort:
            raise
        lock = None
    try:
        yield lock is not None
    finally:
        if lock is not None:
            lock.release()


def lock_file(path: str | os.PathLike) -> Path:
    """The file :func:`file_lock` locks for ``path``: its hidden sibling ``.NAME.lock``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


# ---------------------------------------------------------------------------------------- helpers


def _temp_sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(6)}")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an existing ``out`` is moved aside first and restored on failure."""
    if not os.path.lexists(out):
        os.replace(tmp, out)
        return
    old = _temp_sibling(out, "old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        try:
            os.replace(old, out)
        except OSError as err:
            raise GclError(f"{out}: could not be replaced nor restored; its previous content is in {old} "
                           f"({err.strerror})") from err
        raise
    _remove(old)


def _flush_tree(folder: Path) -> None:
    """fsync every file under ``folder`` (concurrently), then every folder in it, deepest first."""
    files, folders = [], [folder]
    for root, dirs, names in os.walk(folder):
        files.extend(Path(root, name) for name in names if not os.path.islink(Path(root, name)))
        folders.extend(Path(root, name) for name in dirs)
    if len(files) > 1:
        with ThreadPoolExecutor(min(_FLUSH_THREADS, len(files))) as pool:
            list(pool.map(_fsync, files))
    elif files:
        _fsync(files[0])
    for sub in reversed(folders):
        _fsync_folder(sub)


def _fsync(path: Path) -> None:
    """Flush a file's data to disk; a filesystem that cannot (EINVAL, ENOTSUP) is taken as is."""
    fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR)  # Windows flushes writable handles only
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) where the platform allows; best effort."""
    if os.name != "posix":
        return  # a folder cannot be opened on Windows
    try:
        _fsync(folder)
    except OSError:
        pass


def _remove(path: Path) -> None:
    """Remove a temporary file or folder if it is there; never raises."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
