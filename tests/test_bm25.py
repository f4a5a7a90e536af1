"""BM25 baseline: each backend against a hand-written formula, the ranking rules, the protocol.

The two backends against each other, and rank-bm25's own idf, are in tests/comparison/test_rank_bm25.py.
"""

from importlib.util import find_spec

import numpy as np
import pytest

from baselines import bm25 as bm25_module
from baselines.bm25 import BACKENDS, BM25Retriever, tokenize
from bm25_cases import SHOP, QUERIES, corpus, okapi_scores, tiny_dataset
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset
from gcl_eval.protocol.results import load_run, save_run
from gcl_eval.util.errors import GclError

EACH_BACKEND = [
    pytest.param(backend, marks=pytest.mark.skipif(find_spec(backend) is None, reason=f"{backend} is not installed"))
    for backend in BACKENDS
]


def test_tokenize_lowercases_splits_on_non_alphanumerics_and_drops_stop_words_on_request():
    assert tokenize("Nordic Wool-Rug, 4.6 stars (★3.9/5) snake_case") == [
        "nordic", "wool", "rug", "4", "6", "stars", "3", "9", "5", "snake", "case"]
    assert tokenize("Ｃａｆé MÜSLI") == ["café", "müsli"]  # NFKC folds full-width letters
    assert tokenize("the rug for a dog", stopwords=True) == ["rug", "dog"]
    assert tokenize(None) == [] and tokenize("") == [] and tokenize(" -- ") == []


@pytest.mark.parametrize("backend", EACH_BACKEND)
def test_okapi_scores_equal_the_formula(backend):
    titles = SHOP.titles()
    ids, scores = BM25Retriever(backend).search("in_domain", QUERIES, "c", SHOP, 10)
    for row, query in enumerate(QUERIES):
        expected = okapi_scores(titles, query)
        order = [i for i in np.lexsort((np.arange(10), -expected)) if expected[i] > 0]
        assert ids[row][ids[row] >= 0].tolist() == order
        np.testing.assert_allclose(scores[row][: len(order)], expected[order], rtol=1e-6)


@pytest.mark.parametrize("backend", EACH_BACKEND)
def test_a_term_in_most_documents_gets_the_epsilon_floor(backend):
    docs = corpus(["shoe red", "shoe blue", "shoe", "shoe green tall", "hat", "shoe shoe"])  # shoe: df 5 of 6
    expected = okapi_scores(docs.titles(), "shoe")
    assert expected[0] > 0  # the raw idf ln(1.5/5.5) is negative; the floor replaces it
    ids, scores = BM25Retriever(backend).search("s", ["shoe"], "c", docs, 6)
    assert ids[0].tolist() == [5, 2, 0, 1, 3, -1]
    np.testing.assert_allclose(scores[0][:5], expected[[5, 2, 0, 1, 3]], rtol=1e-6)


@pytest.mark.parametrize("backend", EACH_BACKEND)
def test_equal_scores_rank_the_lower_corpus_index_first(backend):
    docs = corpus(["red shoe", "blue shoe", "shoe red", "green hat", "red shoe", "red shoe big", "hat"])
    retriever = BM25Retriever(backend)
    ids, scores = retriever.search("s", ["red shoe", "shoe red"], "c", docs, 7)
    assert ids[0].tolist() == [0, 2, 4, 5, 1, -1, -1]
    assert scores[0][0] == scores[0][1] == scores[0][2] > scores[0][3] > scores[0][4] > 0
    np.testing.assert_array_equal(ids[0], ids[1])
    cut, _ = retriever.search("s", ["red shoe"], "c", docs, 2)  # the tie straddles the cut
    assert cut.tolist() == [[0, 2]]


@pytest.mark.parametrize("backend", EACH_BACKEND)
def test_only_matching_documents_are_returned_then_minus_one(backend):
    retriever = BM25Retriever(backend, tokenizer="alnum-en-stop")
    ids, scores = retriever.search("s", ["leather", "", "the of and", "unknownword", "LEATHER!"], "c", SHOP, 20)
    assert ids.shape == (5, 10) and ids.dtype == np.int64 and scores.dtype == np.float32  # k capped at N
    assert ids[0].tolist() == [6, 8] + [-1] * 8
    np.testing.assert_array_equal(ids[4], ids[0])
    assert (ids[1:4] == -1).all() and (scores[1:4] == 0).all() and (scores[0][2:] == 0).all()


@pytest.mark.parametrize("backend", EACH_BACKEND)
def test_documents_without_title_are_indexed_as_empty(backend):
    docs = corpus([None, "red wool rug", float("nan"), "red shoe", None])
    ids, scores = BM25Retriever(backend).search("s", ["red rug", ""], "c", docs, 5)
    assert ids.tolist() == [[1, 3, -1, -1, -1], [-1] * 5]
    expected = okapi_scores(["", "red wool rug", "", "red shoe", ""], "red rug")
    np.testing.assert_allclose(scores[0][:2], expected[[1, 3]], rtol=1e-6)
    untitled = corpus([None, None])
    ids, scores = BM25Retriever(backend).search("s", ["red"], "c", untitled, 10)
    assert ids.tolist() == [[-1, -1]] and scores.tolist() == [[0.0, 0.0]]


def test_bad_arguments_are_one_line_errors():
    cases = [dict(backend="lucene"), dict(method="bm25l"), dict(tokenizer="porter"), dict(k1=-1), dict(k1=0),
             dict(b=1.5), dict(k1=float("nan")), dict(delta=0.5)]
    for kwargs in cases:
        with pytest.raises(GclError) as err:
            BM25Retriever(**kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(GclError, match="unknown BM25 backend 'lucene'; expected one of bm25s, rank_bm25"):
        BM25Retriever("lucene")
    with pytest.raises(GclError, match="k must be a positive integer"):
        BM25Retriever().search("s", ["red"], "c", SHOP, 0)
    with pytest.raises(GclError, match="corpus c is empty"):
        BM25Retriever().search("s", ["red"], "c", corpus([]), 5)


def test_describe():
    assert BM25Retriever().describe() == {
        "preset": "bm25", "family": "bm25", "track": "text", "trains": False, "backend": "bm25s", "k1": 1.5,
        "b": 0.75, "tokenizer": "alnum", "method": "okapi", "epsilon": 0.25, "doc_fields": "title",
        "backend_version": bm25_module._version("bm25s")}
    info = BM25Retriever("rank_bm25", k1=1.2, b=0.5, method="bm25+").describe()
    assert (info["backend"], info["k1"], info["b"], info["delta"]) == ("rank_bm25", 1.2, 0.5, 1.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("synth") / "tiny")


def test_protocol_runs_end_to_end_and_indexes_each_corpus_once(tiny, tmp_path, monkeypatch):
    builds = []
    real_build = bm25_module._Vocabulary.build
    monkeypatch.setattr(bm25_module._Vocabulary, "build",
                        classmethod(lambda cls, tokens: builds.append(len(tokens)) or real_build(tokens)))
    evaluation = evaluate_dataset(BM25Retriever("bm25s"), tiny, EvalProtocol(top_k=100, queries_per_split=2000))
    loaded = load_run(save_run(evaluation.result, tmp_path / "bm25s", evaluation.runs))
    assert loaded.model["backend"] == "bm25s" and set(loaded.splits) == set(tiny.pairs)
    assert len(builds) == 2  # one per corpus
    for split in tiny.pairs:
        assert 0.05 < loaded.metric(split, "nDCG@10") < 1.0
