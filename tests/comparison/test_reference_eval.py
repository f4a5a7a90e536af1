"""The gcl profile end to end against the reference evaluation code path (marqo-ai/GCL evals/eval_gs_v1.py,
re-implemented in reference_eval.py), applied to a run folder's files.

A built-in world with more queries per split than the sample: 3,000 queries, so in_domain and
novel_corpus hold ~2,400 and the reference draws 2,000 of them, while novel_query and zero_shot (~600)
are used whole. Twelve documents per query make the score column 89..100, where the reference's
arithmetic grades two of the twelve positions one lower than exact arithmetic would (27 for 28, 54 for
55). BM25 gives many tied scores, and so does a dense run whose titles repeat. Per split, from the split's pairs as the reference reads
them (a CSV) and the run folder's run_<split>.trec: the reference's grades, query sample and ground truth,
its nDCG@10 (pytrec_eval, as BEIR calls it) and its ERR and RBP(p=0.9) loops over the retrieval dict
must equal the run folder's qrels_<split>.trec, its queries and result.json's numbers.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import build_synthetic
from gcl_eval.measures.trec import read_qrels
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset
from gcl_eval.protocol.results import save_run
from gcl_eval.retrieval.topk import search
from reference_eval import (SEPARATOR, get_test_queries, ground_truth, individual_err, individual_rbp,
                            mean_over_queries, read_run_lines, read_split)

pytrec_eval = pytest.importorskip("pytrec_eval")

TOL = 1e-6
SAMPLE = 2000
TOP_K = 1000


class HashedDense:
    """A dense retriever without a model: hashed bag-of-words embeddings searched by the exact top-k kernel.
    Titles that repeat get identical embeddings, so the run has tied scores as a real dense run does."""

    def describe(self):
        return {"name": "hashed-dense"}

    @staticmethod
    def _embed(texts) -> np.ndarray:
        matrix = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in str(text or "").lower().split():
                matrix[row, zlib.crc32(word.encode()) % 256] += 1.0
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)

    def search(self, split, query_texts, corpus_name, documents, k):
        return search(self._embed(query_texts), self._embed(documents.titles()), k)


@pytest.fixture(scope="module")
def world():
    _, dataset, _ = build_synthetic(SynthConfig(queries=3000, docs_per_query=12, seed=7, images=False),
                                    diagnostics=False)
    return dataset


@pytest.fixture(scope="module", params=["bm25", "dense"])
def world_run(request, world, tmp_path_factory):
    from baselines.bm25 import BM25Retriever

    retriever = BM25Retriever() if request.param == "bm25" else HashedDense()
    evaluation = evaluate_dataset(retriever, world, EvalProtocol(top_k=TOP_K, queries_per_split=SAMPLE))
    folder = save_run(evaluation.result, tmp_path_factory.mktemp("world") / request.param, evaluation.runs)
    return world, folder, evaluation


@pytest.mark.parametrize("split", ["in_domain", "novel_query", "novel_corpus", "zero_shot"])
def test_run_folder_equals_the_reference_code_path(split, world_run, tmp_path):
    dataset, folder, evaluation = world_run
    result = json.loads((folder / "result.json").read_text())
    df = read_split(dataset.pairs[split], tmp_path)
    queries = get_test_queries(df, SAMPLE)
    n_texts = df["query_id"].nunique()
    assert len(queries) == min(SAMPLE, n_texts)
    if split in ("in_domain", "novel_corpus"):
        assert n_texts > SAMPLE  # the sample is a real draw here

    # the sample and the ground truth: the run folder's qrels, its query ids mapped to the reference's keys
    key_of = dict(zip(dataset.pairs[split]["query_id"], dataset.pairs[split]["query"] + SEPARATOR))
    qrels = {key_of[q]: judged for q, judged in read_qrels(folder / f"qrels_{split}.trec").items()}
    truth = ground_truth(df, queries, TOP_K)
    assert qrels == truth
    assert result["splits"][split]["n_queries"] == len(queries)

    # the measures, on the retrieval dict the run file holds (in its line order)
    run = {key_of[q]: docs for q, docs in read_run_lines(folder / f"run_{split}.trec").items()}
    ndcg = pytrec_eval.RelevanceEvaluator(truth, {"ndcg_cut.10"}).evaluate(run)
    assert len(ndcg) == len(queries)  # BEIR averages over pytrec_eval's queries: here every sampled one
    metrics = result["splits"][split]["metrics"]
    assert metrics["nDCG@10"] == pytest.approx(sum(v["ndcg_cut_10"] for v in ndcg.values()) / len(ndcg), abs=TOL)
    assert metrics["ERR"] == pytest.approx(mean_over_queries(individual_err, truth, run), abs=TOL)
    rbp = mean_over_queries(lambda judged, retrieved: individual_rbp(judged, retrieved, 0.9), truth, run)
    assert metrics["RBP(p=0.9)"] == pytest.approx(rbp, abs=TOL)
