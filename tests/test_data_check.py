"""check_dataset: the per-split summary and every violation of the quadruple structure."""

from __future__ import annotations

import pandas as pd
import pytest

from gcl_eval.data.check import check_dataset
from gcl_eval.data.dataset import SPLITS, Documents, ImageStore, make_documents
from gcl_eval.data.split import build_quadruple_split
from gcl_eval.util.errors import DataError


def small_dataset(tmp_path=None):
    rows = [(f"q{q}", f"query {q}", f"d{(q * 7 + k) % 50:03d}", 100.0 - k) for q in range(20) for k in range(8)]
    pairs = pd.DataFrame(rows, columns=["query_id", "query", "doc_id", "score"]).astype(
        {"query_id": "str", "query": "str", "doc_id": "str"})
    ids = [f"d{i:03d}" for i in range(50)]
    images = [str(tmp_path / f"{i}.png") for i in ids] if tmp_path else [None] * 50
    if tmp_path:
        for path in images:
            open(path, "wb").close()
    docs = Documents(make_documents(ids, [f"title {i}" for i in ids], images), ImageStore())
    return build_quadruple_split(pairs, docs, seed=0)


def test_summary_has_exactly_the_documented_shape():
    ds = small_dataset()
    summary = check_dataset(ds)
    assert list(summary) == ["splits"] and list(summary["splits"]) == list(SPLITS)
    for split, row in summary["splits"].items():
        assert list(row) == ["pairs", "queries", "docs", "corpus", "corpus_size"]
        pairs = ds.pairs[split]
        assert row["pairs"] == len(pairs) and row["queries"] == pairs["query_id"].nunique()
        assert row["docs"] == pairs["doc_id"].nunique() and row["corpus"] == ds.split_corpus[split]
        assert row["corpus_size"] == len(ds.corpus_for(split))
        assert all(type(row[k]) is int for k in ("pairs", "queries", "docs", "corpus_size"))


def test_eval_query_among_train_queries():
    ds = small_dataset()
    leaked = ds.pairs["in_domain"].iloc[:1].copy()
    ds.pairs["zero_shot"] = pd.concat([ds.pairs["zero_shot"], leaked.assign(doc_id=ds.pairs["zero_shot"]["doc_id"].iloc[0])],
                                      ignore_index=True)
    with pytest.raises(DataError, match=r"split zero_shot row \d+: eval query 'query \d+' \(query_id 'q\d+'\) is "
                                        r"also a train query of in_domain"):
        check_dataset(ds)


def test_product_in_both_corpora():
    ds = small_dataset()
    c1 = ds.corpora["corpus_1"].table
    ds.corpora["corpus_2"] = Documents(pd.concat([ds.corpora["corpus_2"].table, c1.iloc[:1]]))
    with pytest.raises(DataError, match=rf"document '{c1.index[0]}' is in both corpus_1 and corpus_2"):
        check_dataset(ds)


def test_pair_outside_its_corpus():
    ds = small_dataset()
    ds.pairs["novel_query"].loc[1, "doc_id"] = ds.corpora["corpus_2"].ids[0]
    with pytest.raises(DataError, match=r"split novel_query row 2: document 'd\d+' is not in corpus_1, the corpus "
                                        r"this split searches"):
        check_dataset(ds)


def test_empty_split_and_duplicate_ids():
    ds = small_dataset()
    ds.pairs["novel_corpus"] = ds.pairs["novel_corpus"].iloc[:0]
    with pytest.raises(DataError, match="split novel_corpus is empty"):
        check_dataset(ds)
    ds = small_dataset()
    table = ds.corpora["corpus_1"].table
    ds.corpora["corpus_1"] = Documents(pd.concat([table, table.iloc[:1]]))
    with pytest.raises(DataError, match=r"corpus_1: document 'd\d+' appears more than once"):
        check_dataset(ds)


def test_missing_image_is_reported_only_when_checked(tmp_path):
    ds = small_dataset(tmp_path)
    assert check_dataset(ds, check_images=True)
    doc = ds.corpora["corpus_2"].ids[3]
    (tmp_path / f"{doc}.png").unlink()
    assert check_dataset(ds)
    with pytest.raises(DataError, match=rf"corpus_2: image of document '{doc}' not found: .*{doc}\.png$"):
        check_dataset(ds, check_images=True)
