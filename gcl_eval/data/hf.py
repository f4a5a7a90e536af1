"""The Hugging Face parquet layout of Marqo-GS-10M, and images kept inside parquet files.

Per split one or more parquet files named `<split>.parquet`, `<split>-*.parquet`,
`data/<split>-*.parquet` or `default/<split>/*.parquet` (the Hub's parquet export), with HF split
names in_domain, novel_document (our novel_corpus; the name novel_corpus is accepted too),
novel_query and zero_shot; a snapshot may hold only some of them. Columns used: query, product_id, the score
column (score_linear), query_id when present, title and image when present. `image` is either raw
bytes or the struct {bytes, path} that the `datasets` Image feature writes. Products of in_domain and
novel_query form corpus_1, those of novel_document and zero_shot corpus_2; a product's title and
image come from its first row. Image bytes stay in the parquet files: documents hold
"<file>#<row>" references that a ParquetImageStore reads on demand.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gcl_eval.data.dataset import SPLIT_CORPUS, SPLITS, BytesImageStore, Dataset, Documents, make_documents
from gcl_eval.data.image_paths import resolve_image_paths
from gcl_eval.data.pairs import RowLocator, canonical_pairs, optional_column, pick_column
from gcl_eval.util.errors import DataError

HF_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "in_domain": ("in_domain",),
    "novel_query": ("novel_query",),
    "novel_corpus": ("novel_document", "novel_corpus"),
    "zero_shot": ("zero_shot",),
}


SPLIT_FILE_PATTERNS = ("{name}.parquet", "{name}-*.parquet", "data/{name}-*.parquet", "default/{name}/*.parquet")


def split_files(root: Path, name: str) -> list[Path]:
    """The parquet files of one HF split name, sorted (shards in order)."""
    found: set[Path] = set()
    for pattern in SPLIT_FILE_PATTERNS:
        found |= set(root.glob(pattern.format(name=name)))
    return sorted(found)


def find_hf_files(root: Path) -> dict[str, list[Path]]:
    """Our split name -> its parquet files, for the splits that have any."""
    out = {}
    for split, names in HF_SPLIT_NAMES.items():
        for name in names:
            files = split_files(root, name)
            if files:
                out[split] = files
                break
    return out


def read_hf(root: str | Path, *, score_column: str = "score_linear") -> Dataset:
    """Read the HF parquet layout (see module docstring) into a Dataset of the splits present.

    A snapshot holding only some splits reads those (`extra["missing_splits"]` names the others);
    a corpus is then made of the products of the splits present only.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: missing dataset folder")
    files = find_hf_files(root)
    if not files:
        looked = ", ".join(p.format(name="<split>") for p in SPLIT_FILE_PATTERNS)
        raise DataError(f"{root}: no parquet file of any split ({', '.join(n[0] for n in HF_SPLIT_NAMES.values())}); "
                        f"looked for {looked}")
    splits = [s for s in SPLITS if s in files]
    store = ParquetImageStore(root)
    pairs, fields = {}, {}
    for split in splits:
        pairs[split], fields[split] = read_parquet_pairs(files[split], root, store, score_column=score_column)
    corpora = {}
    for corpus in sorted({SPLIT_CORPUS[s] for s in splits}):
        parts = [fields[s] for s in splits if SPLIT_CORPUS[s] == corpus]
        corpora[corpus] = documents_from_rows(pd.concat(parts, ignore_index=True), store)
    extra = {"format": "hf", "score_column": score_column}
    if len(splits) < len(SPLITS):
        extra["missing_splits"] = [s for s in SPLITS if s not in files]
    return Dataset(name=root.resolve().name, pairs=pairs, corpora=corpora,
                   split_corpus={s: SPLIT_CORPUS[s] for s in splits}, root=root, extra=extra)


