"""Pointing a downloaded Marqo-GS folder's image references at the images extracted beside it.

The published corpus files and split CSVs hold absolute image paths of the authors' machine. Images
are matched to them by file name (as the reference's change_image_paths script does) and the
references rewritten as paths relative to the dataset folder (`images/<file name>`), so the folder
reads anywhere, and moves, without an image root. A reference whose file is not among the
extracted images is left as it was (and counted).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from gcl_eval.data.dataset import CORPORA
from gcl_eval.data.tables import load_json
from gcl_eval.util.errors import DataError

IMAGE_KEYS = ("image_local", "image")  # the corpus keys the Marqo-GS reader takes an image from


@dataclass
class RerootCount:
    matched: int = 0
    unmatched: int = 0
    first_unmatched: str | None = None

    def add(self, ref: str, found: bool) -> None:
        if found:
            self.matched += 1
        else:
            self.unmatched += 1
            self.first_unmatched = self.first_unmatched or ref


def file_name(ref: str) -> str:
    """The file name of a path written on any system ('/a/b/c.jpg', 'C:\\a\\c.jpg' -> 'c.jpg')."""
    return ref.replace("\\", "/").rsplit("/", 1)[-1]


def referenced_image_names(folder: Path) -> set[str]:
    """The file names of every image the folder's corpus files reference."""
    names: set[str] = set()
    for corpus in CORPORA:
        for fields in _corpus(folder / f"{corpus}.json").values():
            ref = _image_ref(fields)
            if ref:
                names.add(file_name(ref))
    return names


def reroot_images(folder: Path, images: Mapping[str, str]) -> RerootCount:
    """Rewrite the corpus files' and split CSVs' image references by file name; `images` maps a
    file name to its path relative to `folder`. Counts the corpus references (CSV rows repeat them)."""
    count = RerootCount()
    for corpus in CORPORA:
        _reroot_corpus(folder / f"{corpus}.json", images, count)
    for path in sorted(folder.glob("*.csv")):
        _reroot_csv(path, images)
    return count


def _corpus(path: Path) -> dict:
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{product_id: {{\"title\": ..., \"image_local\": ...}}}}")
    return data


def _image_ref(fields) -> str | None:
    if not isinstance(fields, dict):
        return None
    for key in IMAGE_KEYS:
        if isinstance(fields.get(key), str) and fields[key]:
            return fields[key]
    return None


def _reroot_corpus(path: Path, images: Mapping[str, str], count: RerootCount) -> None:
    data = _corpus(path)
    for fields in data.values():
        ref = _image_ref(fields)
        if not ref:
            continue
        local = images.get(file_name(ref))
        count.add(ref, local is not None)
        if local is not None:
            key = next(k for k in IMAGE_KEYS if fields.get(k) == ref)
            fields[key] = local
    tmp = path.with_name(f".{path.name}.reroot")
    with open(tmp, "w", encoding="utf-8") as handle:  # one product per line, as gcl-eval writes corpora
        handle.write("{\n")
        for i, (doc_id, fields) in enumerate(data.items()):
            handle.write(("" if i == 0 else ",\n") + json.dumps(doc_id, ensure_ascii=False) + ": "
                         + json.dumps(fields, ensure_ascii=False))
        handle.write("\n}\n" if data else "}\n")
    os.replace(tmp, path)


def _reroot_csv(path: Path, images: Mapping[str, str]) -> None:
    """Stream a split CSV, rewriting its image_local column; a CSV without one is left alone."""
    try:
        _rewrite_csv(path, images)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable CSV ({err})") from None


def _rewrite_csv(path: Path, images: Mapping[str, str]) -> None:
    csv.field_size_limit(sys.maxsize)
    tmp = path.with_name(f".{path.name}.reroot")
    with open(path, newline="", encoding="utf-8") as source:
        reader = csv.reader(source)
        header = next(reader, None)
        if not header or "image_local" not in header:
            return
        column = header.index("image_local")
        with open(tmp, "w", newline="", encoding="utf-8") as target:
            writer = csv.writer(target, lineterminator="\n")
            writer.writerow(header)
            for row in reader:
                if column < len(row) and row[column]:
                    row[column] = images.get(file_name(row[column]), row[column])
                writer.writerow(row)
    os.replace(tmp, path)
