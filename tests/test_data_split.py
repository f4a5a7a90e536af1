"""The quadruple split builder and the pair-table reader behind `gcl-eval data split`."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gcl_eval.data.check import check_dataset
from gcl_eval.data.dataset import EVAL_QUERY_SPLITS, SPLIT_CORPUS, SPLITS, TRAIN_QUERY_SPLITS
from gcl_eval.data.split import build_quadruple_split, read_pair_table
from gcl_eval.util.errors import DataError, GclError


def pair_table(n_queries=40, per_query=10, n_docs=120, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        for rank, d in enumerate(rng.choice(n_docs, per_query, replace=False)):
            rows.append({"query": f"query {q}, large", "product_id": f"{d:05d}", "score_linear": 100 - rank,
                         "title": f'Item {d}, "nice"\nsecond line', "image_local": f"img/{d}.png"})
    return pd.DataFrame(rows)


@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    pair_table().to_csv(path, index=False)
    return path


def test_read_pair_table_csv(table_csv):
    pairs, docs = read_pair_table(table_csv)
    assert list(pairs.columns) == ["query_id", "query", "doc_id", "score"] and len(pairs) == 400
    assert pairs["doc_id"].str.len().eq(5).all()  # leading zeros kept
    assert docs.table.at[pairs["doc_id"].iloc[0], "title"].endswith("\nsecond line")
    first = pairs["doc_id"].iloc[0]
    assert docs.table.at[first, "image"] == str(table_csv.parent / "img" / f"{int(first)}.png")
    assert docs.images.is_file_backed()


def test_read_pair_table_parquet_with_image_bytes(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (5, 6, 7)).save(buffer, format="PNG")
    table = pa.table({"query_id": ["a", "a", "b"], "query": ["x", "x", "y"], "doc_id": ["01", "02", "01"],
                      "score": [3.0, 2.0, 1.0], "image": [buffer.getvalue(), None, buffer.getvalue()]})
    pq.write_table(table, tmp_path / "pairs.parquet")
    pairs, docs = read_pair_table(tmp_path / "pairs.parquet")
    assert pairs["query_id"].tolist() == ["a", "a", "b"] and list(docs.ids) == ["01", "02"]
    assert docs.titles() == [None, None] and docs.table.at["02", "image"] is None
    assert docs.load_image("01").getpixel((0, 0)) == (5, 6, 7)


def test_split_is_disjoint_and_complete(table_csv):
    pairs, docs = read_pair_table(table_csv)
    ds = build_quadruple_split(pairs, docs, seed=1)
    assert sum(len(ds.pairs[s]) for s in SPLITS) == len(pairs)
    train = set().union(*(set(ds.pairs[s]["query_id"]) for s in TRAIN_QUERY_SPLITS))
    evaluation = set().union(*(set(ds.pairs[s]["query_id"]) for s in EVAL_QUERY_SPLITS))
    assert not train & evaluation and len(evaluation) == 8  # 20% of 40 queries
    c1, c2 = set(ds.corpora["corpus_1"].ids), set(ds.corpora["corpus_2"].ids)
    assert not c1 & c2 and c1 | c2 == set(docs.ids) and abs(len(c1) - len(c2)) <= 1
    for split in SPLITS:
        assert set(ds.pairs[split]["doc_id"]) <= set(ds.corpus_for(split).ids)
        assert ds.split_corpus[split] == SPLIT_CORPUS[split]
    assert check_dataset(ds)["splits"]["zero_shot"]["corpus"] == "corpus_2"


def test_split_is_seeded_and_independent_of_row_order(table_csv):
    pairs, docs = read_pair_table(table_csv)
    a = build_quadruple_split(pairs, docs, seed=3)
    b = build_quadruple_split(pairs, docs, seed=3)
    shuffled = pairs.sample(frac=1.0, random_state=0).reset_index(drop=True)
    c = build_quadruple_split(shuffled, docs, seed=3)
    d = build_quadruple_split(pairs, docs, seed=4)
    for split in SPLITS:
        pd.testing.assert_frame_equal(a.pairs[split], b.pairs[split])
        assert set(zip(a.pairs[split]["query_id"], a.pairs[split]["doc_id"])) == \
            set(zip(c.pairs[split]["query_id"], c.pairs[split]["doc_id"]))
    assert set(a.pairs["novel_query"]["query_id"]) != set(d.pairs["novel_query"]["query_id"])


def test_fractions(table_csv):
    pairs, docs = read_pair_table(table_csv)
    ds = build_quadruple_split(pairs, docs, eval_query_fraction=0.5, corpus_2_fraction=0.25)
    assert len(set(ds.pairs["novel_query"]["query_id"]) | set(ds.pairs["zero_shot"]["query_id"])) == 20
    assert len(ds.corpora["corpus_2"]) == round(len(docs) * 0.25)
    with pytest.raises(GclError, match=r"eval_query_fraction = 1.0: expected a fraction strictly between 0 and 1"):
        build_quadruple_split(pairs, docs, eval_query_fraction=1.0)


def test_empty_split_is_an_error(tmp_path):
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"query": ["a", "b"], "doc_id": ["1", "2"], "score": [1, 1], "title": ["x", "y"]}).to_csv(path, index=False)
    pairs, docs = read_pair_table(path)
    with pytest.raises(DataError, match=r"split \w+ is empty: 2 queries and 2 documents with seed 0"):
        build_quadruple_split(pairs, docs)
    with pytest.raises(DataError, match="only 1 distinct queries; the quadruple split needs at least 2"):
        build_quadruple_split(pairs.iloc[:1], docs)


@pytest.mark.parametrize(
    "frame, pattern",
    [
        ({"query": ["a"], "item": ["1"], "score": [1], "title": ["t"]},
         r"missing column 'doc_id' \(also accepted: 'product_id'\); columns found: query, item, score, title"),
        ({"query": ["a"], "doc_id": ["1"], "rank": [1], "title": ["t"]},
         r"missing column 'score' \(also accepted: 'score_linear'\)"),
        ({"text": ["a"], "doc_id": ["1"], "score": [1], "title": ["t"]}, r"missing column 'query'; columns found"),
        ({"query": ["a"], "doc_id": ["1"], "score": [1]},
         r"no document field; expected a 'title' column and/or an 'image' \(or 'image_local'\) column"),
        ({"query": ["a", "b"], "doc_id": ["1", "1"], "score": ["1", "x"], "title": ["t", "t"]},
         r"pairs\.csv row 2: score 'x' is not a finite number"),
        ({"query": ["a", "a"], "doc_id": ["1", "1"], "score": [1, 2], "title": ["t", "t"]},
         r"pairs\.csv row 2: duplicate \(query, product_id\) pair"),
    ],
)
def test_pair_table_bad_input(tmp_path, frame, pattern):
    path = tmp_path / "pairs.csv"
    pd.DataFrame(frame).to_csv(path, index=False)
    with pytest.raises(DataError, match=pattern):
        read_pair_table(path)


def test_pair_table_unknown_type_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"unknown table type '\.xlsx'; expected \.csv, \.tsv or \.parquet"):
        read_pair_table(tmp_path / "pairs.xlsx")
    with pytest.raises(DataError, match=r"pairs\.csv: missing file"):
        read_pair_table(tmp_path / "pairs.csv")
