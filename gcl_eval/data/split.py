"""The quadruple split (docs/data.md) built from any ranked pair table.

Queries are split train/eval (default 80/20) and documents corpus_1/corpus_2 (default 50/50), both
by a seeded permutation of the sorted distinct ids, so the result depends on the seed and the set of
ids, not on row order. Each pair then lands in exactly one split: (train, corpus_1) in_domain,
(eval, corpus_1) novel_query, (train, corpus_2) novel_corpus, (eval, corpus_2) zero_shot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gcl_eval.data.dataset import SPLIT_CORPUS, SPLITS, Dataset, Documents, ImageStore
from gcl_eval.data.hf import ParquetImageStore, documents_from_rows, read_parquet_pairs
from gcl_eval.data.image_paths import resolve_image_paths
from gcl_eval.data.pairs import RowLocator, canonical_pairs, member_mask, optional_column, pick_column
from gcl_eval.data.tables import read_csv
from gcl_eval.util.errors import DataError, GclError

DOC_ID_COLUMNS = ("doc_id", "product_id")
SCORE_COLUMNS = ("score", "score_linear")
IMAGE_COLUMNS = ("image", "image_local")


def build_quadruple_split(
    pairs: pd.DataFrame,
    documents: Documents,
    *,
    seed: int = 0,
    eval_query_fraction: float = 0.2,
    corpus_2_fraction: float = 0.5,
    name: str = "split",
) -> Dataset:
    """Split canonical pairs and their documents four ways (module docstring); seeded."""
    for label, value in (("eval_query_fraction", eval_query_fraction), ("corpus_2_fraction", corpus_2_fraction)):
        if not 0.0 < value < 1.0:
            raise GclError(f"{label} = {value}: expected a fraction strictly between 0 and 1")
    known = member_mask(pairs["doc_id"], documents.ids)
    if not known.all():
        bad = pairs["doc_id"].iloc[int(np.flatnonzero(~known)[0])]
        raise DataError(f"doc_id {bad!r} of the pairs is not among the documents")
    rng = np.random.default_rng(seed)
    eval_queries = _draw(sorted(pairs["query_id"].unique().tolist()), eval_query_fraction, rng, "queries")
    corpus_2 = _draw(sorted(str(d) for d in documents.ids), corpus_2_fraction, rng, "documents")
    is_eval = member_mask(pairs["query_id"], eval_queries)
    in_c2 = member_mask(pairs["doc_id"], corpus_2)
    masks = {
        "in_domain": ~is_eval & ~in_c2,
        "novel_query": is_eval & ~in_c2,
        "novel_corpus": ~is_eval & in_c2,
        "zero_shot": is_eval & in_c2,
    }
    out = {}
    for split in SPLITS:
        out[split] = pairs.loc[masks[split]].reset_index(drop=True)
        if out[split].empty:
            raise DataError(
                f"split {split} is empty: {pairs['query_id'].nunique()} queries and {len(documents)} documents "
                f"with seed {seed} give it no pair; expected more queries or documents per query"
            )
    table = documents.table
    second = member_mask(table.index, corpus_2)
    corpora = {"corpus_1": Documents(table.loc[~second], documents.images),
               "corpus_2": Documents(table.loc[second], documents.images)}
    return Dataset(name=name, pairs=out, corpora=corpora, split_corpus=dict(SPLIT_CORPUS),
                   extra={"split_seed": seed, "eval_query_fraction": eval_query_fraction,
                          "corpus_2_fraction": corpus_2_fraction})


def _draw(ids: list[str], fraction: float, rng: np.random.Generator, what: str) -> set[str]:
    if len(ids) < 2:
        raise DataError(f"only {len(ids)} distinct {what}; the quadruple split needs at least 2")
    k = min(max(int(round(len(ids) * fraction)), 1), len(ids) - 1)
    return {ids[i] for i in rng.permutation(len(ids))[:k]}


def read_pair_table(path: str | Path) -> tuple[pd.DataFrame, Documents]:
    """A CSV or parquet table of ranked pairs -> (canonical pairs, Documents).

    Columns: query, doc_id (or product_id), score (or score_linear), title and/or image (or
    image_local; a path relative to the table's folder, or bytes in parquet), optional query_id.
    A document's fields come from its first row.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".parquet", ".pq"):
        raise DataError(f"{path}: unknown table type {suffix or '(no suffix)'!r}; expected .csv, .tsv or .parquet")
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    if suffix in (".parquet", ".pq"):
        store = ParquetImageStore(path.parent)
        _require_doc_field(_parquet_columns(path), path)
        pairs, rows = read_parquet_pairs([path], path.parent, store, doc_columns=DOC_ID_COLUMNS,
                                         score_columns=SCORE_COLUMNS, image_columns=IMAGE_COLUMNS)
        return pairs, documents_from_rows(rows, store if store.has_images() else ImageStore())
    table = read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    cols = table.column_names
    _require_doc_field(cols, path)
    pairs = canonical_pairs(
        table, locate=RowLocator.single(str(path), table.num_rows),
        query=pick_column(cols, ["query"], str(path)), doc_id=pick_column(cols, DOC_ID_COLUMNS, str(path)),
        score=pick_column(cols, SCORE_COLUMNS, str(path)), query_id=optional_column(cols, ["query_id"]),
    )
    title, image = optional_column(cols, ["title"]), optional_column(cols, IMAGE_COLUMNS)
    n = table.num_rows
    rows = pd.DataFrame({
        "doc_id": pairs["doc_id"].to_numpy(dtype=object),
        "title": pd.Series(table[title].to_pylist() if title else [None] * n, dtype=object),
        "image": pd.Series(resolve_image_paths(table[image].to_pylist(), path.parent) if image else [None] * n,
                           dtype=object),
    })
    return pairs, documents_from_rows(rows, ImageStore())


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except Exception as err:  # noqa: BLE001 - any unreadable file is one bad-input line
        raise DataError(f"{path}: unreadable parquet file: {str(err).splitlines()[0]}") from None


def _require_doc_field(columns, path: Path) -> None:
    if optional_column(columns, ["title"]) is None and optional_column(columns, IMAGE_COLUMNS) is None:
        raise DataError(f"{path}: no document field; expected a 'title' column and/or an 'image' "
                        f"(or 'image_local') column; columns found: {', '.join(columns)}")
