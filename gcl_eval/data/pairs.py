"""Turning a source table into the canonical pairs frame, with one-line errors for bad rows.

The canonical pairs frame has columns query_id, query, doc_id (pandas `str` dtype, the pandas 3
default string type) and score (float64), one row per (query, document). Every reader goes through
`canonical_pairs`, so every format gets the same checks: no empty ids or queries, finite numeric
scores, no duplicate (query, document) rows, one text per query_id.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gcl_eval.data.dataset import query_id_from_text
from gcl_eval.util.errors import DataError


class RowLocator:
    """Maps a row of a table concatenated from several files to 'FILE row N' (N 1-based, data rows)."""

    def __init__(self, parts: Sequence[tuple[str, int]]):
        self.names = [name for name, _ in parts]
        self.starts = np.cumsum([0] + [n for _, n in parts])

    @classmethod
    def single(cls, name: str, n_rows: int) -> "RowLocator":
        return cls([(name, n_rows)])

    def where(self, index: int) -> str:
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        return f"{self.names[part]} row {index - self.starts[part] + 1}"


def pick_column(columns: Sequence[str], candidates: Sequence[str], source: str) -> str:
    """The first of `candidates` present in `columns`, else a DataError naming all of them."""
    for name in candidates:
        if name in columns:
            return name
    also = f" (also accepted: {', '.join(repr(c) for c in candidates[1:])})" if len(candidates) > 1 else ""
    found = ", ".join(columns) if columns else "none"
    raise DataError(f"{source}: missing column {candidates[0]!r}{also}; columns found: {found}")


def optional_column(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((name for name in candidates if name in columns), None)


def canonical_pairs(
    table: pa.Table,
    *,
    locate: RowLocator,
    query: str,
    doc_id: str,
    score: str,
    query_id: str | None = None,
    doc_label: str = "product_id",
    labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Validate `table` and return the canonical pairs frame (see module docstring).

    Without a query_id column, ids are derived from the query text (`query_id_from_text`).
    `labels` maps a column of `table` to the name messages use (the source file's column name).
    """
    names = dict(labels or {})
    queries = text_column(table[query], locate, names.get(query, query))
    docs = text_column(table[doc_id], locate, names.get(doc_id, doc_id))
    scores = score_column(table[score], locate, names.get(score, score))
    if query_id is None:
        qids = derived_query_ids(queries)
    else:
        qids = text_column(table[query_id], locate, names.get(query_id, query_id))
        _check_one_text_per_id(qids, queries, locate)
    frame = pa.table({"query_id": qids, "query": queries, "doc_id": docs, "score": scores})
    _check_duplicates(frame, locate, doc_label)
    out = frame.to_pandas()
    for name in ("query_id", "query", "doc_id"):
        out[name] = out[name].astype("str")
    return out


def text_column(column: pa.ChunkedArray, locate: RowLocator, name: str) -> pa.ChunkedArray:
    """A string column without nulls or empty strings (numbers from a typed source become text)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"{locate.where(0)}: column {name!r} has type {column.type}, expected text") from None
    empty = pc.or_kleene(column.is_null(), pc.equal(pc.utf8_length(column), 0))
    if pc.any(empty).as_py():
        raise DataError(f"{locate.where(_first_true(empty))}: empty {name!r}, expected a value")
    return column


def score_column(column: pa.ChunkedArray, locate: RowLocator, name: str) -> pa.ChunkedArray:
    """A float64 score column; a missing, non-numeric, NaN or infinite value is a DataError."""
    try:
        values = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = None
    if values is not None and values.null_count == 0 and pc.all(pc.is_finite(values)).as_py() in (True, None):
        return values
    raw = column.to_pandas()
    numbers = pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy()
    bad_rows = np.flatnonzero(~np.isfinite(numbers))
    if not len(bad_rows):  # text arrow does not parse but Python does, e.g. " 5"
        return pa.chunked_array([pa.array(numbers, pa.float64())])
    bad = int(bad_rows[0])
    value = column[bad].as_py()
    what = "missing" if value is None else f"{value!r} is not a finite number"
    raise DataError(f"{locate.where(bad)}: {name} {what}, expected a number")


def derived_query_ids(queries: pa.ChunkedArray) -> pa.Array:
    """query_id_from_text for each row, hashing each distinct query once."""
    encoded = pc.dictionary_encode(queries).combine_chunks()
    ids = pa.array([query_id_from_text(q) for q in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(ids, encoded.indices)


def _check_one_text_per_id(qids: pa.ChunkedArray, queries: pa.ChunkedArray, locate: RowLocator) -> None:
    table = pa.table({"qid": qids, "q": queries})
    counts = table.group_by("qid").aggregate([("q", "count_distinct")])
    if pc.max(counts["q_count_distinct"]).as_py() in (None, 1):
        return
    frame = table.to_pandas()
    first_text = frame.groupby("qid", sort=False)["q"].transform("first")
    bad = int(np.flatnonzero((frame["q"] != first_text).to_numpy())[0])
    raise DataError(
        f"{locate.where(bad)}: query_id {frame['qid'].iloc[bad]!r} has the query text "
        f"{frame['q'].iloc[bad]!r} but an earlier row gives it {first_text.iloc[bad]!r}; expected one text per id"
    )


def _check_duplicates(frame: pa.Table, locate: RowLocator, doc_label: str) -> None:
    if frame.group_by(["query_id", "doc_id"]).aggregate([]).num_rows == frame.num_rows:
        return
    pdf = frame.select(["query_id", "doc_id"]).to_pandas()
    second = int(np.flatnonzero(pdf.duplicated(keep="first").to_numpy())[0])
    qid, did = pdf["query_id"].iloc[second], pdf["doc_id"].iloc[second]
    first = int(np.flatnonzero(((pdf["query_id"] == qid) & (pdf["doc_id"] == did)).to_numpy())[0])
    text = frame["query"][second].as_py()
    raise DataError(
        f"{locate.where(second)}: duplicate (query, {doc_label}) pair (query {text!r}, {doc_label} {did!r}), "
        f"first seen at {locate.where(first)}; expected one row per pair"
    )


def member_mask(values, allowed) -> np.ndarray:
    """Boolean array: which of `values` (a text Series, Index or sequence) are among `allowed`.

    pyarrow's hash lookup; pandas' isin on arrow-backed strings against Python objects is ~10x slower.
    """
    haystack = pa.array(list(allowed) if isinstance(allowed, (set, frozenset)) else np.asarray(allowed, dtype=object),
                        pa.string())
    needles = pa.array(np.asarray(values, dtype=object), pa.string())
    return pc.is_in(needles, value_set=haystack).to_numpy(zero_copy_only=False)


def _first_true(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])
