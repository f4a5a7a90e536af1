"""BEIR-style collections: corpus.jsonl, queries.jsonl, qrels/<name>.tsv -> a one-split Dataset.

    corpus.jsonl    {"_id": str, "title": str, "text": str}
    queries.jsonl   {"_id": str, "text": str}
    qrels/test.tsv  header `query-id  corpus-id  score`, tab-separated

A BEIR collection is new queries over new documents for a model trained elsewhere, so its one split
is named zero_shot by default and searches corpus_2 (SPLIT_CORPUS); any split name can be chosen.
Grades <= 0 are dropped: the protocol treats every pair as relevant with its grade as the score.
A document's title is its title, or its text when the title is empty; the text is kept as the
extra column `text`. Queries without a positive judgement have no pairs and are not part of the split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from gcl_eval.data.dataset import SPLIT_CORPUS, SPLITS, Dataset, Documents, make_documents
from gcl_eval.data.pairs import RowLocator, canonical_pairs, member_mask, pick_column, text_column
from gcl_eval.data.tables import cached_table, read_csv
from gcl_eval.util.errors import DataError, GclError


def read_beir(root: str | Path, *, qrels: str = "test", split: str = "zero_shot") -> Dataset:
    """Read a BEIR-style folder into a Dataset with the single split `split`."""
    root = Path(root)
    if split not in SPLITS:
        raise GclError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise DataError(f"{root}: missing dataset folder")
    corpus = read_jsonl(root / "corpus.jsonl", ("_id", "title", "text"))
    queries = read_jsonl(root / "queries.jsonl", ("_id", "text"))
    for name, table in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        ids = text_column(table["_id"], RowLocator.single(str(root / name), table.num_rows), "_id")
        if pc.count_distinct(ids).as_py() != table.num_rows:
            dup = table["_id"].to_pandas().duplicated().to_numpy()
            raise DataError(f"{root / name} line {int(np.flatnonzero(dup)[0]) + 1}: duplicate _id, expected unique ids")
    pairs = _read_qrels(_qrels_path(root, qrels), queries)
    titles = [t if t else x for t, x in zip(corpus["title"].to_pylist(), corpus["text"].to_pylist())]
    docs = make_documents(corpus["_id"].to_pylist(), [t or None for t in titles], [None] * corpus.num_rows,
                          {"text": corpus["text"].to_pylist()})
    missing = ~member_mask(pairs["doc_id"], docs.index)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"{_qrels_path(root, qrels)} row {row + 1}: corpus-id {pairs['doc_id'].iloc[row]!r} "
                        "is not in corpus.jsonl")
    pairs = pairs[pairs["score"] > 0].reset_index(drop=True)
    if pairs.empty:
        raise DataError(f"{_qrels_path(root, qrels)}: no judgement with a grade > 0; expected at least one")
    corpus_name = SPLIT_CORPUS[split]
    return Dataset(name=root.resolve().name, pairs={split: pairs}, corpora={corpus_name: Documents(docs)},
                   split_corpus={split: corpus_name}, root=root, extra={"format": "beir", "qrels": qrels})


def _qrels_path(root: Path, name: str) -> Path:
    path = root / "qrels" / f"{name}.tsv"
    if not path.is_file():
        found = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise DataError(f"{path}: missing file (qrels files found: {', '.join(found) or 'none'})")
    return path


def _read_qrels(path: Path, queries: pa.Table):
    table = read_csv(path, delimiter="\t")
    cols = table.column_names
    locate = RowLocator.single(str(path), table.num_rows)
    qcol = pick_column(cols, ["query-id", "query_id"], str(path))
    dcol = pick_column(cols, ["corpus-id", "corpus_id", "doc_id"], str(path))
    scol = pick_column(cols, ["score"], str(path))
    qids = text_column(table[qcol], locate, qcol)
    where = pc.index_in(qids, value_set=queries["_id"].combine_chunks())
    if where.null_count:
        row = int(np.flatnonzero(where.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{locate.where(row)}: query-id {qids[row].as_py()!r} is not in queries.jsonl")
    texts = pc.take(queries["text"], where)
    if texts.null_count:
        row = int(np.flatnonzero(texts.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{locate.where(row)}: query {qids[row].as_py()!r} has no text in queries.jsonl")
    frame = pa.table({"query_id": qids, "query": texts, "doc_id": table[dcol], "score": table[scol]})
    return canonical_pairs(frame, locate=locate, query="query", doc_id="doc_id", score="score",
                           query_id="query_id", doc_label="corpus-id",
                           labels={"query_id": qcol, "doc_id": dcol, "score": scol})


def read_jsonl(path: Path, fields: tuple[str, ...]) -> pa.Table:
    """The named string fields of a JSON-lines file (ids as text); cached as parquet."""
    return cached_table(path, "jsonl:" + ",".join(fields), lambda p: _parse_jsonl(p, fields))


def _parse_jsonl(path: Path, fields: tuple[str, ...]) -> pa.Table:
    schema = pa.schema([(f, pa.string()) for f in fields])
    try:
        table = pajson.read_json(path, parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False))
        return table.select(list(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass  # numbers where strings were expected, or a bad line: parse in Python, naming the line
    columns: dict[str, list] = {f: [] for f in fields}
    try:
        _parse_lines(path, fields, columns)
    except UnicodeDecodeError:
        raise DataError(f"{path}: unreadable JSON lines: not UTF-8 text") from None
    return pa.table({f: pa.array(v, pa.string()) for f, v in columns.items()})


def _parse_lines(path: Path, fields: tuple[str, ...], columns: dict[str, list]) -> None:
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number}: unreadable JSON: {err.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path} line {number}: expected a JSON object")
            if obj.get("_id") is None:
                raise DataError(f"{path} line {number}: missing _id")
            for f in fields:
                value = obj.get(f)
                columns[f].append(None if value is None else value if isinstance(value, str) else json.dumps(value))
