"""The bm25s backend against rank-bm25, the reference BM25 implementation: idf bit for bit, rankings and
scores, and the same protocol numbers. Skipped when rank-bm25 is missing."""

import numpy as np
import pytest

from baselines import bm25 as bm25_module
from baselines.bm25 import BACKENDS, BM25Retriever, tokenize
from bm25_cases import QUERIES, SHOP, tiny_dataset
from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset

rank_bm25 = pytest.importorskip("rank_bm25")


@pytest.mark.parametrize("method", ["okapi", "bm25+"])
def test_backends_return_the_same_ranking_on_an_unambiguous_corpus(method):
    results = {b: BM25Retriever(b, method=method).search("in_domain", QUERIES, "c", SHOP, 5) for b in BACKENDS}
    (ids_s, scores_s), (ids_r, scores_r) = results["bm25s"], results["rank_bm25"]
    valid = ids_r >= 0
    for row in range(len(QUERIES)):
        assert np.all(np.diff(scores_r[row][valid[row]]) < 0), "the corpus must rank without ties"
    np.testing.assert_array_equal(ids_s, ids_r)
    np.testing.assert_allclose(scores_s[valid], scores_r[valid], rtol=1e-6)


def test_okapi_idf_is_bit_identical_to_rank_bm25():
    tokens = [tokenize(t) for t in ["shoe red", "shoe blue", "shoe", "shoe green tall", "hat", "shoe shoe red",
                                    "red hat", None, "blue shoe red"]]
    vocab = bm25_module._Vocabulary.build(tokens)
    reference = rank_bm25.BM25Okapi(tokens, epsilon=0.25)
    assert list(vocab.ids) == list(reference.idf)
    ours = bm25_module.okapi_idf(vocab.doc_freqs.tolist(), len(tokens), 0.25)
    assert ours.tolist() == [reference.idf[t] for t in vocab.ids]
    assert ours[vocab.ids["shoe"]] == 0.25 * reference.average_idf  # the floor


def test_protocol_numbers_are_the_same_with_either_backend(tmp_path_factory):
    tiny = tiny_dataset(tmp_path_factory.mktemp("synth") / "tiny")
    protocol = EvalProtocol(top_k=100, queries_per_split=2000)
    fast, ref = (evaluate_dataset(BM25Retriever(backend), tiny, protocol) for backend in ("bm25s", "rank_bm25"))
    for split in tiny.pairs:
        assert fast.runs[split].doc_ids == ref.runs[split].doc_ids  # identical rankings on this data
        for measure in PAPER_MEASURES:
            assert fast.result.metric(split, measure) == ref.result.metric(split, measure)
