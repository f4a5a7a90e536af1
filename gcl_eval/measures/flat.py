"""The flat form every measure is computed from, and its construction from grade arrays.

The *hits* are the query, rank and grade of every retrieved relevant document; the *judgements* are,
per query, the number of relevant documents, the largest grade and the top of the ideal ranking. Only
relevant documents contribute to any measure, so nothing else needs to be materialised. Grades <= 0 are
not relevant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gcl_eval.measures.definitions import Measure

# Largest combined (query, grade) int64 sort key used before falling back to np.lexsort.
_MAX_SORT_KEY = 2**62


@dataclass(frozen=True)
class Judged:
    """What the measures need from each query's ground truth."""

    n: int  # number of queries
    num_rel: np.ndarray  # (n,) relevant documents per query
    gmax: np.ndarray  # (n,) int64: the query's largest grade, 0 when it has no relevant document
    # The first `depth` grades of each query's ideal ranking (for nDCG@k, k <= depth), flat, ordered by
    # query then grade descending.
    depth: int
    ideal_rows: np.ndarray
    ideal_grades: np.ndarray
    ideal_pos: np.ndarray  # 0-based rank in the ideal ranking


@dataclass(frozen=True)
class Hits:
    """Retrieved documents with grade > 0, flat, ordered by query then rank."""

    rows: np.ndarray  # query index
    cols: np.ndarray  # 0-based rank in the retrieved list
    grades: np.ndarray  # int64, > 0
    pos: np.ndarray  # 0-based index among the query's hits (= relevant documents retrieved above it)
    ranks: np.ndarray  # float64 1-based rank (cols + 1), the divisor of ERR, MAP and MRR
    counts: np.ndarray  # (n,) hits per query
    starts: np.ndarray  # (n,) index of each query's first hit
    max_col: int  # the largest rank index of any hit, -1 without hits

    def top(self, k: int | None) -> np.ndarray | slice:
        """Selects the hits ranked within the top k (when that is all of them: a slice, no copy)."""
        if k is None or k > self.max_col:
            return slice(None)
        return self.cols < k


def ideal_depth(measures: tuple[Measure, ...]) -> int:
    """How much of the ideal ranking the measures need: the largest nDCG cutoff (0 without nDCG)."""
    return max((m.k for m in measures if m.family == "nDCG"), default=0)


def hits_from_sorted(n: int, rows: np.ndarray, cols: np.ndarray, grades: np.ndarray) -> Hits:
    """Hits from (query index, rank, grade) triples already sorted by query then rank."""
    counts = np.bincount(rows, minlength=n)
    starts = np.cumsum(counts) - counts
    pos = np.arange(rows.size, dtype=np.int64) - starts[rows]
    max_col = int(cols.max()) if cols.size else -1
    return Hits(rows, cols, grades, pos, cols + 1.0, counts, starts, max_col)


def hits_from_matrix(ranked: np.ndarray) -> Hits:
    """Hits from an (n x k) matrix of the retrieved documents' grades in rank order."""
    n = ranked.shape[0]
    flat = np.flatnonzero(ranked > 0)  # row-major: sorted by query, then rank
    rows, cols = np.divmod(flat, ranked.shape[1]) if ranked.shape[1] else (flat, flat)
    return hits_from_sorted(n, rows, cols, ranked.ravel()[flat].astype(np.int64, copy=False))


def judged_from_matrix(relevant: np.ndarray, depth: int) -> Judged:
    """Judgements from an (n x m) grade matrix in any order within rows."""
    n, m = relevant.shape
    num_rel = np.count_nonzero(relevant > 0, axis=1)
    gmax = np.maximum(relevant.max(axis=1, initial=0), 0).astype(np.int64)
    depth = min(depth, m)
    if depth == 0:
        none = np.zeros(0, dtype=np.int64)
        return Judged(n, num_rel, gmax, 0, none, none, none)
    # Each row sorted descending (ground truth usually comes so), cut at depth: its relevant grades form
    # a prefix, so rank = column.
    if not (relevant[:, 1:] <= relevant[:, :-1]).all():
        relevant = np.sort(relevant, axis=1)[:, ::-1]
    top = relevant[:, :depth].astype(np.int64)
    flat = np.flatnonzero(top > 0)
    rows, pos = np.divmod(flat, depth)
    return Judged(n, num_rel, gmax, depth, rows, top.ravel()[flat], pos)


def judged_from_flat(n: int, rows: np.ndarray, grades: np.ndarray, depth: int) -> Judged:
    """Judgements from (query index, grade) pairs with non-decreasing query index."""
    keep = grades > 0
    rows, grades = rows[keep], grades[keep]
    top = int(grades.max()) if grades.size else 0
    if n * (top + 1) < _MAX_SORT_KEY:
        # One int64 sort of (query, top - grade) orders by query, then grade descending (much faster
        # than a lexsort); decode the two parts back.
        key = np.sort(rows * (top + 1) + (top - grades))
        rows, grades = key // (top + 1), top - key % (top + 1)
    else:
        order = np.lexsort((-grades, rows))
        rows, grades = rows[order], grades[order]
    num_rel = np.bincount(rows, minlength=n)
    pos = np.arange(rows.size, dtype=np.int64) - (np.cumsum(num_rel) - num_rel)[rows]
    gmax = np.zeros(n, dtype=np.int64)
    first = pos == 0
    gmax[rows[first]] = grades[first]
    ideal = pos < depth
    return Judged(n, num_rel, gmax, depth, rows[ideal], grades[ideal], pos[ideal])
