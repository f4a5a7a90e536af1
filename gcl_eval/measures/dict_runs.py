"""The flat form from pytrec_eval-style dicts: {qid: {docid: grade}} qrels and {qid: {docid: score}} runs.

Each retrieved document is touched only through one pass over its score. A relevant document's rank is
the number of documents of its run scored above it, found by binary search in the runs' scores sorted
per query; only where it ties with another document (the tie-break rule then decides its rank) is that
query's run ranked in Python: gcl keeps the run's insertion order, standard (trec_eval) breaks ties by
docid descending.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import chain, repeat

import numpy as np

from gcl_eval.measures.flat import Hits, Judged, hits_from_sorted, judged_from_flat
from gcl_eval.util.errors import GclError


def flat_grades(qids: list, qrel_qs: list[Mapping], total: int) -> np.ndarray:
    """All judged grades as int64, query by query; a fractional or non-numeric grade is a GclError."""
    try:
        values = np.fromiter(chain.from_iterable(d.values() for d in qrel_qs), np.float64, count=total)
    except (TypeError, ValueError) as err:
        raise GclError(f"qrels grades must be integers: {err}") from None
    bad = ~np.isfinite(values) | (values != np.trunc(values))
    if bad.any():
        index = int(np.argmax(bad))
        row = int(np.searchsorted(np.cumsum([len(d) for d in qrel_qs]), index, side="right"))
        raise GclError(f"qrels grades must be integers; query {qids[row]!r} has {values[index]!r}")
    return values.astype(np.int64)


def _count_above(scores: np.ndarray, starts: np.ndarray, lens: np.ndarray, target: np.ndarray) -> np.ndarray:
    """How many scores in each segment scores[starts[i] : starts[i] + lens[i]] (sorted descending,
    lens[i] >= 1) are > target[i]: one branch-free binary search run over all segments at once."""
    base, length = starts.copy(), lens.copy()
    while (length > 1).any():
        half = length >> 1
        probe = base + half  # stays inside the segment
        base = np.where(scores[probe] > target, probe, base)
        length -= half
    return base - starts + (scores[base] > target)


def _sort_segments_desc(scores: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
    """Sort, in place and descending, each run whose scores are not already in descending order."""
    rising = np.flatnonzero(scores[1:] > scores[:-1]) + 1  # i with scores[i] > scores[i - 1]
    if rising.size == 0:
        return
    rows = np.searchsorted(starts + lens, rising, side="right")  # segment of element i
    rows = np.unique(rows[rising != starts[rows]])  # a rise at a segment start is not a disorder
    if rows.size == 0:
        return
    seg_lens = lens[rows]
    seg_index = np.repeat(np.arange(rows.size), seg_lens)
    offsets = np.cumsum(seg_lens) - seg_lens
    idx = starts[rows][seg_index] + (np.arange(seg_index.size) - offsets[seg_index])
    sub = scores[idx]
    scores[idx] = sub[np.lexsort((-sub, seg_index))]


def _tied_row_hits(run_q: Mapping, qrel_q: Mapping, profile: str) -> tuple[list[int], list[int]]:
    """(ranks, grades) of one query's relevant retrieved documents, ranking its dict in Python: used only
    for queries where a relevant document ties in score with another, so the tie-break rule matters."""
    if profile == "gcl":
        ranked = sorted(run_q, key=lambda d: float(run_q[d]), reverse=True)  # stable: insertion order
    else:
        ranked = sorted(run_q, key=lambda d: (float(run_q[d]), d), reverse=True)  # trec_eval: docid desc
    cols, grades = [], []
    for col, doc in enumerate(ranked):
        grade = int(qrel_q.get(doc, 0))
        if grade > 0:
            cols.append(col)
            grades.append(grade)
    return cols, grades


def _run_scores(qids: list, run_qs: list[Mapping], qrel_qs: list[Mapping], total_judged: int):
    """(scores of every run, flat, query by query; the run score of every judged document, NaN where the
    run does not hold it); a non-numeric or NaN score is a GclError."""
    rlens = np.fromiter(map(len, run_qs), np.int64, count=len(run_qs))
    try:
        scores = np.fromiter(
            chain.from_iterable(d.values() for d in run_qs), np.float64, count=int(rlens.sum())
        )
        looked_up = np.fromiter(
            chain.from_iterable(map(rq.get, qq, repeat(math.nan)) for rq, qq in zip(run_qs, qrel_qs)),
            np.float64,
            count=total_judged,
        )
    except (TypeError, ValueError) as err:
        raise GclError(f"run scores must be numbers: {err}") from None
    nan = np.isnan(scores)
    if nan.any():
        row = int(np.searchsorted(np.cumsum(rlens), int(np.argmax(nan)), side="right"))
        raise GclError(f"run scores must be numbers; query {qids[row]!r} has a NaN score")
    return scores, rlens, looked_up


def _rerank_tied_rows(rows, cols, grades, tied_rows, run_qs, qrel_qs, profile: str):
    """Replace the hits of the queries in tied_rows by those of a Python ranking of their runs."""
    keep = ~np.isin(rows, tied_rows)
    rows, cols, grades = [rows[keep]], [cols[keep]], [grades[keep]]
    for r in tied_rows.tolist():
        c, g = _tied_row_hits(run_qs[r], qrel_qs[r], profile)
        rows.append(np.full(len(c), r, dtype=np.int64))
        cols.append(np.asarray(c, dtype=np.int64))
        grades.append(np.asarray(g, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(grades)


def hits_and_judged(
    qrels: Mapping, run: Mapping, qids: list, profile: str, depth: int
) -> tuple[Hits, Judged]:
    """The flat form of the queries `qids` (the run may lack some), ties broken by `profile`'s rule."""
    n = len(qids)
    qrel_qs = [qrels[q] for q in qids]
    empty: dict = {}
    run_qs = [run.get(q, empty) for q in qids]

    jlens = np.fromiter(map(len, qrel_qs), np.int64, count=n)
    jrows = np.repeat(np.arange(n, dtype=np.int64), jlens)
    grades = flat_grades(qids, qrel_qs, int(jlens.sum()))
    judged = judged_from_flat(n, jrows, grades, depth)

    scores, rlens, looked_up = _run_scores(qids, run_qs, qrel_qs, int(jlens.sum()))
    starts = np.cumsum(rlens) - rlens
    _sort_segments_desc(scores, starts, rlens)

    cand = (grades > 0) & ~np.isnan(looked_up)
    rows, target, hit_grades = jrows[cand], looked_up[cand], grades[cand]
    cols = _count_above(scores, starts[rows], rlens[rows], target)
    # scores[start + cols] is the document's own score; another equal score follows it if it is tied.
    after = starts[rows] + cols + 1
    tied = after < starts[rows] + rlens[rows]
    tied[tied] = scores[after[tied]] == target[tied]
    tied_rows = np.unique(rows[tied])
    if tied_rows.size:
        rows, cols, hit_grades = _rerank_tied_rows(rows, cols, hit_grades, tied_rows, run_qs, qrel_qs, profile)
    width = int(rlens.max()) + 1 if n else 1
    order = np.argsort(rows * width + cols, kind="stable")
    return hits_from_sorted(n, rows[order], cols[order], hit_grades[order]), judged
