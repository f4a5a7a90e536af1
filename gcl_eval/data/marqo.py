"""The Marqo-GS folder layout (docs/data.md): reader and writer.

    corpus_1.json, corpus_2.json       {product_id: {"title": str, "image_local": path, ...}}
    <stem>.csv                         one per split: query, product_id, score column, [query_id, ...]
    <stem>_gt_dev.json / _gt_test.json optional: {query key: {product_id: int grade}}

The corpus JSON files are the source of document fields; the title/image_local columns of the CSVs
are not read. See docs/data.md for the rules on query ids and image paths.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from gcl_eval.util.atomic import atomic_folder
from gcl_eval.util.console import track
from gcl_eval.data.dataset import (
    CORPORA,
    SPLIT_CORPUS,
    SPLIT_STEMS,
    SPLITS,
    Dataset,
    Documents,
    ImageStore,
    _missing,
    make_documents,
)
from gcl_eval.data.image_paths import resolve_image_paths
from gcl_eval.data.pairs import RowLocator, canonical_pairs, member_mask, optional_column, pick_column
from gcl_eval.data.tables import load_json, read_csv, read_json_object
from gcl_eval.util.errors import DataError, GclError

FIELD_KEYS = ("title", "image_local")


# ----------------------------------------------------------------------------------------- reading


def read_marqo(root: str | Path, *, images_root: str | Path | None = None, score_column: str = "score_linear") -> Dataset:
    """Read a Marqo-GS folder: four split CSVs, two corpus JSON files, optional ground truth."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: missing dataset folder")
    images_root = Path(images_root) if images_root is not None else None
    if images_root is not None and not images_root.is_dir():
        raise DataError(f"{images_root}: image folder does not exist")
    tables = {name: read_corpus_json(root / f"{name}.json") for name in CORPORA}
    corpora = _documents(tables, root, images_root)
    pairs = {}
    for split in SPLITS:
        path = root / f"{SPLIT_STEMS[split]}.csv"
        pairs[split] = read_split_csv(path, score_column=score_column)
        _check_in_corpus(pairs[split], corpora[SPLIT_CORPUS[split]], path, SPLIT_CORPUS[split])
    ground_truth = {}
    for split in SPLITS:
        for kind in ("dev", "test"):
            path = root / f"{SPLIT_STEMS[split]}_gt_{kind}.json"
            if path.exists():
                ground_truth[(split, kind)] = read_ground_truth(path, corpora[SPLIT_CORPUS[split]], SPLIT_CORPUS[split])
    return Dataset(
        name=root.resolve().name,
        pairs=pairs,
        corpora=corpora,
        split_corpus=dict(SPLIT_CORPUS),
        ground_truth=ground_truth,
        root=root,
        extra={"format": "marqo", "score_column": score_column},
    )


def read_split_csv(path: Path, *, score_column: str = "score_linear") -> pd.DataFrame:
    """One split CSV as the canonical pairs frame (query_id derived from the text when absent)."""
    table = read_csv(path)
    cols = table.column_names
    return canonical_pairs(
        table,
        locate=RowLocator.single(str(path), table.num_rows),
        query=pick_column(cols, ["query"], str(path)),
        doc_id=pick_column(cols, ["product_id"], str(path)),
        score=pick_column(cols, [score_column], str(path)),
        query_id=optional_column(cols, ["query_id"]),
    )


def read_corpus_json(path: Path) -> pa.Table:
    """corpus_N.json as a table: doc_id, title, image_local and any extra keys. Cached as parquet."""
    return read_json_object(path, _corpus_table, tag="marqo-corpus")


def _corpus_table(path: Path, data) -> pa.Table:
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{product_id: {{\"title\": ..., \"image_local\": ...}}}}")
    columns: dict[str, list] = {"doc_id": list(data), "title": [], "image_local": []}
    extras: dict[str, list] = {}
    for i, (pid, fields) in enumerate(data.items()):
        if not isinstance(fields, dict):
            raise DataError(f"{path}: product {pid!r}: expected an object with title and image_local, got {type(fields).__name__}")
        columns["title"].append(_text_or_none(fields.get("title")))
        columns["image_local"].append(_text_or_none(fields.get("image_local", fields.get("image"))))
        for key, value in fields.items():
            if key in FIELD_KEYS or key == "image":
                continue
            if key not in extras:
                extras[key] = [None] * i
            extras[key].append(value)
        for key, values in extras.items():
            if len(values) < i + 1:
                values.append(None)
    arrays = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    for key, values in extras.items():
        try:
            arrays[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as JSON text
            arrays[key] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], pa.string())
    return pa.table(arrays)


def _text_or_none(value) -> str | None:
    if value is None or (isinstance(value, str) and value == ""):
        return None
    return value if isinstance(value, str) else str(value)


def _documents(tables: Mapping[str, pa.Table], root: Path, images_root: Path | None) -> dict[str, Documents]:
    """Documents per corpus; image paths of both corpora are resolved together (one image root)."""
    refs = {name: t["image_local"].to_pylist() for name, t in tables.items()}
    flat = resolve_image_paths([r for name in tables for r in refs[name]], root, images_root)
    out, start = {}, 0
    for name, table in tables.items():
        n = table.num_rows
        extra = {c: table[c].to_pylist() for c in table.column_names if c not in ("doc_id", *FIELD_KEYS)}
        docs = make_documents(table["doc_id"].to_pylist(), table["title"].to_pylist(), flat[start:start + n], extra)
        out[name] = Documents(docs, ImageStore())
        start += n
    return out


def _check_in_corpus(pairs: pd.DataFrame, docs: Documents, path: Path, corpus: str) -> None:
    missing = ~member_mask(pairs["doc_id"], docs.ids)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"{path} row {row + 1}: product_id {pairs['doc_id'].iloc[row]!r} is not in {corpus}.json; "
            f"expected every product of this split in {corpus}"
        )