def read_parquet_pairs(files: Sequence[Path], root: Path, store: "ParquetImageStore", *,
                       score_column: str = "score_linear", doc_columns: Sequence[str] = ("product_id",),
                       score_columns: Sequence[str] | None = None, image_columns: Sequence[str] = ("image",),
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairs of one split plus (doc_id, title, image ref) of each document's first row in the split.

    Titles and image references are materialised for those first rows only (a product appears in
    many rows of the full dataset).
    """
    tables, images, parts = [], [], []
    labels: dict[str, str] = {}
    for path in files:
        pf = _open(path)
        names = pf.schema_arrow.names
        columns = {
            "query": pick_column(names, ["query"], str(path)),
            "doc_id": pick_column(names, list(doc_columns), str(path)),
            "score": pick_column(names, list(score_columns or [score_column]), str(path)),
            "query_id": optional_column(names, ["query_id"]),
            "title": optional_column(names, ["title"]),
        }
        table = pf.read(columns=sorted({c for c in columns.values() if c is not None}))
        tables.append(pa.table({role: table[name] for role, name in columns.items() if name is not None}))
        labels.update({role: name for role, name in columns.items() if name is not None})
        images.append(_ImageColumn(pf, path, root, optional_column(names, list(image_columns)), store))
        parts.append((str(path), table.num_rows))
    table = pa.concat_tables(tables, promote_options="permissive")
    pairs = canonical_pairs(table, locate=RowLocator(parts), query="query", doc_id="doc_id", score="score",
                            query_id="query_id" if "query_id" in table.column_names else None, labels=labels)
    first = np.flatnonzero(~pairs["doc_id"].duplicated().to_numpy())
    titles = (pc.take(table["title"], pa.array(first)).to_pylist() if "title" in table.column_names
              else [None] * len(first))
    starts = np.cumsum([0] + [n for _, n in parts])
    owner = np.searchsorted(starts, first, side="right") - 1
    refs: list[str | None] = [None] * len(first)
    for f, column in enumerate(images):
        where = np.flatnonzero(owner == f)
        for i, ref in zip(where, column.refs(first[where] - starts[f])):
            refs[i] = ref
    rows = pd.DataFrame({"doc_id": pairs["doc_id"].to_numpy(dtype=object)[first],
                         "title": pd.Series(titles, dtype=object), "image": pd.Series(refs, dtype=object)})
    return pairs, rows


def documents_from_rows(rows: pd.DataFrame, store) -> Documents:
    """One document per doc_id, fields from its first row; empty titles count as missing."""
    first = rows.drop_duplicates("doc_id", keep="first")
    titles = [t if isinstance(t, str) and t != "" else None for t in first["title"].tolist()]
    return Documents(make_documents(first["doc_id"].tolist(), titles, first["image"].tolist()), store)


class _ImageColumn:
    """The image column of one parquet file: image references for chosen rows, None where absent.

    Bytes (or {bytes, path} structs) give "<file>#<row>" references for a ParquetImageStore; text
    gives paths, relative ones resolved against the file's folder.
    """

    def __init__(self, pf: pq.ParquetFile, path: Path, root: Path, column: str | None, store: "ParquetImageStore"):
        self.path, self.kind = path, "none"
        if column is None:
            return
        kind = pf.schema_arrow.field(column).type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            self.kind, self.paths = "path", pf.read(columns=[column])[column]
        elif _is_image_type(kind):
            store.register(path, column)
            self.kind, self.present = "bytes", _image_present(pf, column)
            self.rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        else:
            raise DataError(f"{path}: column {column!r} has type {kind}, expected image bytes, "
                            "a {bytes, path} struct or a path")

    def refs(self, rows: np.ndarray) -> list[str | None]:
        if self.kind == "none":
            return [None] * len(rows)
        if self.kind == "path":
            return resolve_image_paths(pc.take(self.paths, pa.array(rows, pa.int64())).to_pylist(), self.path.parent)
        return [f"{self.rel}#{r}" if ok else None for r, ok in zip(rows.tolist(), self.present[rows].tolist())]


def _is_image_type(kind: pa.DataType) -> bool:
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return True
    return pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0


def _image_present(pf: pq.ParquetFile, column: str) -> np.ndarray:
    """Which rows hold image bytes; row groups whose statistics say 'no nulls' are not read."""
    leaf = _bytes_leaf(pf, column)
    out = np.ones(pf.metadata.num_rows, dtype=bool)
    start = 0
    for g in range(pf.metadata.num_row_groups):
        group = pf.metadata.row_group(g)
        stats = group.column(leaf).statistics if leaf is not None else None
        if stats is None or not stats.has_null_count or stats.null_count:
            values = _bytes_of(pf.read_row_group(g, columns=[column])[column])
            out[start:start + group.num_rows] = values.is_valid().to_numpy(zero_copy_only=False)
        start += group.num_rows
    return out


def _bytes_leaf(pf: pq.ParquetFile, column: str) -> int | None:
    schema = pf.metadata.schema
    for i in range(len(schema)):
        if schema.column(i).path in (column, f"{column}.bytes"):
            return i
    return None


def _bytes_of(values: pa.ChunkedArray) -> pa.Array:
    values = values.combine_chunks()
    if pa.types.is_struct(values.type):
        flat = pc.struct_field(values, "bytes")
        return pc.if_else(values.is_valid(), flat, pa.scalar(None, flat.type))
    return values


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: unreadable parquet file: {str(err).splitlines()[0]}") from None


class ParquetImageStore(BytesImageStore):
    """Image bytes read on demand from parquet files; a reference is "<file relative to root>#<row>".

    The last row group read per file is kept, so reading a corpus in row order reads each row group
    once. Picklable (for data-loader workers): open files are not part of the state.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._columns: dict[str, str] = {}
        self._setup()

    def _setup(self) -> None:
        super().__init__(self._read)
        self._lock = threading.Lock()
        self._files: dict[str, tuple[pq.ParquetFile, np.ndarray]] = {}
        self._group: dict[str, tuple[int, pa.Array]] = {}

    def __getstate__(self):
        return {"root": self.root, "columns": dict(self._columns)}

    def __setstate__(self, state) -> None:
        self.root = state["root"]
        self._columns = state["columns"]
        self._setup()

    def has_images(self) -> bool:
        """True once a parquet file with an image bytes column is registered."""
        return bool(self._columns)

    def register(self, path: Path, column: str) -> None:
        rel = path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        self._columns[rel] = column

    def _read(self, ref: str) -> bytes:
        rel, _, row_text = ref.rpartition("#")
        if rel not in self._columns or not row_text.isdigit():
            raise KeyError(ref)
        row = int(row_text)
        with self._lock:
            if rel not in self._files:
                pf = pq.ParquetFile(self.root / rel)
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
                self._files[rel] = (pf, np.cumsum([0] + sizes))
            pf, starts = self._files[rel]
            if not 0 <= row < starts[-1]:
                raise KeyError(ref)
            g = int(np.searchsorted(starts, row, side="right")) - 1
            cached = self._group.get(rel)
            if cached is None or cached[0] != g:
                values = _bytes_of(pf.read_row_group(g, columns=[self._columns[rel]])[self._columns[rel]])
                cached = self._group[rel] = (g, values)
            value = cached[1][row - int(starts[g])].as_py()
        if value is None:
            raise KeyError(ref)
        return value
