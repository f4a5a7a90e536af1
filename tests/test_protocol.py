"""The four-split protocol and the run folder, with stand-in retrievers (no model needed). The per-query numbers
against pytrec_eval on a written run are in tests/comparison/test_pytrec_eval.py."""

import json

import numpy as np
import pandas as pd
import pytest

from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import build_synthetic
from gcl_eval.util.errors import DataError, GclError
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset, split_queries
from gcl_eval.protocol.results import load_run, save_run


class RandomRetriever:
    """Ranks each split's corpus in a seeded random order (deterministic per split and query)."""

    def describe(self):
        return {"name": "random"}

    def search(self, split, query_texts, corpus_name, documents, k):
        rng = np.random.default_rng(len(split))
        n = len(documents)
        idx = np.stack([rng.permutation(n)[:k] for _ in query_texts])
        return idx, -np.arange(idx.shape[1], dtype=np.float32)[None, :].repeat(len(idx), 0)


class OracleRetriever:
    """Returns each query's ground truth in grade order, then nothing (-1)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def describe(self):
        return {"name": "oracle"}

    def search(self, split, query_texts, corpus_name, documents, k):
        pairs = self.dataset.pairs[split]
        position = pd.Index(documents.ids)
        out = np.full((len(query_texts), k), -1)
        for i, text in enumerate(query_texts):
            rows = pairs[pairs["query"] == text].sort_values("score", ascending=False, kind="stable")
            found = position.get_indexer(rows["doc_id"])[:k]
            out[i, : len(found)] = found
        return out, -np.arange(k, dtype=np.float32)[None, :].repeat(len(out), 0)  # the order is in the scores


@pytest.fixture(scope="module")
def dataset():
    _, data, _ = build_synthetic(SynthConfig(queries=120, docs_per_query=20, seed=3, images=False),
                                 diagnostics=False)
    return data


def test_oracle_scores_one_on_ndcg_and_random_scores_low(dataset):
    protocol = EvalProtocol(top_k=100, queries_per_split=50)
    oracle = evaluate_dataset(OracleRetriever(dataset), dataset, protocol).result
    rand = evaluate_dataset(RandomRetriever(), dataset, protocol).result
    for split in ("in_domain", "novel_query", "novel_corpus", "zero_shot"):
        assert oracle.metric(split, "nDCG@10") == pytest.approx(1.0)
        assert oracle.metric(split, "MAP@1000") == pytest.approx(1.0)
        assert rand.metric(split, "nDCG@10") < 0.2
    assert oracle.splits["in_domain"]["n_queries"] == 50
    assert oracle.splits["novel_query"]["n_queries"] == 24  # capped at the split's queries


def test_run_folder_round_trip_and_validation(dataset, tmp_path):
    evaluation = evaluate_dataset(RandomRetriever(), dataset, EvalProtocol(top_k=50, queries_per_split=30))
    folder = save_run(evaluation.result, tmp_path / "run", evaluation.runs)
    assert sorted(p.name for p in folder.iterdir()) == [
        "per_query.parquet", "qrels_in_domain.trec", "qrels_novel_corpus.trec", "qrels_novel_query.trec",
        "qrels_zero_shot.trec", "result.json", "run_in_domain.trec", "run_novel_corpus.trec",
        "run_novel_query.trec", "run_zero_shot.trec"]
    loaded = load_run(folder)
    doc = json.loads((folder / "result.json").read_text())
    assert doc["schema_version"] == 1 and doc["dataset"]["fingerprint"] == dataset.fingerprint()
    assert loaded.splits == doc["splits"]
    assert set(loaded.per_query["split"]) == {"in_domain", "novel_query", "novel_corpus", "zero_shot"}
    # every sampled query is in per_query.parquet, including ones that retrieved nothing relevant
    zero = loaded.per_query[loaded.per_query["nDCG@10"] == 0]
    assert len(zero) > 0
    doc["splits"]["in_domain"]["metrics"]["ERR"] += 0.01
    (folder / "result.json").write_text(json.dumps(doc))
    with pytest.raises(GclError, match="disagrees"):
        load_run(folder)
    (folder / "result.json").write_text("{")
    with pytest.raises(GclError, match="not valid JSON"):
        load_run(folder)


def test_saving_over_a_run_replaces_it_whole(dataset, tmp_path):
    first = evaluate_dataset(RandomRetriever(), dataset, EvalProtocol(top_k=20, queries_per_split=10))
    second = evaluate_dataset(RandomRetriever(), dataset, EvalProtocol(top_k=20, queries_per_split=12,
                                                                       splits=("in_domain",)))
    save_run(first.result, tmp_path / "run", first.runs)
    save_run(second.result, tmp_path / "run", second.runs)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["per_query.parquet", "qrels_in_domain.trec",
                                                                  "result.json", "run_in_domain.trec"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_released_ground_truth_replaces_the_sample(dataset):
    pairs = dataset.pairs["novel_query"]
    qid, query = pairs.iloc[0]["query_id"], pairs.iloc[0]["query"]
    docs = pairs[pairs["query_id"] == qid]["doc_id"].tolist()[:3]
    dataset.ground_truth[("novel_query", "test")] = {query: {docs[0]: 3, docs[1]: 1}}
    try:
        queries = split_queries(dataset, "novel_query", EvalProtocol(ground_truth="test"))
        assert list(queries.qrels.query_ids) == [qid] and queries.texts == [query]
        assert queries.qrels.grades.tolist() == [[3, 1]]
        dataset.ground_truth[("novel_query", "test")] = {"no such query": {docs[0]: 1}}
        with pytest.raises(DataError, match="no such query"):
            split_queries(dataset, "novel_query", EvalProtocol(ground_truth="test"))
    finally:
        dataset.ground_truth.clear()


@pytest.mark.parametrize("protocol, needle", [
    (EvalProtocol(top_k=0), "top_k"),
    (EvalProtocol(measures=("nDCG@10", "Bogus@3")), "Bogus"),
    (EvalProtocol(profile="trec"), "profile"),
])
def test_bad_protocols_are_one_line_errors(dataset, protocol, needle):
    with pytest.raises(GclError, match=needle):
        evaluate_dataset(RandomRetriever(), dataset, protocol)


def test_ndcg_curve_matches_the_measures(dataset):
    protocol = EvalProtocol(top_k=100, queries_per_split=30, measures=("nDCG@10", "nDCG@1", "ERR"))
    result = evaluate_dataset(RandomRetriever(), dataset, protocol).result
    for body in result.splits.values():
        curve = body["curves"]["nDCG@k"]
        assert len(curve) == 100
        assert curve[9] == pytest.approx(body["metrics"]["nDCG@10"], abs=1e-6)
        assert curve[0] == pytest.approx(body["metrics"]["nDCG@1"], abs=1e-6)


class NeverSearched:
    def describe(self):
        return {"name": "never"}

    def search(self, *args):
        raise AssertionError("searched despite ids TREC files cannot carry")


def test_ids_with_whitespace_are_refused_before_any_search(dataset):
    """TREC files separate fields by whitespace: such an id is refused up front, not after a long evaluation."""
    import dataclasses

    from gcl_eval.data.dataset import Documents

    corpus_name = dataset.split_corpus["in_domain"]
    table = dataset.corpora[corpus_name].table.copy()
    victim = table.index[5]
    table.index = pd.Index([f"{d} x" if d == victim else d for d in table.index], name="doc_id")
    pairs = dataset.pairs["in_domain"].assign(
        doc_id=lambda p: p["doc_id"].where(p["doc_id"] != victim, f"{victim} x"))
    broken = dataclasses.replace(dataset, pairs={"in_domain": pairs},
                                 corpora={**dataset.corpora, corpus_name: Documents(table, dataset.corpora[corpus_name].images)})
    with pytest.raises(DataError, match="holds whitespace"):
        evaluate_dataset(NeverSearched(), broken, EvalProtocol(top_k=10, queries_per_split=20, splits=("in_domain",)))