# The reference evaluation keys ground truth by the query text followed by this separator.
REFERENCE_KEY_SUFFIX = "_{!@#~}_"


def plain_query_key(key: str) -> str:
    """A ground-truth query key without the reference's suffix: "red dress_{!@#~}_" -> "red dress"."""
    return key[: -len(REFERENCE_KEY_SUFFIX)] if key.endswith(REFERENCE_KEY_SUFFIX) else key


def read_ground_truth(path: Path, docs: Documents, corpus: str) -> dict[str, dict[str, int]]:
    """A released ground-truth file: {query key: {product_id: integer grade}}, ids checked.

    Keys are query ids or texts, plain or in the reference's "<query>_{!@#~}_" form (read as plain).
    """
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{query: {{product_id: grade}}}}")
    known = set(docs.ids)
    out: dict[str, dict[str, int]] = {}
    for query, grades in data.items():
        if not isinstance(grades, dict):
            raise DataError(f"{path}: query {query!r}: expected an object {{product_id: grade}}")
        row = {}
        for pid, grade in grades.items():
            if pid not in known:
                raise DataError(f"{path}: query {query!r}: unknown product_id {pid!r} (not in {corpus}.json)")
            if (isinstance(grade, bool) or not isinstance(grade, (int, float)) or not math.isfinite(grade)
                    or grade != int(grade)):
                raise DataError(f"{path}: query {query!r}, product_id {pid!r}: grade {grade!r}, expected an integer")
            row[pid] = int(grade)
        key = plain_query_key(str(query))
        if key in out:
            raise DataError(f"{path}: query {key!r} appears twice (plain and with the {REFERENCE_KEY_SUFFIX!r} suffix)")
        out[key] = row
    return out


# ----------------------------------------------------------------------------------------- writing


