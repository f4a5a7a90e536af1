"""Safe extraction from tar archives: one folder of an archive, or the files a dataset names.

Every member of the archive is checked as it is read, extracted or not: a name that is absolute or
climbs out (`..`), a link that points outside the archive (or, when extracted, outside the folder
being extracted) and a device or pipe are refused with one line (GclError) before anything of the
member is written; what is extracted also goes through tarfile's "data" filter. A corrupt or
truncated archive raises CorruptArchive. Members are streamed (tarfile's list of members read is
emptied as it goes), so memory stays flat for archives of millions of files.
"""

from __future__ import annotations

import errno
import posixpath
import tarfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from gcl_eval.util.errors import GclError


class CorruptArchive(GclError):
    """The archive cannot be read to its end: a damaged or truncated download."""

    def __init__(self, message: str, archive: Path):
        super().__init__(message)
        self.archive = archive


def extract_folder(archive: Path, folder: str, dest: Path) -> list[str]:
    """Extract the members under `folder/` of `archive` into `dest`, with `folder/` stripped.

    Returns the extracted paths (relative to dest); GclError when the archive has no such folder.
    """
    prefix = folder.strip("/") + "/"
    extracted: list[str] = []
    tops: set[str] = set()

    def place(name: str) -> str | None:
        return name[len(prefix):] if name.startswith(prefix) and name != prefix.rstrip("/") else None

    for tar, member, name in _checked_members(archive):
        tops.add(name.split("/", 1)[0])
        rel = place(name)
        if rel is None:
            continue
        link = None
        if member.issym() or member.islnk():
            target = place(_link_target(member, name))
            if target is None:
                raise GclError(f"{archive}: refused link {member.name!r} -> {member.linkname!r}: it points outside "
                               f"{folder}/; nothing was extracted from it")
            link = member.linkname if member.issym() else target
        _extract(archive, tar, member, rel, link, dest)
        extracted.append(rel)
    if not extracted:
        found = ", ".join(sorted(tops)[:8]) or "nothing"
        raise GclError(f"{archive}: no folder {folder!r} in the archive (found: {found})")
    return extracted


def extract_files_by_name(archive: Path, names: set[str] | None, dest: Path) -> dict[str, str]:
    """Extract the regular files of `archive` whose file name is in `names` (every one when None) into
    `dest`, flat (`dest/<file name>`). Returns {file name: path relative to dest's parent}; of two
    members with one file name the first is kept. Links and folders are checked but not extracted."""
    found: dict[str, str] = {}
    dest.mkdir(parents=True, exist_ok=True)
    for tar, member, name in _checked_members(archive):
        base = posixpath.basename(name)
        if not member.isfile() or base in found or (names is not None and base not in names):
            continue
        _extract(archive, tar, member, base, None, dest)
        found[base] = f"{dest.name}/{base}"
    return found


def _checked_members(archive: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    """(archive, member, normalised name) for every member, each one checked; then the end is checked."""
    with _read_errors(archive), tarfile.open(archive, "r:") as tar:
        while True:
            member = tar.next()
            if member is None:
                break
            tar.members = []  # tarfile keeps every member read: not for millions of them
            name = _member_name(archive, member)
            if member.issym() or member.islnk():
                target = _link_target(member, name)
                if member.linkname.startswith(("/", "\\")) or target == ".." or target.startswith("../"):
                    raise GclError(f"{archive}: refused link {member.name!r} -> {member.linkname!r}: it points "
                                   "outside the archive; nothing was extracted from it")
            yield tar, member, name
        _check_end(archive, tar)


def _member_name(archive: Path, member: tarfile.TarInfo) -> str:
    """The member's normalised relative name; GclError for an absolute or climbing one, or a special file."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or (parts and ":" in parts[0]):
        raise GclError(f"{archive}: refused member {member.name!r}: its path is absolute or climbs out of the "
                       "extraction folder; nothing was extracted from it")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise GclError(f"{archive}: refused member {member.name!r}: a device or pipe, not a file")
    return name.rstrip("/")


def _link_target(member: tarfile.TarInfo, name: str) -> str:
    """The archive path a link points at (a symlink relative to its folder, a hard link from the root)."""
    target = member.linkname
    while member.islnk() and target.startswith("./"):
        target = target[2:]
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), target)
    return posixpath.normpath(target)


def _extract(archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, link: str | None,
             dest: Path) -> None:
    """Write one checked member at dest/rel (a link pointing at `link`) through the data filter."""
    renamed = member.replace(name=rel, deep=False) if link is None else member.replace(name=rel, linkname=link,
                                                                                       deep=False)
    with _read_errors(archive):
        try:
            tar.extract(renamed, path=dest, filter="data")
        except tarfile.FilterError as err:
            raise GclError(f"{archive}: refused member {member.name!r}: {err}") from None
        except KeyError:
            raise GclError(f"{archive}: refused link {member.name!r}: its target was not extracted before it") from None
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise GclError(f"no space left on device while extracting {archive} into {dest}; "
                               "nothing was kept") from None
            raise GclError(f"cannot write {dest / rel}: {err.strerror or err}") from None


def _check_end(archive: Path, tar: tarfile.TarFile) -> None:
    """tarfile takes a damaged header after the first for the end of the archive: look for the real end."""
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if block != bytes(tarfile.BLOCKSIZE):
        raise CorruptArchive(f"{archive}: corrupt or truncated archive (no valid header at byte {tar.offset})",
                             archive)


@contextmanager
def _read_errors(archive: Path) -> Iterator[None]:
    try:
        yield
    except tarfile.FilterError:
        raise
    except (tarfile.TarError, EOFError) as err:
        raise CorruptArchive(f"{archive}: corrupt or truncated archive ({err or 'unexpected end'})", archive) from None
