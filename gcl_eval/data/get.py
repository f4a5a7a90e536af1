"""`get_dataset`: a registered dataset, downloaded, verified and extracted into a ready folder.

The archives are downloaded into the cache (`downloads/`, resumable, see gcl_eval.data.download),
the dataset's subset folder is extracted from the text archive, its images from the image archive
(only those its corpora reference), and the image references are pointed at them. All of that is
built in a temporary sibling folder that replaces the target only once complete, with
SOURCE_FILE (what was fetched, and its sha256) written last: a folder holding SOURCE_FILE is
complete, and a later call returns it without a request. The folder is the dataset folder (the
split CSVs are in it), in the cache under `datasets/<name>` unless `out` names another.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import click

from gcl_eval import __version__
from gcl_eval.data.dataset import CORPORA, SPLIT_STEMS, SPLITS
from gcl_eval.data.download import Downloaded, download
from gcl_eval.data.extract import CorruptArchive, extract_files_by_name, extract_folder
from gcl_eval.data.registry import DatasetEntry, RemoteFile, entries, get_entry
from gcl_eval.data.reroot import referenced_image_names, reroot_images
from gcl_eval.util.atomic import atomic_folder, atomic_write_text, file_lock
from gcl_eval.util.errors import GclError
from gcl_eval.util.paths import cache_dir

SOURCE_FILE = "gcl-eval-source.json"
MIRROR_ENV = "GCL_EVAL_MIRROR"


def get_dataset(name: str, out: str | Path | None = None, images: bool = True, mirror: str | None = None, *,
                keep_archives: bool = False) -> Path:
    """The folder of dataset `name`, fetched unless a complete copy is already there.

    `out` is the dataset folder to create (default: the cache); `images=False` skips the image
    archive (image references then stay as published); `mirror` (default $GCL_EVAL_MIRROR) is a base
    URL each file is fetched from by name; `keep_archives` keeps the downloaded archives in the
    cache (another subset of the same archives then needs no download).
    """
    entry = get_entry(name)
    target = Path(out) if out is not None else cached_folder(name)
    if is_complete(target, entry, images):
        return target
    mirror = mirror_url(mirror)
    try:
        with file_lock(dataset_lock_path(target)):  # a second get of the same folder waits, then finds it complete
            if not is_complete(target, entry, images):
                _check_target(target, entry)
                wanted = [entry.text] + ([entry.images] if images and entry.images else [])
                downloads = _cache_folder("downloads")
                files = [download(remote.on_mirror(mirror), downloads) for remote in wanted]
                _build(entry, files, target)
                if not keep_archives:
                    for file in files:
                        _remove_download(file.path)
    except OSError as err:
        raise GclError(f"cannot write {target}: {err.strerror or err}") from None
    _note(f"ready: {target}")
    return target


def _build(entry: DatasetEntry, files: list[Downloaded], target: Path) -> None:
    """Extract, add images, re-root and record, in a temporary folder that becomes `target` whole."""
    try:
        with atomic_folder(target) as tmp:
            _note(f"extracting {entry.member_prefix}/ from {files[0].path.name}")
            extract_folder(files[0].path, entry.member_prefix, tmp)
            _check_layout(tmp, files[0].path, entry.member_prefix)
            matched = _add_images(files[1], tmp) if len(files) > 1 else None
            record = {"dataset": entry.name, "subset": entry.subset, "images": len(files) > 1,
                      "generator": f"gcl-eval {__version__}", "files": [_describe(f) for f in files],
                      "image_references": matched}
            atomic_write_text(tmp / SOURCE_FILE, json.dumps(record, indent=2) + "\n")
    except CorruptArchive as err:
        _remove_download(err.archive)
        raise GclError(f"{err}; it was removed: run the same command to download it again") from None


def is_complete(folder: Path, entry: DatasetEntry, images: bool) -> bool:
    """Whether `folder` holds a finished get of `entry` (with images, when they are asked for)."""
    record = read_source(folder)
    return bool(record) and record.get("dataset") == entry.name and (record.get("images") or not images
                                                                      or entry.images is None)


def read_source(folder: Path) -> dict | None:
    """The SOURCE_FILE record of a dataset folder made by get_dataset, or None."""
    try:
        record = json.loads((Path(folder) / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def list_datasets() -> list[dict]:
    """Every registered dataset: name, subset, archive URLs and sizes, and whether the cache holds it."""
    rows = []
    for entry in entries():
        folder = cached_folder(entry.name)
        record = read_source(folder) or {}
        cached = ("with images" if record.get("images") else "text only") if record.get("dataset") == entry.name \
            else "no"
        rows.append({"name": entry.name, "subset": entry.subset, "description": entry.description,
                     "text": _remote_info(entry.text), "images": _remote_info(entry.images) if entry.images else None,
                     "hf_dataset": entry.hf_dataset, "cached": cached,
                     "path": str(folder) if cached != "no" else None})
    return rows


def _add_images(images: Downloaded, folder: Path) -> dict:
    """Extract the images the corpora reference and point the references at them."""
    names = referenced_image_names(folder)
    _note(f"extracting {len(names)} images from {images.path.name}")
    found = extract_files_by_name(images.path, names, folder / "images")
    count = reroot_images(folder, found)
    if count.unmatched:
        _note(f"{count.unmatched} image references have no image in {images.path.name} "
              f"(first: {count.first_unmatched}); they are left as published")
    return {"matched": count.matched, "unmatched": count.unmatched}


def _check_layout(folder: Path, archive: Path, prefix: str) -> None:
    """The extracted folder must hold the Marqo-GS files, else it is not the dataset we asked for."""
    needed = [f"{name}.json" for name in CORPORA] + [f"{SPLIT_STEMS[split]}.csv" for split in SPLITS]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise GclError(f"{archive}: {prefix}/ lacks {', '.join(missing)}; expected a Marqo-GS folder")


def _check_target(target: Path, entry: DatasetEntry) -> None:
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    record = read_source(target)
    if record and record.get("dataset") == entry.name:
        return  # the same dataset without images: it is rebuilt with them
    what = f"holds dataset {record.get('dataset')!r}" if record else "exists and was not made by `gcl-eval data get`"
    raise GclError(f"{target}: {what}; expected a new or empty folder")


def dataset_lock_path(target: Path) -> Path:
    """Where the lock of a dataset folder lives: in the cache, so nothing is added beside `--out`."""
    key = hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:16]
    return _cache_folder("locks") / key


def cached_folder(name: str) -> Path:
    """Where `get_dataset(name)` puts the dataset when no `out` is given."""
    return _cache_folder("datasets") / name


def registered_name(folder: Path) -> str | None:
    """The registry name of a dataset folder made by get_dataset, else None."""
    record = read_source(folder)
    name = record.get("dataset") if record else None
    return name if isinstance(name, str) else None


def mirror_url(mirror: str | None) -> str | None:
    """The mirror to fetch from: `mirror`, else $GCL_EVAL_MIRROR, else None (the official URLs)."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if mirror is not None and urlsplit(mirror).scheme not in ("http", "https"):
        raise GclError(f"mirror {mirror!r}: expected an http(s) URL (each file is fetched from URL/<file name>)")
    return mirror


def _cache_folder(*parts: str) -> Path:
    try:
        return cache_dir(*parts)
    except OSError as err:
        raise GclError(f"cannot use the cache folder {err.filename or ''}: {err.strerror or err}; set "
                       "GCL_EVAL_CACHE to a writable folder") from None


def _remove_download(path: Path) -> None:
    """Remove a downloaded archive and its checksum file."""
    for each in (path, path.with_name(path.name + ".sha256")):
        each.unlink(missing_ok=True)


def _describe(file: Downloaded) -> dict:
    return {"url": file.url, "name": file.path.name, "size": file.size, "sha256": file.sha256}


def _remote_info(remote: RemoteFile) -> dict:
    return {"url": remote.url, "size": remote.size, "sha256": remote.sha256}


def _note(message: str) -> None:
    click.echo(message, err=True)