def write_marqo(
    dataset: Dataset,
    out: str | Path,
    *,
    extra_files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `dataset` in the Marqo-GS layout at `out`, atomically; returns `out`.

    Everything is built in a temporary sibling folder and renamed into place, so an error leaves
    nothing behind (and an existing folder untouched unless the write succeeds with overwrite=True).
    Images behind a non-file store are written to images/<safe doc id>.<ext> and referenced by
    relative path; file-backed images are referenced by absolute path. Same input, same bytes.
    """
    out = Path(out)
    _check_writable(dataset, out, overwrite)
    with atomic_folder(out) as tmp:
        refs = {name: _image_refs(dataset.corpora[name], tmp) for name in CORPORA}
        for name in CORPORA:
            _write_corpus(dataset.corpora[name].table, refs[name], tmp / f"{name}.json")
        for split in SPLITS:
            corpus = SPLIT_CORPUS[split]
            _write_split_csv(dataset.pairs[split], dataset.corpora[corpus].table, refs[corpus],
                             tmp / f"{SPLIT_STEMS[split]}.csv", split, corpus)
        for (split, kind), gt in sorted(dataset.ground_truth.items()):
            _write_json_lines(tmp / f"{SPLIT_STEMS[split]}_gt_{kind}.json",
                              {str(q): {str(d): int(g) for d, g in grades.items()} for q, grades in gt.items()})
        for rel, data in sorted((extra_files or {}).items()):
            target = _inside(tmp, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return out


def _check_writable(dataset: Dataset, out: Path, overwrite: bool) -> None:
    missing = [s for s in SPLITS if s not in dataset.pairs]
    if missing:
        raise GclError(f"cannot write the Marqo-GS layout: split {missing[0]!r} is missing (it needs all of {', '.join(SPLITS)})")
    wrong = [s for s in SPLITS if dataset.split_corpus.get(s) != SPLIT_CORPUS[s]]
    if wrong:
        raise GclError(f"cannot write the Marqo-GS layout: split {wrong[0]!r} searches "
                       f"{dataset.split_corpus.get(wrong[0])!r}, the layout fixes it to {SPLIT_CORPUS[wrong[0]]!r}")
    for name in CORPORA:
        if name not in dataset.corpora:
            raise GclError(f"cannot write the Marqo-GS layout: corpus {name!r} is missing")
    if out.exists() and not overwrite:
        raise GclError(f"{out}: already exists; expected a new folder (or pass --overwrite)")
    if out.exists() and not out.is_dir():
        raise GclError(f"{out}: exists and is not a folder")


def _inside(folder: Path, rel: str) -> Path:
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise GclError(f"extra file {rel!r}: expected a relative path inside the dataset folder")
    target = folder.joinpath(*parts)
    if target.exists():
        raise GclError(f"extra file {rel!r}: would replace a file of the dataset")
    return target


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(doc_id: str) -> str:
    """A file name for a doc id: itself when safe, else a cleaned prefix plus a hash (no collisions)."""
    clean = _UNSAFE.sub("_", doc_id)[:80]
    if clean == doc_id and not doc_id.startswith("."):
        return doc_id
    return f"{clean.lstrip('.') or 'doc'}-{hashlib.sha1(doc_id.encode()).hexdigest()[:10]}"


def sniff_extension(data: bytes) -> str:
    """File extension from the image bytes' magic number (png, jpg, gif, webp, bmp; else img)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    return "img"


def _image_refs(docs: Documents, folder: Path) -> list[str | None]:
    """The image_local value per document, writing image bytes where the store is not file-backed."""
    refs = docs.image_refs()
    if docs.images.is_file_backed():
        return [None if r is None else os.path.abspath(r) for r in refs]
    images = folder / "images"
    images.mkdir(exist_ok=True)
    out: list[str | None] = []
    for doc_id, ref in track(zip(docs.ids, refs), "writing images", total=len(refs)):
        if ref is None:
            out.append(None)
            continue
        data = docs.images.read_bytes(ref)
        name = f"{safe_name(str(doc_id))}.{sniff_extension(data)}"
        with open(images / name, "wb") as fh:
            fh.write(data)
        out.append(f"images/{name}")
    return out


def _json_value(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if _missing(value):
        return None
    return value


def _write_corpus(table: pd.DataFrame, refs: list[str | None], path: Path) -> None:
    extra_cols = [c for c in table.columns if c not in ("title", "image")]
    titles = [None if _missing(t) else str(t) for t in table["title"].tolist()]
    extras = {c: table[c].tolist() for c in extra_cols}
    objects = {}
    for i, doc_id in enumerate(table.index.tolist()):
        obj = {"title": titles[i], "image_local": refs[i]}
        for c in extra_cols:
            obj[c] = _json_value(extras[c][i])
        objects[str(doc_id)] = obj
    _write_json_lines(path, objects)


def _write_json_lines(path: Path, obj: Mapping[str, object]) -> None:
    """A JSON object with one top-level entry per line: valid JSON, readable, diff-friendly."""
    lines = [f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}" for k, v in obj.items()]
    path.write_text("{\n" + ",\n".join(lines) + ("\n}\n" if lines else "}\n"), encoding="utf-8")


def _write_split_csv(pairs: pd.DataFrame, docs: pd.DataFrame, refs: list[str | None], path: Path,
                     split: str, corpus: str) -> None:
    doc_ids = pairs["doc_id"].astype("str")
    where = docs.index.get_indexer(doc_ids.to_numpy(dtype=object))
    if (where < 0).any():
        bad = doc_ids.iloc[int(np.flatnonzero(where < 0)[0])]
        raise DataError(f"split {split}: doc_id {bad!r} is not in {corpus}; expected every pair's document in its corpus")
    titles = np.array([None if _missing(t) else str(t) for t in docs["title"].tolist()], dtype=object)
    images = np.array(refs, dtype=object)
    score = pairs["score"].to_numpy(dtype=np.float64)
    integral = bool(np.all(np.isfinite(score)) and np.all(score == np.round(score)))
    columns = {
        "query_id": pa.array(pairs["query_id"].astype("str").to_numpy(dtype=object), pa.string()),
        "query": pa.array(pairs["query"].astype("str").to_numpy(dtype=object), pa.string()),
        "product_id": pa.array(doc_ids.to_numpy(dtype=object), pa.string()),
        "title": pa.array(titles[where] if len(where) else [], pa.string()),
        "image_local": pa.array(images[where] if len(where) else [], pa.string()),
        "score_linear": pa.array(score.astype(np.int64) if integral else score),
    }
    if integral and len(score) and score.min() >= 1 and score.max() <= 100:
        columns["position"] = pa.array(101 - score.astype(np.int64))
    pacsv.write_csv(pa.table(columns), path, write_options=pacsv.WriteOptions(quoting_style="needed"))
