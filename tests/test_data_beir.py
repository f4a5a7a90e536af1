"""BEIR-style collections: one split, ids as text, grades <= 0 dropped, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcl_eval.data.beir import read_beir
from gcl_eval.data.check import check_dataset
from gcl_eval.data.io import read_dataset
from gcl_eval.util.errors import DataError, GclError


def make_beir_folder(root: Path, *, numeric_id: bool = False) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "001", "title": "Sofa, \"grey\"", "text": "A three-seat sofa.", "metadata": {"x": 1}},
        {"_id": 2 if numeric_id else "2", "title": "", "text": "Mug — ceramic, 350 ml"},
        {"_id": "d3", "title": "Lamp", "text": "Brass lamp."},
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in corpus) + "\n",
                                       encoding="utf-8")
    queries = [{"_id": "q1", "text": "grey sofa"}, {"_id": "q2", "text": "mug"}, {"_id": "q3", "text": "unjudged"}]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\t001\t2\nq1\td3\t0\nq2\t2\t1\nq2\t001\t-1\n")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t3\n")
    return root


@pytest.mark.parametrize("numeric_id", [False, True])
def test_reads_one_split(tmp_path, numeric_id):
    ds = read_beir(make_beir_folder(tmp_path / "b", numeric_id=numeric_id))
    assert ds.splits == ["zero_shot"] and ds.split_corpus == {"zero_shot": "corpus_2"}
    pairs = ds.pairs["zero_shot"]
    assert pairs[["query_id", "query", "doc_id"]].values.tolist() == [["q1", "grey sofa", "001"],
                                                                    ["q2", "mug", "2"]]
    assert pairs["score"].tolist() == [2.0, 1.0]  # grades <= 0 dropped
    docs = ds.corpora["corpus_2"]
    assert list(docs.ids) == ["001", "2", "d3"]
    assert docs.titles() == ['Sofa, "grey"', "Mug — ceramic, 350 ml", "Lamp"]  # empty title -> text
    assert docs.table.at["001", "text"] == "A three-seat sofa."
    assert docs.image_refs() == [None, None, None]
    assert check_dataset(ds) == {"splits": {"zero_shot": {"pairs": 2, "queries": 2, "docs": 2,
                                                          "corpus": "corpus_2", "corpus_size": 3}}}


def test_other_qrels_and_split_name(tmp_path):
    root = make_beir_folder(tmp_path / "b")
    ds = read_beir(root, qrels="dev", split="novel_query")
    assert ds.split_corpus == {"novel_query": "corpus_1"} and ds.pairs["novel_query"]["doc_id"].tolist() == ["d3"]
    assert read_dataset(root).extra["format"] == "beir"
    with pytest.raises(GclError, match="unknown split 'train'; expected one of in_domain"):
        read_beir(root, split="train")
    with pytest.raises(DataError, match=r"qrels/train\.tsv: missing file \(qrels files found: dev, test\)"):
        read_beir(root, qrels="train")


@pytest.mark.parametrize(
    "target, text, pattern",
    [
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\t001\t2\nq9\t001\t1\n",
         r"test\.tsv row 2: query-id 'q9' is not in queries\.jsonl"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\tnope\t2\n", r"test\.tsv row 1: corpus-id 'nope' is not in"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\t001\thigh\n",
         r"test\.tsv row 1: score 'high' is not a finite number"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\t001\t1\nq1\t001\t2\n",
         r"test\.tsv row 2: duplicate \(query, corpus-id\) pair"),
        ("qrels/test.tsv", "query-id\tdoc\tscore\nq1\t001\t1\n",
         r"test\.tsv: missing column 'corpus-id' \(also accepted: 'corpus_id', 'doc_id'\)"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\t001\t0\n", r"test\.tsv: no judgement with a grade > 0"),
        ("corpus.jsonl", '{"_id": "001", "title": "a"}\n{"_id": "2", "title": \n', r"corpus\.jsonl line 2: unreadable JSON"),
        ("corpus.jsonl", '{"_id": "001"}\n{"title": "x"}\n', r"corpus\.jsonl (line|row) 2: (missing|empty '?)_id"),
        ("queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n',
         r"queries\.jsonl line 2: duplicate _id"),
    ],
)
def test_bad_input(tmp_path, target, text, pattern):
    root = make_beir_folder(tmp_path / "b")
    (root / target).write_text(text)
    with pytest.raises(DataError, match=pattern):
        read_beir(root)


def test_missing_files(tmp_path):
    root = make_beir_folder(tmp_path / "b")
    (root / "queries.jsonl").unlink()
    with pytest.raises(DataError, match=r"queries\.jsonl: missing file"):
        read_beir(root)
