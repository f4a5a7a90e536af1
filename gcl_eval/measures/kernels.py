"""One vectorised kernel per measure family, each returning an (n,) float64 array of per-query values.

Per-query sums run in rank order, as trec_eval and the reference code add them (np.bincount adds its
weights sequentially), so per-query values agree with theirs to within rounding of the same operations;
the reference ERR and RBP agree bit for bit.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from gcl_eval.measures.definitions import Measure
from gcl_eval.measures.flat import Hits, Judged


@lru_cache(maxsize=32)
def _log2_discounts(length: int) -> np.ndarray:
    """log2(rank + 1) for ranks 1..length, from math.log2 as trec_eval's C log2 (exact for powers of 2)."""
    out = np.array([math.log2(i + 2) for i in range(length)], dtype=np.float64)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=32)
def _powers(p: float, length: int) -> np.ndarray:
    """p ** (rank - 1) for ranks 1..length, with Python's float power as the reference code computes it."""
    out = np.array([p**i for i in range(length)], dtype=np.float64)
    out.flags.writeable = False
    return out


def _sum_by_query(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per-query sums, added in the order given (rank order): np.bincount accumulates sequentially."""
    return np.bincount(rows, weights=values, minlength=n).astype(np.float64, copy=False)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (a query without relevant documents scores 0, as in trec_eval)."""
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def _exclusive_cumprod(factors: np.ndarray, hits: Hits) -> np.ndarray:
    """For each hit, the product of `factors` over the earlier hits of its query (1.0 for the first).

    Swept one hit level at a time (every query's first hit, then every second hit, ...) with the queries
    ordered by hit count, so that the queries still active at a level are a prefix: vectorised over
    queries, the loop runs as many times as the most hits any query has, and each product is formed in
    rank order, exactly as a per-query loop forms it.
    """
    out = np.empty_like(factors)
    order = np.argsort(-hits.counts, kind="stable")
    order = order[: np.count_nonzero(hits.counts)]
    counts, starts = hits.counts[order], hits.starts[order]
    running = np.ones(order.size, dtype=np.float64)
    levels = int(counts[0]) if counts.size else 0
    active = np.searchsorted(-counts, -np.arange(levels), side="left")  # queries with > j hits
    for j, m in enumerate(active.tolist()):
        idx = starts[:m] + j
        out[idx] = running[:m]
        running[:m] *= factors[idx]
    return out


def ndcg(hits: Hits, judged: Judged, k: int) -> np.ndarray:
    """nDCG@k with linear gain g / log2(rank + 1); judged must hold the first >= k ideal grades."""
    discounts = _log2_discounts(k)
    top = hits.top(k)
    dcg = _sum_by_query(hits.rows[top], hits.grades[top] / discounts[hits.cols[top]], judged.n)
    ideal_top = judged.ideal_pos < k
    idcg = _sum_by_query(
        judged.ideal_rows[ideal_top],
        judged.ideal_grades[ideal_top] / discounts[judged.ideal_pos[ideal_top]],
        judged.n,
    )
    return _ratio(dcg, idcg)


def err(hits: Hits, gmax: np.ndarray, k: int | None, n: int) -> np.ndarray:
    """ERR with R = (2^g - 1) / 2^gmax, gmax per query (gcl) or the grade scale's (standard).

    R is formed as 2^(g - gmax) - 2^(-gmax): both powers are exact and the difference is rounded once, so
    it equals the reference's exact-integer (2**g - 1) / 2**gmax and cannot overflow for large grades.
    """
    stop = np.ldexp(1.0, hits.grades - gmax[hits.rows]) - np.ldexp(1.0, -gmax)[hits.rows]
    reach = _exclusive_cumprod(1.0 - stop, hits)
    contrib = reach * stop / hits.ranks
    top = hits.top(k)
    return _sum_by_query(hits.rows[top], contrib[top], n)


def rbp(hits: Hits, p: float, gmax: np.ndarray | None, n: int) -> np.ndarray:
    """RBP over the whole list: gain g / gmax_q (graded, gcl) or 1 for any relevant document (gmax None)."""
    weights = _powers(p, hits.max_col + 1)[hits.cols]
    gains = weights if gmax is None else (hits.grades / gmax[hits.rows]) * weights
    return _sum_by_query(hits.rows, gains, n) * (1.0 - p)


def average_precision(hits: Hits, judged: Judged, k: int) -> np.ndarray:
    """MAP@k's per-query term: precision at each hit in the top k, over all relevant documents."""
    top = hits.top(k)
    precision_at_hit = (hits.pos[top] + 1) / hits.ranks[top]
    return _ratio(_sum_by_query(hits.rows[top], precision_at_hit, judged.n), judged.num_rel)


def reciprocal_rank(hits: Hits, k: int, n: int) -> np.ndarray:
    """1 / rank of each query's first hit within the top k, 0 without one."""
    first = hits.starts[hits.counts > 0]  # each query's best-ranked hit
    first = first[hits.cols[first] < k]
    out = np.zeros(n, dtype=np.float64)
    out[hits.rows[first]] = 1.0 / hits.ranks[first]
    return out


def _relevant_in_top(hits: Hits, k: int, n: int) -> np.ndarray:
    return np.bincount(hits.rows[hits.top(k)], minlength=n)


def recall(hits: Hits, judged: Judged, k: int) -> np.ndarray:
    return _ratio(_relevant_in_top(hits, k, judged.n).astype(np.float64), judged.num_rel)


def precision(hits: Hits, k: int, n: int) -> np.ndarray:
    return _relevant_in_top(hits, k, n) / k


def per_query_values(
    measures: tuple[Measure, ...], hits: Hits, judged: Judged, err_gmax: np.ndarray, rbp_gmax: np.ndarray | None
) -> dict[str, np.ndarray]:
    """{measure name: per-query values}. ERR normalises by err_gmax; RBP by rbp_gmax (None: binary)."""
    n = judged.n
    kernels = {
        "nDCG": lambda m: ndcg(hits, judged, m.k),
        "ERR": lambda m: err(hits, err_gmax, m.k, n),
        "RBP": lambda m: rbp(hits, m.p, rbp_gmax, n),
        "MAP": lambda m: average_precision(hits, judged, m.k),
        "MRR": lambda m: reciprocal_rank(hits, m.k, n),
        "R": lambda m: recall(hits, judged, m.k),
        "P": lambda m: precision(hits, m.k, n),
    }
    return {m.name: kernels[m.family](m) for m in measures}
