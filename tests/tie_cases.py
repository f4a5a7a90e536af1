"""Run folders whose retrieved lists are full of tied scores, for the tie-rule tests (test_ties and
comparison/test_pytrec_eval).

Cases: real BM25 over the titles (documents with the same counts of the query terms and the same length
tie), a dense search over duplicated embeddings (the real top-k kernel; every document sharing a vector
ties), and a stand-in with three score levels on a dataset whose document ids sort differently as strings
and as numbers ("d10" < "d9", upper case before lower case, non-ASCII last), so that the tie order is
trec_eval's strcmp order and not corpus order.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from gcl_eval.data.dataset import Documents
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset
from gcl_eval.protocol.results import save_run
from gcl_eval.retrieval.topk import search
from run_helpers import tiny_dataset

CASES = ("bm25", "dense-duplicates", "three-levels")
TOP_K = 100
QUERIES = 40


class DuplicateDense:
    """Inner-product search where documents share 40 embeddings (groups of ~6 exactly tied documents)."""

    def describe(self):
        return {"arch": "duplicate-dense", "source": "stand-in"}

    def search(self, split, query_texts, corpus_name, documents, k):
        pool = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
        corpus = pool[(np.arange(len(documents)) * 31) % len(pool)]
        queries = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(8) for t in query_texts])
        return search(queries.astype(np.float32), corpus, k, device="cpu")


class ThreeLevels:
    """Scores 0, 1 or 2 per (query, document), seeded; best first, ties by corpus index (as BM25 returns)."""

    def describe(self):
        return {"arch": "three-levels", "source": "stand-in"}

    def search(self, split, query_texts, corpus_name, documents, k):
        indices, scores = [], []
        for text in query_texts:
            level = np.random.default_rng(zlib.crc32(text.encode())).integers(0, 3, len(documents))
            order = np.argsort(-level, kind="stable")[:k]
            indices.append(order)
            scores.append(level[order].astype(np.float32))
        return np.stack(indices), np.stack(scores)


def _odd_id(doc_id: str) -> str:
    n = int(doc_id)
    return ("d", "D", "doc_", "é", "Z")[n % 5] + str(n // 5)


def odd_ids_dataset():
    """The tiny dataset with document ids whose string order is neither numeric nor corpus order."""
    data = tiny_dataset()
    corpora = {name: Documents(docs.table.rename(index=_odd_id).rename_axis("doc_id"), docs.images)
               for name, docs in data.corpora.items()}
    pairs = {split: p.assign(doc_id=p["doc_id"].map(_odd_id)) for split, p in data.pairs.items()}
    return replace(data, name="tiny-odd-ids", pairs=pairs, corpora=corpora)


def retriever_and_dataset(case: str):
    if case == "bm25":
        from baselines.bm25 import BM25Retriever

        return BM25Retriever(), tiny_dataset()
    if case == "dense-duplicates":
        return DuplicateDense(), tiny_dataset()
    return ThreeLevels(), odd_ids_dataset()


def tie_protocol(profile: str = "gcl") -> EvalProtocol:
    return EvalProtocol(top_k=TOP_K, queries_per_split=QUERIES, profile=profile)


def make_tie_run(case: str, folder: Path, profile: str = "gcl"):
    """Evaluate the case under the profile and save its run folder; returns (folder, Evaluation, dataset)."""
    retriever, dataset = retriever_and_dataset(case)
    evaluation = evaluate_dataset(retriever, dataset, tie_protocol(profile))
    return save_run(evaluation.result, folder, evaluation.runs), evaluation, dataset


def per_query(evaluation, split: str) -> pd.DataFrame:
    return evaluation.result.per_query.query("split == @split").set_index("qid")
