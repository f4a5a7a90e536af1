"""Graded ground truth for one split, as the reference protocol builds it (grades, top-k ground truth).

Everything is arrays: a query's ground truth is a row of document indices into the split's corpus
and a row of integer grades, padded with -1 / 0, so retrieved documents are graded in one
vectorised lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gcl_eval.util.errors import DataError

GRADE_RULE = "reference"
"""result.json's name for the grade rule below (protocol "grades")."""


def grades_from_scores(scores) -> np.ndarray:
    """A split's scores as integer grades 1..100, with the reference evaluation code's arithmetic.

    The reference computes ``(((s - s.min()) / (s.max() - s.min())) * 99 + 1).astype(int)`` on the
    split's score column: float64 operations in that order, truncated. Its rounding moves some integer
    scores down by one (on a 1..100 column, 28 -> 27, 55 -> 54, 60 -> 59, ...), and these are the
    grades its numbers are computed from. A constant column (the reference's single-value case)
    gives grade 1 everywhere.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = s.min(), s.max()
    if hi == lo:
        return np.ones(s.shape, dtype=np.int64)
    return (((s - lo) / (hi - lo)) * 99 + 1).astype(np.int64)


@dataclass
class Qrels:
    """Ground truth of a split for the sampled queries.

    query_ids: (Q,) str; doc_index: (Q, m) int, indices into the corpus (-1 = padding), sorted by
    grade descending; grades: (Q, m) int (0 = padding).
    """

    query_ids: np.ndarray
    doc_index: np.ndarray
    grades: np.ndarray

    def __len__(self) -> int:
        return len(self.query_ids)

    def grade(self, retrieved: np.ndarray) -> np.ndarray:
        """Grades of retrieved corpus indices (Q x k, -1 = nothing) in one vectorised lookup."""
        q = self.doc_index.shape[0]
        n_docs = int(max(self.doc_index.max(initial=-1), retrieved.max(initial=-1))) + 1
        valid = self.doc_index >= 0
        keys = (np.arange(q)[:, None] * n_docs + self.doc_index)[valid]
        values = self.grades[valid]
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        out = np.zeros(retrieved.shape, dtype=np.int64)
        if len(keys) == 0:
            return out
        wanted = np.arange(q)[:, None] * n_docs + retrieved
        pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        hit = (retrieved >= 0) & (keys[pos] == wanted)
        out[hit] = values[pos[hit]]
        return out

    def to_dict(self, corpus_ids) -> dict[str, dict[str, int]]:
        ids = np.asarray(corpus_ids, dtype=object)
        return {
            str(qid): {str(ids[d]): int(g) for d, g in zip(row_d, row_g) if d >= 0}
            for qid, row_d, row_g in zip(self.query_ids, self.doc_index, self.grades)
        }


def build_qrels(pairs: pd.DataFrame, corpus_ids, query_ids, top_k: int = 1000) -> Qrels:
    """Each query's rows sorted by grade (descending), at most top_k of them, as corpus indices.

    pairs needs columns query_id, doc_id and grade. A pair whose document is not in the corpus is
    an input error (the split points at the wrong corpus).
    """
    position = pd.Index(np.asarray(corpus_ids, dtype=object))
    wanted = pd.Index(np.asarray(query_ids, dtype=object))
    sub = pairs[pairs["query_id"].isin(wanted)]
    doc_pos = position.get_indexer(sub["doc_id"].to_numpy(dtype=object))
    if (doc_pos < 0).any():
        missing = sub["doc_id"].to_numpy(dtype=object)[doc_pos < 0][0]
        raise DataError(f"document {missing!r} of the ground truth is not in the searched corpus")
    q_row = wanted.get_indexer(sub["query_id"].to_numpy(dtype=object))
    grades = sub["grade"].to_numpy(dtype=np.int64)
    order = np.lexsort((-grades, q_row))  # by query, then grade descending (stable within ties)
    q_row, doc_pos, grades = q_row[order], doc_pos[order], grades[order]
    keep = _rank_within(q_row, len(wanted))[1] < top_k
    q_row, doc_pos, grades = q_row[keep], doc_pos[keep], grades[keep]
    # A document listed under two ids of one query text (one query of the reference sample) keeps its
    # last grade within the cut, the lowest, as the reference's {doc: grade} dict over these rows does.
    last = ~pd.Series(q_row.astype(np.int64) * len(position) + doc_pos).duplicated(keep="last").to_numpy()
    q_row, doc_pos, grades = q_row[last], doc_pos[last], grades[last]
    counts, rank = _rank_within(q_row, len(wanted))
    m = max(int(counts.max(initial=0)), 1)
    doc_index = np.full((len(wanted), m), -1, dtype=np.int64)
    grade_arr = np.zeros((len(wanted), m), dtype=np.int64)
    doc_index[q_row, rank] = doc_pos
    grade_arr[q_row, rank] = grades
    return Qrels(wanted.to_numpy(dtype=object), doc_index, grade_arr)


def _rank_within(q_row: np.ndarray, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows per query, and each row's position within its query (rows grouped by query)."""
    counts = np.bincount(q_row, minlength=n_queries)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return counts, np.arange(len(q_row)) - starts[q_row]
