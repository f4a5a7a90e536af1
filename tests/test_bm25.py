"""BM25 baseline: both backends against each other and a hand-written formula, the ranking rules, the protocol."""

import math

import numpy as np
import pytest

from baselines import bm25 as bm25_module
from baselines.bm25 import BACKENDS, BM25Retriever, tokenize
from gcl_eval.data.dataset import Documents, make_documents
from gcl_eval.data.io import read_dataset
from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import write_synthetic
from gcl_eval.util.errors import GclError
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset
from gcl_eval.protocol.results import load_run, save_run


def corpus(titles) -> Documents:
    return Documents(make_documents([f"d{i}" for i in range(len(titles))], titles, [None] * len(titles)))


# Term counts chosen so that every query below ranks its matches with distinct scores.
SHOP = corpus([
    "red wool rug",                     # 0
    "Red red wool rug, large",          # 1
    "blue cotton shirt",                # 2
    "red cotton shirt slim fit",        # 3
    "green wool socks",                 # 4
    "wool wool wool blanket",           # 5
    "brown leather boots",              # 6
    "blue denim jacket",                # 7
    "red leather boots for hiking",     # 8
    "grey felt hat",                    # 9
])
QUERIES = ["red wool", "wool rug", "leather boots", "blue shirt", "red red cotton"]


def okapi_scores(titles, query, k1=1.5, b=0.75, epsilon=0.25):
    """BM25Okapi written out from its definition, in float64, as the oracle for both backends."""
    docs = [tokenize(t) for t in titles]
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    vocab = list(dict.fromkeys(t for d in docs for t in d))
    df = {t: sum(t in d for d in docs) for t in vocab}
    idf = {t: math.log((n - df[t] + 0.5) / (df[t] + 0.5)) for t in vocab}
    floor = epsilon * sum(idf.values()) / len(idf)
    idf = {t: (floor if v < 0 else v) for t, v in idf.items()}
    out = []
    for d in docs:
        s = 0.0
        for t in tokenize(query):
            tf = d.count(t)
            s += idf.get(t, 0.0) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return np.array(out)


def test_tokenize_lowercases_splits_on_non_alphanumerics_and_drops_stop_words_on_request():
    assert tokenize("Nordic Wool-Rug, 4.6 stars (★3.9/5) snake_case") == [
        "nordic", "wool", "rug", "4", "6", "stars", "3", "9", "5", "snake", "case"]
    assert tokenize("Ｃａｆé MÜSLI") == ["café", "müsli"]  # NFKC folds full-width letters
    assert tokenize("the rug for a dog", stopwords=True) == ["rug", "dog"]
    assert tokenize(None) == [] and tokenize("") == [] and tokenize(" -- ") == []


@pytest.mark.parametrize("method", ["okapi", "bm25+"])
def test_backends_return_the_same_ranking_on_an_unambiguous_corpus(method):
    results = {b: BM25Retriever(b, method=method).search("in_domain", QUERIES, "c", SHOP, 5) for b in BACKENDS}
    (ids_s, scores_s), (ids_r, scores_r) = results["bm25s"], results["rank_bm25"]
    valid = ids_r >= 0
    for row in range(len(QUERIES)):
        assert np.all(np.diff(scores_r[row][valid[row]]) < 0), "the corpus must rank without ties"
    np.testing.assert_array_equal(ids_s, ids_r)
    np.testing.assert_allclose(scores_s[valid], scores_r[valid], rtol=1e-6)


def test_okapi_scores_equal_the_formula_in_both_backends():
    titles = SHOP.titles()
    for backend in BACKENDS:
        ids, scores = BM25Retriever(backend).search("in_domain", QUERIES, "c", SHOP, 10)
        for row, query in enumerate(QUERIES):
            expected = okapi_scores(titles, query)
            order = [i for i in np.lexsort((np.arange(10), -expected)) if expected[i] > 0]
            assert ids[row][ids[row] >= 0].tolist() == order
            np.testing.assert_allclose(scores[row][: len(order)], expected[order], rtol=1e-6)


