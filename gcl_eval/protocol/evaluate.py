"""The four-split evaluation protocol (docs/evaluation.md): qrels, query sample, search, per-query metrics.

Per split: grades from scores (the reference's min-max to 1..100), the query sample (weighted by
summed grades, seeded, capped) or a released dev/test ground-truth file, the ground truth cut at top_k,
a search of the split's whole corpus ordered by the tie rule (gcl_eval.protocol.ranking), and the
per-query measures. Retrieval is anything with a `search` method (dense encoders with the embedding
cache, BM25); the protocol never sees dicts on its hot path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol, Sequence

import numpy as np
import pandas as pd

from gcl_eval.data.dataset import SPLITS, Dataset, Documents
from gcl_eval.util.errors import DataError, GclError
from gcl_eval.measures import RUN_MEASURES
from gcl_eval.measures.metrics import PROFILES, evaluate_arrays, measure_names
from gcl_eval.protocol.qrels import GRADE_RULE, Qrels, build_qrels, grades_from_scores
from gcl_eval.protocol.ranking import TIE_RULE, rank_retrieved
from gcl_eval.protocol.sampling import DEFAULT_SAMPLING, REFERENCE_SEED, SAMPLING_RULES, check_sampling, sample_queries
from gcl_eval.protocol.results import RunResult, SplitRun, environment_info

CURVE_DEPTH = 100  # result.json carries mean nDCG@k for k = 1..CURVE_DEPTH per split (leaderboard plots)


@dataclass(frozen=True)
class EvalProtocol:
    """What is measured, and how: recorded in every result so runs can be compared."""

    top_k: int = 1000
    queries_per_split: int = 2000
    seed: int = REFERENCE_SEED
    profile: str = "gcl"
    measures: tuple[str, ...] = RUN_MEASURES
    ground_truth: str | None = None  # "dev" or "test": the dataset's released files replace the sample
    splits: tuple[str, ...] = SPLITS
    sampling: str = DEFAULT_SAMPLING  # the query-sample rule (gcl_eval.protocol.sampling)

    def validate(self) -> None:
        if self.top_k <= 0:
            raise GclError(f"top_k must be a positive integer (got {self.top_k})")
        if self.queries_per_split <= 0:
            raise GclError(f"queries per split must be a positive integer (got {self.queries_per_split})")
        if self.profile not in PROFILES:
            raise GclError(f"unknown metric profile {self.profile!r}; known: {', '.join(PROFILES)}")
        if self.ground_truth not in (None, "dev", "test"):
            raise GclError(f"ground truth must be dev or test (got {self.ground_truth!r})")
        measure_names(self.measures)  # raises on an unknown measure name
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown:
            raise GclError(f"unknown split {unknown[0]!r}; known: {', '.join(SPLITS)}")
        check_sampling(self.sampling)

    def to_json(self) -> dict:
        released = f"{self.ground_truth} ground-truth file" if self.ground_truth else None
        return {"top_k": self.top_k, "queries_per_split": self.queries_per_split,
                "sampling": released or SAMPLING_RULES[self.sampling], "seed": self.seed,
                "metric_profile": self.profile, "measures": list(self.measures), "splits": list(self.splits),
                "grades": released or GRADE_RULE, "ties": TIE_RULE}


class Retriever(TypingProtocol):
    def describe(self) -> dict:
        """What the model is (preset, arch, checkpoint sha256, ...): recorded as result.json's "model"."""

    def search(self, split: str, query_texts: Sequence[str], corpus_name: str, documents: Documents,
               k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k corpus row indices (-1 = nothing) and scores per query, best first."""


@dataclass
class SplitQueries:
    qrels: Qrels
    texts: list[str]


def split_queries(dataset: Dataset, split: str, protocol: EvalProtocol) -> SplitQueries:
    """The queries of a split and their graded ground truth, sampled or from a released file."""
    pairs = dataset.pairs[split]
    if len(pairs) == 0:
        raise DataError(f"split {split} has no pairs")
    corpus_ids = dataset.corpus_for(split).ids
    texts_by_id = dict(zip(pairs["query_id"], pairs["query"]))
    if protocol.ground_truth:
        graded = _ground_truth_pairs(dataset, split, protocol.ground_truth, pairs)
        query_ids = graded["query_id"].drop_duplicates().to_numpy(dtype=object)
    else:
        graded = pairs.assign(grade=grades_from_scores(pairs["score"].to_numpy()))
        graded, query_ids = sample_queries(graded, protocol.queries_per_split, protocol.seed, protocol.sampling)
    qrels = build_qrels(graded, corpus_ids, query_ids, protocol.top_k)
    return SplitQueries(qrels, [texts_by_id[q] for q in qrels.query_ids])


def _ground_truth_pairs(dataset: Dataset, split: str, which: str, pairs: pd.DataFrame) -> pd.DataFrame:
    """Rows (query_id, doc_id, grade) of a released ground-truth file; its keys are query ids or texts."""
    truth = dataset.ground_truth.get((split, which))
    if truth is None:
        raise DataError(f"split {split} has no {which} ground-truth file")
    ids = set(pairs["query_id"])
    by_text = dict(zip(pairs["query"], pairs["query_id"]))
    rows = []
    for key, docs in truth.items():
        qid = key if key in ids else by_text.get(key)
        if qid is None:
            raise DataError(f"{which} ground truth of split {split}: query {key!r} is not a query of the split")
        rows.extend((qid, doc, int(grade)) for doc, grade in docs.items())
    if not rows:
        raise DataError(f"{which} ground truth of split {split} is empty")
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "grade"])


@dataclass
class Evaluation:
    result: RunResult
    runs: dict[str, SplitRun] = field(default_factory=dict)


def evaluate_dataset(retriever: Retriever, dataset: Dataset, protocol: EvalProtocol, *,
                     model_info: dict | None = None, device: str | None = None) -> Evaluation:
    """Run the protocol on every split of the dataset; the result plus the ranked lists."""
    protocol.validate()
    splits = [s for s in protocol.splits if s in dataset.pairs]
    if not splits:
        raise DataError(f"dataset {dataset.name} has none of the splits {', '.join(protocol.splits)}")
    started = time.perf_counter()
    split_results, frames, runs, split_seconds, checked_corpora = {}, [], {}, {}, set()
    for split in splits:
        t0 = time.perf_counter()
        queries = split_queries(dataset, split, protocol)
        corpus = dataset.corpus_for(split)
        _check_trec_ids(queries.qrels.query_ids, f"{split} query id")
        if dataset.split_corpus[split] not in checked_corpora:
            _check_trec_ids(corpus.ids, f"{dataset.split_corpus[split]} document id")
            checked_corpora.add(dataset.split_corpus[split])
        indices, scores = rank_retrieved(*retriever.search(split, queries.texts, dataset.split_corpus[split], corpus,
                                                           protocol.top_k), corpus.ids)
        ranked = queries.qrels.grade(indices)
        values = evaluate_arrays(ranked, queries.qrels.grades, list(protocol.measures), protocol.profile,
                                 by_query=True)
        curve = evaluate_arrays(ranked, queries.qrels.grades, [f"nDCG@{k}" for k in range(1, CURVE_DEPTH + 1)],
                                protocol.profile)
        split_results[split] = {"n_queries": len(queries.qrels), "corpus_size": len(corpus),
                                "corpus": dataset.split_corpus[split],
                                "metrics": {m: float(np.mean(v)) for m, v in values.items()},
                                "curves": {"nDCG@k": [round(v, 6) for v in curve.values()]}}
        frames.append(pd.DataFrame({"split": split, "qid": queries.qrels.query_ids.astype(str),
                                    **{m: np.asarray(v, dtype=np.float64) for m, v in values.items()}}))
        runs[split] = _split_run(queries.qrels, indices, scores, corpus.ids)
        split_seconds[split] = round(time.perf_counter() - t0, 3)
    result = RunResult(
        model=model_info if model_info is not None else retriever.describe(),
        dataset={"name": dataset.name, "fingerprint": dataset.fingerprint(),
                 "path": str(dataset.root) if dataset.root else None},
        protocol=protocol.to_json(),
        splits=split_results,
        per_query=pd.concat(frames, ignore_index=True),
        timings={"evaluate_s": round(time.perf_counter() - started, 3), "splits_s": split_seconds},
        environment=environment_info(device),
    )
    return Evaluation(result, runs)


def _check_trec_ids(ids, what: str) -> None:
    """Ids go into TREC files (whitespace-separated), so refuse one with whitespace before any search runs."""
    bad = pd.Series(np.asarray(ids, dtype=object)).astype(str).str.contains(r"\s|^$", regex=True)
    if bad.any():
        raise DataError(f"{what} {str(np.asarray(ids, dtype=object)[bad.to_numpy()][0])!r} is empty or holds "
                        "whitespace; TREC run files cannot carry it")


def _split_run(qrels: Qrels, indices: np.ndarray, scores: np.ndarray, corpus_ids) -> SplitRun:
    ids = np.asarray(corpus_ids, dtype=object)
    doc_ids, kept_scores = [], []
    for row, row_scores in zip(indices, scores):
        valid = row >= 0
        doc_ids.append([str(d) for d in ids[row[valid]]])
        kept_scores.append(np.asarray(row_scores)[valid])
    return SplitRun([str(q) for q in qrels.query_ids], doc_ids, kept_scores, qrels.to_dict(ids))
