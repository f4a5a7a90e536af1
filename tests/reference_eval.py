"""The reference evaluation code path (marqo-ai/GCL, evals/eval_gs_v1.py), re-implemented for the tests.

Each function repeats one step of the reference as it is written there: the grades of the split's score
column, the query sample (get_test_queries), the ground truth ({query: {doc: grade}}), and its ERR and
RBP loops over a retrieval dict ({query: {doc: score}}, iterated in insertion order, stably sorted by
score). Its nDCG@10 is BEIR's EvaluateRetrieval, i.e. pytrec_eval's ndcg_cut_10 averaged over the
queries (BEIR then rounds to 5 decimals; the tests compare the unrounded mean). Nothing here imports
gcl_eval's protocol code: these are the oracles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SEPARATOR = "_{!@#~}_"  # the reference appends it to each query field to form the query key


def reference_grades(scores) -> np.ndarray:
    """The reference's expression as pandas evaluates it on a score column (float64 operations in this
    order, truncated by astype(int)); a single-valued column gives 1 everywhere."""
    w = pd.Series(scores)
    if len(w.unique()) <= 1:
        return np.ones(len(w), dtype=np.int64)
    return (((w - w.min()) / (w.max() - w.min())) * 99 + 1).astype(int).to_numpy()


def read_split(pairs: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """A split as the reference reads it: its CSV (query, product_id, score_linear), the query key column
    query_id = query + separator, and the score column replaced by the grades."""
    path = Path(folder) / "split.csv"
    pairs.rename(columns={"doc_id": "product_id", "score": "score_linear"}).to_csv(path, index=False)
    df = pd.read_csv(path, dtype={"product_id": str, "query_id": str})
    df["query_id"] = df["query"] + SEPARATOR
    df["score_linear"] = reference_grades(df["score_linear"])
    return df


def pandas_sample(frame: pd.DataFrame, n: int, weights: str, seed: int) -> pd.DataFrame:
    """DataFrame.sample(n, weights, random_state=seed, replace=False), as pandas 2.2 drew it where a newer
    pandas refuses (n * max(p) > 1): the same two lines pandas 2.2 ran."""
    try:
        return frame.sample(n=n, weights=frame[weights], random_state=seed, replace=False)
    except ValueError as err:
        if "Weighted sampling cannot be achieved" not in str(err):
            raise
        w = frame[weights].to_numpy(dtype=np.float64)
        return frame.take(np.random.RandomState(seed).choice(len(frame), size=n, replace=False, p=w / w.sum()))


def get_test_queries(df: pd.DataFrame, top_q: int, weight_key: str = "score_linear", query_key: str = "query_id"):
    """get_test_queries: query keys weighted by summed grades, drawn with random_state=1."""
    temp = df[[query_key, weight_key]].groupby(query_key).sum()
    top_q = min(top_q, len(df[query_key].unique()))
    sampled = pandas_sample(temp, top_q, weight_key, 1)
    return list(sampled.sort_values(by=weight_key, ascending=False).index)


def ground_truth(df: pd.DataFrame, queries, top_k: int, weight_key: str = "score_linear",
                 query_key: str = "query_id") -> dict[str, dict[str, int]]:
    """{query key: {doc: grade}}: the query's rows by grade, the first top_k of them."""
    indexed = df.set_index(query_key)
    truth = {}
    for query in queries:
        rows = indexed.loc[[query]].sort_values(by=weight_key, ascending=False)
        docs, grades = rows["product_id"][:top_k].tolist(), rows[weight_key][:top_k].tolist()
        truth[query] = {doc: round(grade) for doc, grade in zip(docs, grades)}
    return truth


def individual_err(qrels: dict, retrieved: dict) -> float:
    """calculate_individual_err, as written in the reference."""
    err, p_stop = 0.0, 1.0
    sorted_docs = sorted(retrieved.items(), key=lambda x: x[1], reverse=True)
    max_rel = max([v for v in qrels.values()])
    for rank, (doc, _) in enumerate(sorted_docs, start=1):
        rel = qrels.get(doc, 0)
        rel_prob = (2 ** rel - 1) / (2 ** max_rel)
        err += p_stop * rel_prob / rank
        p_stop *= (1 - rel_prob)
    return err


def individual_rbp(qrels: dict, retrieved: dict, p: float) -> float:
    """calculate_individual_rbp, as written in the reference."""
    rbp = 0.0
    sorted_docs = sorted(retrieved.items(), key=lambda x: x[1], reverse=True)
    max_rel = max([v for v in qrels.values()])
    for rank, (doc, _) in enumerate(sorted_docs, start=1):
        rel = qrels.get(doc, 0)
        rbp += rel / max_rel * (p ** (rank - 1))
    return rbp * (1 - p)


def mean_over_queries(per_query, qrels: dict, run: dict) -> float:
    """calculate_mean_err / calculate_mean_rbp: every query of the ground truth, absent runs empty."""
    return sum(per_query(judged, run.get(q, {})) for q, judged in qrels.items()) / len(qrels)


def read_run_lines(path: Path) -> dict[str, dict[str, float]]:
    """{qid: {doc: score}} in the file's line order (the retrieval dict the reference would hold)."""
    run: dict[str, dict[str, float]] = {}
    for line in Path(path).read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    return run


def read_run_ranks(path: Path) -> dict[str, list[tuple[int, str, str]]]:
    """{qid: [(rank, doc, score text), ...]} in line order."""
    run: dict[str, list[tuple[int, str, str]]] = {}
    for line in Path(path).read_text().splitlines():
        qid, _, doc, rank, score, _ = line.split()
        run.setdefault(qid, []).append((int(rank), doc, score))
    return run