def test_a_term_in_most_documents_gets_the_epsilon_floor_in_both_backends():
    docs = corpus(["shoe red", "shoe blue", "shoe", "shoe green tall", "hat", "shoe shoe"])  # shoe: df 5 of 6
    expected = okapi_scores(docs.titles(), "shoe")
    assert expected[0] > 0  # the raw idf ln(1.5/5.5) is negative; the floor replaces it
    for backend in BACKENDS:
        ids, scores = BM25Retriever(backend).search("s", ["shoe"], "c", docs, 6)
        assert ids[0].tolist() == [5, 2, 0, 1, 3, -1]
        np.testing.assert_allclose(scores[0][:5], expected[[5, 2, 0, 1, 3]], rtol=1e-6)


def test_okapi_idf_is_bit_identical_to_rank_bm25():
    import rank_bm25

    tokens = [tokenize(t) for t in ["shoe red", "shoe blue", "shoe", "shoe green tall", "hat", "shoe shoe red",
                                    "red hat", None, "blue shoe red"]]
    vocab = bm25_module._Vocabulary.build(tokens)
    reference = rank_bm25.BM25Okapi(tokens, epsilon=0.25)
    assert list(vocab.ids) == list(reference.idf)
    ours = bm25_module.okapi_idf(vocab.doc_freqs.tolist(), len(tokens), 0.25)
    assert ours.tolist() == [reference.idf[t] for t in vocab.ids]
    assert ours[vocab.ids["shoe"]] == 0.25 * reference.average_idf  # the floor


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_scores_rank_the_lower_corpus_index_first(backend):
    docs = corpus(["red shoe", "blue shoe", "shoe red", "green hat", "red shoe", "red shoe big", "hat"])
    retriever = BM25Retriever(backend)
    ids, scores = retriever.search("s", ["red shoe", "shoe red"], "c", docs, 7)
    assert ids[0].tolist() == [0, 2, 4, 5, 1, -1, -1]
    assert scores[0][0] == scores[0][1] == scores[0][2] > scores[0][3] > scores[0][4] > 0
    np.testing.assert_array_equal(ids[0], ids[1])
    cut, _ = retriever.search("s", ["red shoe"], "c", docs, 2)  # the tie straddles the cut
    assert cut.tolist() == [[0, 2]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_matching_documents_are_returned_then_minus_one(backend):
    retriever = BM25Retriever(backend, tokenizer="alnum-en-stop")
    ids, scores = retriever.search("s", ["leather", "", "the of and", "unknownword", "LEATHER!"], "c", SHOP, 20)
    assert ids.shape == (5, 10) and ids.dtype == np.int64 and scores.dtype == np.float32  # k capped at N
    assert ids[0].tolist() == [6, 8] + [-1] * 8
    np.testing.assert_array_equal(ids[4], ids[0])
    assert (ids[1:4] == -1).all() and (scores[1:4] == 0).all() and (scores[0][2:] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
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
    """`gcl-eval data synth --queries 100 --docs-per-query 20 --no-images`, read back by the reader."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    write_synthetic(SynthConfig(queries=100, docs_per_query=20, images=False), out, diagnostics=False)
    return read_dataset(out)


def test_protocol_runs_end_to_end_and_indexes_each_corpus_once(tiny, tmp_path, monkeypatch):
    builds = []
    real_build = bm25_module._Vocabulary.build
    monkeypatch.setattr(bm25_module._Vocabulary, "build",
                        classmethod(lambda cls, tokens: builds.append(len(tokens)) or real_build(tokens)))
    protocol = EvalProtocol(top_k=100, queries_per_split=2000)
    results = {}
    for backend in BACKENDS:
        evaluation = evaluate_dataset(BM25Retriever(backend), tiny, protocol)
        folder = save_run(evaluation.result, tmp_path / backend, evaluation.runs)
        loaded = load_run(folder)
        assert loaded.model["backend"] == backend and set(loaded.splits) == set(tiny.pairs)
        results[backend] = (loaded, evaluation.runs)
    assert len(builds) == 4  # two corpora per backend
    (fast, fast_runs), (ref, ref_runs) = results["bm25s"], results["rank_bm25"]
    for split in tiny.pairs:
        assert 0.05 < fast.metric(split, "nDCG@10") < 1.0
        assert fast_runs[split].doc_ids == ref_runs[split].doc_ids  # identical rankings on this data
        for measure in ("nDCG@10", "ERR", "RBP(p=0.9)"):
            assert fast.metric(split, measure) == ref.metric(split, measure)
