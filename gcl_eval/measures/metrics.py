"""Ranking measures with reference-exact semantics, vectorised over queries.

Two entry points give the same numbers on the same data:

- `evaluate(qrels, run, measures)` takes the pytrec_eval / ir_measures dicts
  ({qid: {docid: grade}}, {qid: {docid: score}});
- `evaluate_arrays(ranked_grades, relevant_grades, measures)` takes what retrieval produces: the grades of
  the retrieved documents in rank order and each query's ground-truth grades.

Both reduce their input to the same flat form: the *hits* (query, rank and grade of every retrieved
relevant document) and, per query, the number of relevant documents, the largest grade and the top of the
ideal ranking. Every measure is computed from those with numpy, with no Python loop over documents: only
relevant documents contribute to any measure here, so nothing else needs to be materialised.

Measure names follow ir_measures (`nDCG@10`, `ERR`, `ERR@10`, `RBP(p=0.9)`, `MAP@1000`, `MRR@1000`,
`R@100`, `P@10`; see KNOWN_MEASURES). Two profiles (docs/metrics.md has the formulas):

- "gcl" (default): SPEC.md section 7, the reference evaluation code of the GCL paper. Averaged over all
  queries of the qrels (a query the run misses scores 0); ERR and RBP normalise by the query's own largest
  grade; ties in a dict run keep the run's insertion order (= retrieval order).
- "standard": trec_eval semantics (as pytrec_eval computes ndcg_cut, map_cut, recall, P): averaged over the
  queries present in both the run and the qrels, ties broken by docid descending; Chapelle's ERR with the
  grade scale's maximum; Moffat and Zobel's binary RBP.

Per-query sums run in rank order, as trec_eval and the reference code add them (np.bincount adds its
weights sequentially), so per-query values agree with theirs to within rounding of the same operations;
for the reference ERR and RBP a test checks they agree bit for bit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, repeat

import numpy as np

from gcl_eval.util.errors import GclError

PROFILES = ("gcl", "standard")

KNOWN_MEASURES: dict[str, str] = {
    "nDCG@k": "normalised DCG at cutoff k: gain g / log2(rank + 1), ideal from the query's judged grades",
    "ERR": "expected reciprocal rank over the whole retrieved list",
    "ERR@k": "expected reciprocal rank cut at rank k",
    "RBP(p=x)": "rank-biased precision with persistence 0 < x < 1, over the whole retrieved list",
    "MAP@k": "average precision cut at k; denominator = all relevant documents of the query",
    "MRR@k": "reciprocal rank of the first relevant document within the top k (binary relevance)",
    "R@k": "recall at k: relevant retrieved in the top k / all relevant documents of the query",
    "P@k": "precision at k: relevant retrieved in the top k / k",
}
"""The measure forms `parse_measure` accepts (k a positive integer), with one line on each."""

DEFAULT_MEASURES = ("nDCG@10", "ERR", "RBP(p=0.9)")
"""The paper's reported triple."""

_KNOWN_FORMS_LINE = ", ".join(KNOWN_MEASURES) + " (k a positive integer, 0 < x < 1)"
_CUTOFF_RE = re.compile(r"(nDCG|ERR|MAP|MRR|R|P)@([1-9][0-9]*)")
_RBP_RE = re.compile(r"RBP\(p=([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\)")

# Largest combined (query, grade) int64 sort key used before falling back to np.lexsort.
_MAX_SORT_KEY = 2**62


# ---------------------------------------------------------------------------------------------------------
# Measure names


@dataclass(frozen=True)
class Measure:
    """A parsed measure name: `name` is kept exactly as given and is the key of every result."""

    name: str
    family: str  # one of nDCG, ERR, RBP, MAP, MRR, R, P
    k: int | None = None  # rank cutoff; None = the whole retrieved list (ERR, RBP)
    p: float | None = None  # RBP persistence


def _unknown(name: object, why: str = "unknown measure") -> GclError:
    return GclError(f"{why} {name!r}; known forms: {_KNOWN_FORMS_LINE}")


def parse_measure(name: str | Measure) -> Measure:
    """Parse one ir_measures-style name such as "nDCG@10" or "RBP(p=0.9)"; GclError if malformed."""
    if isinstance(name, Measure):
        return name
    if not isinstance(name, str):
        raise _unknown(name, "a measure name must be a string, got")
    if name == "ERR":
        return Measure(name, "ERR")
    match = _CUTOFF_RE.fullmatch(name)
    if match:
        return Measure(name, match.group(1), k=int(match.group(2)))
    match = _RBP_RE.fullmatch(name)
    if match:
        p = float(match.group(1))
        if not 0.0 < p < 1.0:
            raise _unknown(name, "RBP needs 0 < p < 1 in")
        return Measure(name, "RBP", p=p)
    raise _unknown(name)


def parse_measures(measures: str | Measure | Iterable[str | Measure]) -> tuple[Measure, ...]:
    """Parse a name or a list of names; duplicates are dropped, order kept; an empty list is an error."""
    if isinstance(measures, (str, Measure)):
        measures = [measures]
    parsed: dict[str, Measure] = {}
    for name in measures:
        measure = parse_measure(name)
        parsed.setdefault(measure.name, measure)
    if not parsed:
        raise GclError(f"no measure given; known forms: {_KNOWN_FORMS_LINE}")
    return tuple(parsed.values())


def measure_names(measures: str | Measure | Iterable[str | Measure]) -> list[str]:
    """The validated output keys for `measures`, in order, without duplicates."""
    return [m.name for m in parse_measures(measures)]


# ---------------------------------------------------------------------------------------------------------
# The flat form every measure is computed from


@dataclass(frozen=True)
class _Judged:
    """What the measures need from each query's ground truth (grades <= 0 are not relevant)."""

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
class _Hits:
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


def _ideal_depth(measures: tuple[Measure, ...]) -> int:
    """How much of the ideal ranking the measures need: the largest nDCG cutoff (0 without nDCG)."""
    return max((m.k for m in measures if m.family == "nDCG"), default=0)


def _hits_from_sorted(n: int, rows: np.ndarray, cols: np.ndarray, grades: np.ndarray) -> _Hits:
    """Hits from (query index, rank, grade) triples already sorted by query then rank."""
    counts = np.bincount(rows, minlength=n)
    starts = np.cumsum(counts) - counts
    pos = np.arange(rows.size, dtype=np.int64) - starts[rows]
    max_col = int(cols.max()) if cols.size else -1
    return _Hits(rows, cols, grades, pos, cols + 1.0, counts, starts, max_col)


def _judged_from_matrix(relevant: np.ndarray, depth: int) -> _Judged:
    """Judgements from an (n x m) grade matrix in any order within rows."""
    n, m = relevant.shape
    num_rel = np.count_nonzero(relevant > 0, axis=1)
    gmax = np.maximum(relevant.max(axis=1, initial=0), 0).astype(np.int64)
    depth = min(depth, m)
    if depth == 0:
        none = np.zeros(0, dtype=np.int64)
        return _Judged(n, num_rel, gmax, 0, none, none, none)
    # Each row sorted descending (ground truth usually comes so), cut at depth: its relevant grades form
    # a prefix, so rank = column.
    if not (relevant[:, 1:] <= relevant[:, :-1]).all():
        relevant = np.sort(relevant, axis=1)[:, ::-1]
    top = relevant[:, :depth].astype(np.int64)
    flat = np.flatnonzero(top > 0)
    rows, pos = np.divmod(flat, depth)
    return _Judged(n, num_rel, gmax, depth, rows, top.ravel()[flat], pos)


def _judged_from_flat(n: int, rows: np.ndarray, grades: np.ndarray, depth: int) -> _Judged:
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
    return _Judged(n, num_rel, gmax, depth, rows[ideal], grades[ideal], pos[ideal])


# ---------------------------------------------------------------------------------------------------------
# Kernels: one per measure family, each returning an (n,) float64 array of per-query values


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


def _ndcg(hits: _Hits, judged: _Judged, k: int) -> np.ndarray:
    discounts = _log2_discounts(k)
    top = hits.top(k)
    dcg = _sum_by_query(hits.rows[top], hits.grades[top] / discounts[hits.cols[top]], judged.n)
    ideal_top = judged.ideal_pos < k  # judged holds the first judged.depth >= k ideal grades
    idcg = _sum_by_query(
        judged.ideal_rows[ideal_top],
        judged.ideal_grades[ideal_top] / discounts[judged.ideal_pos[ideal_top]],
        judged.n,
    )
    return _ratio(dcg, idcg)


def _exclusive_cumprod(factors: np.ndarray, hits: _Hits) -> np.ndarray:
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


def _err(hits: _Hits, gmax: np.ndarray, k: int | None, n: int) -> np.ndarray:
    """ERR with R = (2^g - 1) / 2^gmax, gmax per query (gcl) or the grade scale's (standard).

    R is formed as 2^(g - gmax) - 2^(-gmax): both powers are exact and the difference is rounded once, so
    it equals the reference's exact-integer (2**g - 1) / 2**gmax and cannot overflow for large grades.
    """
    stop = np.ldexp(1.0, hits.grades - gmax[hits.rows]) - np.ldexp(1.0, -gmax)[hits.rows]
    reach = _exclusive_cumprod(1.0 - stop, hits)
    contrib = reach * stop / hits.ranks
    top = hits.top(k)
    return _sum_by_query(hits.rows[top], contrib[top], n)


def _rbp(hits: _Hits, p: float, gmax: np.ndarray | None, n: int) -> np.ndarray:
    """RBP over the whole list: gain g / gmax_q (graded, gcl) or 1 for any relevant document (gmax None)."""
    weights = _powers(p, hits.max_col + 1)[hits.cols]
    gains = weights if gmax is None else (hits.grades / gmax[hits.rows]) * weights
    return _sum_by_query(hits.rows, gains, n) * (1.0 - p)


def _map(hits: _Hits, judged: _Judged, k: int) -> np.ndarray:
    top = hits.top(k)
    precision_at_hit = (hits.pos[top] + 1) / hits.ranks[top]
    return _ratio(_sum_by_query(hits.rows[top], precision_at_hit, judged.n), judged.num_rel)


def _mrr(hits: _Hits, k: int, n: int) -> np.ndarray:
    first = hits.starts[hits.counts > 0]  # each query's best-ranked hit
    first = first[hits.cols[first] < k]
    out = np.zeros(n, dtype=np.float64)
    out[hits.rows[first]] = 1.0 / hits.ranks[first]
    return out


def _relevant_in_top(hits: _Hits, k: int, n: int) -> np.ndarray:
    return np.bincount(hits.rows[hits.top(k)], minlength=n)


def _per_query(
    measures: tuple[Measure, ...], hits: _Hits, judged: _Judged, profile: str, max_grade: int | None
) -> dict[str, np.ndarray]:
    """Every measure's per-query values. `max_grade` is the standard profile's grade-scale maximum."""
    n = judged.n
    if profile == "gcl":
        err_gmax, rbp_gmax = judged.gmax, judged.gmax
    else:
        err_gmax, rbp_gmax = np.full(n, max_grade, dtype=np.int64), None
    out: dict[str, np.ndarray] = {}
    for m in measures:
        if m.family == "nDCG":
            out[m.name] = _ndcg(hits, judged, m.k)
        elif m.family == "ERR":
            out[m.name] = _err(hits, err_gmax, m.k, n)
        elif m.family == "RBP":
            out[m.name] = _rbp(hits, m.p, rbp_gmax, n)
        elif m.family == "MAP":
            out[m.name] = _map(hits, judged, m.k)
        elif m.family == "MRR":
            out[m.name] = _mrr(hits, m.k, n)
        elif m.family == "R":
            out[m.name] = _ratio(_relevant_in_top(hits, m.k, n).astype(np.float64), judged.num_rel)
        elif m.family == "P":
            out[m.name] = _relevant_in_top(hits, m.k, n) / m.k
        else:  # parse_measure admits no other family
            raise AssertionError(m.family)
    return out


def _check_profile(profile: str, max_grade: int | None) -> None:
    if profile not in PROFILES:
        raise GclError(f"unknown metric profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if max_grade is not None:
        if profile != "standard":
            raise GclError(
                "max_grade applies to the standard profile only (gcl uses each query's largest grade)"
            )
        if isinstance(max_grade, bool) or not isinstance(max_grade, (int, np.integer)) or max_grade < 1:
            raise GclError(f"max_grade must be a positive integer, got {max_grade!r}")


def _scale_max(max_grade: int | None, observed: int) -> int:
    """The standard profile's grade-scale maximum: the given one (checked) or the largest grade seen."""
    if max_grade is None:
        return observed
    if observed > max_grade:
        raise GclError(f"a ground-truth grade ({observed}) exceeds max_grade={max_grade}")
    return int(max_grade)


# ---------------------------------------------------------------------------------------------------------
# Array entry point


def _grade_array(values: object, what: str) -> np.ndarray:
    """A C-ordered 2-D grade array in its own dtype (integer, bool, or float holding integers only): the
    large ranked matrix is never converted, only the grades picked out of it."""
    arr = np.ascontiguousarray(values)
    if arr.ndim != 2:
        raise GclError(f"{what} must be a 2-D array (queries x documents), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not (np.isfinite(arr).all() and (arr == np.trunc(arr)).all()):
            raise GclError(f"{what} must hold integer grades; found a fractional or non-finite value")
    elif not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise GclError(f"{what} must be an integer array of grades, got dtype {arr.dtype}")
    return arr


def evaluate_arrays(
    ranked_grades: np.ndarray,
    relevant_grades: np.ndarray,
    measures: str | Iterable[str] = DEFAULT_MEASURES,
    profile: str = "gcl",
    by_query: bool = False,
    *,
    max_grade: int | None = None,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Score retrieval output given as grade arrays; same numbers as `evaluate` on the equivalent dicts.

    ranked_grades: (queries x k) ints, the grades of the retrieved documents in rank order (0 = not
    relevant; shorter lists padded with 0). relevant_grades: (queries x m) ints, each query's ground-truth
    grades in any order, padded with 0. Any integer or bool dtype works as given (a small one such as
    int16 is scanned faster). Every row is a query and every query is averaged (in both profiles:
    a query absent from a run simply has no row). The ranking is taken as given; there are no ties.
    Grades <= 0 are not relevant. max_grade: the standard profile's grade-scale maximum (default: the
    largest grade in relevant_grades).

    Returns {measure: mean over queries}, or with by_query {measure: float64 array of shape (queries,)}.
    """
    parsed = parse_measures(measures)
    _check_profile(profile, max_grade)
    ranked = _grade_array(ranked_grades, "ranked_grades")
    relevant = _grade_array(relevant_grades, "relevant_grades")
    n = ranked.shape[0]
    if relevant.shape[0] != n:
        raise GclError(
            f"ranked_grades has {n} rows (queries) but relevant_grades has {relevant.shape[0]}; "
            "they must match"
        )
    if n == 0:
        raise GclError("no query to evaluate: the grade arrays have no rows")

    judged = _judged_from_matrix(relevant, _ideal_depth(parsed))
    flat = np.flatnonzero(ranked > 0)  # row-major: sorted by query, then rank
    hrows, hcols = np.divmod(flat, ranked.shape[1]) if ranked.shape[1] else (flat, flat)
    hits = _hits_from_sorted(n, hrows, hcols, ranked.ravel()[flat].astype(np.int64, copy=False))

    # The ranked grades must be possible under the ground truth.
    too_high = hits.grades > judged.gmax[hits.rows]
    if too_high.any():
        row = int(hits.rows[np.argmax(too_high)])
        raise GclError(
            f"ranked_grades row {row} holds a grade above that query's largest grade in relevant_grades"
        )
    too_many = np.bincount(hits.rows, minlength=n) > judged.num_rel
    if too_many.any():
        row = int(np.argmax(too_many))
        raise GclError(
            f"ranked_grades row {row} retrieves more relevant documents than relevant_grades holds"
        )

    scale = _scale_max(max_grade, int(judged.gmax.max())) if profile == "standard" else None
    values = _per_query(parsed, hits, judged, profile, scale)
    if by_query:
        return values
    return {name: float(np.mean(v)) for name, v in values.items()}


# ---------------------------------------------------------------------------------------------------------
# Dict entry point


@dataclass(frozen=True)
class MetricReport:
    """Per-query values of one evaluation, with what produced them."""

    profile: str
    measures: tuple[str, ...]
    query_ids: tuple[str, ...]  # the averaged queries, in qrels order
    per_query: dict[str, np.ndarray]  # measure -> float64 array aligned with query_ids
    max_grade: int | None = None  # the standard profile's grade-scale maximum; None for gcl

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    def means(self) -> dict[str, float]:
        """{measure: mean over query_ids}."""
        return {name: float(np.mean(self.per_query[name])) for name in self.measures}

    def by_query(self) -> dict[str, dict[str, float]]:
        """{qid: {measure: value}}."""
        columns = [self.per_query[name].tolist() for name in self.measures]
        return {
            qid: {name: col[i] for name, col in zip(self.measures, columns)}
            for i, qid in enumerate(self.query_ids)
        }


def _queries_to_score(qrels: Mapping, run: Mapping, profile: str) -> list:
    if profile == "gcl":
        qids = list(qrels)  # every query of the ground truth; missing from the run = scores 0
        if not qids:
            raise GclError("no query to evaluate: the qrels hold no query")
    else:
        # pytrec_eval: queries in both, and a query without any judgement is not in the qrels at all
        qids = [q for q, judgements in qrels.items() if judgements and q in run]
        if not qids:
            raise GclError("no query to evaluate: no query of the run has judgements in the qrels")
    return qids


def _flat_grades(qids: list, qrel_qs: list[Mapping], total: int) -> np.ndarray:
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


def _hits_and_judged(
    qrels: Mapping, run: Mapping, qids: list, profile: str, depth: int
) -> tuple[_Hits, _Judged]:
    """The flat form from dicts, touching each retrieved document only through one pass over its score.

    A relevant document's rank is the number of documents of its run scored above it, found by binary
    search in the runs' scores sorted per query (_count_above); only where it ties with another document
    (the tie-break rule then decides its rank) is that query's run ranked in Python.
    """
    n = len(qids)
    qrel_qs = [qrels[q] for q in qids]
    empty: dict = {}
    run_qs = [run.get(q, empty) for q in qids]

    jlens = np.fromiter(map(len, qrel_qs), np.int64, count=n)
    jrows = np.repeat(np.arange(n, dtype=np.int64), jlens)
    grades = _flat_grades(qids, qrel_qs, int(jlens.sum()))
    judged = _judged_from_flat(n, jrows, grades, depth)

    rlens = np.fromiter(map(len, run_qs), np.int64, count=n)
    try:
        scores = np.fromiter(
            chain.from_iterable(d.values() for d in run_qs), np.float64, count=int(rlens.sum())
        )
        # The run score of every judged document, NaN where the run does not hold it.
        looked_up = np.fromiter(
            chain.from_iterable(map(rq.get, qq, repeat(math.nan)) for rq, qq in zip(run_qs, qrel_qs)),
            np.float64,
            count=int(jlens.sum()),
        )
    except (TypeError, ValueError) as err:
        raise GclError(f"run scores must be numbers: {err}") from None
    starts = np.cumsum(rlens) - rlens
    nan = np.isnan(scores)
    if nan.any():
        row = int(np.searchsorted(starts + rlens, int(np.argmax(nan)), side="right"))
        raise GclError(f"run scores must be numbers; query {qids[row]!r} has a NaN score")
    _sort_segments_desc(scores, starts, rlens)

    cand = (grades > 0) & ~np.isnan(looked_up)
    rows, target, hit_grades = jrows[cand], looked_up[cand], grades[cand]
    above = _count_above(scores, starts[rows], rlens[rows], target)
    # scores[start + above] is the document's own score; another equal score follows it if it is tied.
    after = starts[rows] + above + 1
    tied = after < starts[rows] + rlens[rows]
    tied[tied] = scores[after[tied]] == target[tied]
    tied_rows = np.unique(rows[tied])
    if tied_rows.size:
        keep = ~np.isin(rows, tied_rows)
        rows, cols, hit_grades = [rows[keep]], [above[keep]], [hit_grades[keep]]
        for r in tied_rows.tolist():
            c, g = _tied_row_hits(run_qs[r], qrel_qs[r], profile)
            rows.append(np.full(len(c), r, dtype=np.int64))
            cols.append(np.asarray(c, dtype=np.int64))
            hit_grades.append(np.asarray(g, dtype=np.int64))
        rows, cols, hit_grades = np.concatenate(rows), np.concatenate(cols), np.concatenate(hit_grades)
    else:
        cols = above
    width = int(rlens.max()) + 1 if n else 1
    order = np.argsort(rows * width + cols, kind="stable")
    return _hits_from_sorted(n, rows[order], cols[order], hit_grades[order]), judged


def evaluate_report(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: str | Iterable[str] = DEFAULT_MEASURES,
    profile: str = "gcl",
    *,
    max_grade: int | None = None,
) -> MetricReport:
    """`evaluate`, returning the per-query values with the queries and settings that produced them."""
    parsed = parse_measures(measures)
    _check_profile(profile, max_grade)
    if not isinstance(qrels, Mapping) or not isinstance(run, Mapping):
        raise GclError("qrels and run must be dicts: {qid: {docid: grade}} and {qid: {docid: score}}")
    qids = _queries_to_score(qrels, run, profile)
    hits, judged = _hits_and_judged(qrels, run, qids, profile, _ideal_depth(parsed))
    scale = None
    if profile == "standard":
        # Chapelle's ERR normalises by the grade scale: the largest grade anywhere in the qrels.
        scored = set(qids)
        others = [q for q in qrels if q not in scored]
        other_qs = [qrels[q] for q in others]
        other_grades = _flat_grades(others, other_qs, sum(map(len, other_qs)))
        observed = max(int(judged.gmax.max()), int(other_grades.max(initial=0)))
        scale = _scale_max(max_grade, observed)
    values = _per_query(parsed, hits, judged, profile, scale)
    return MetricReport(profile, tuple(m.name for m in parsed), tuple(qids), values, scale)


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: str | Iterable[str] = DEFAULT_MEASURES,
    profile: str = "gcl",
    by_query: bool = False,
    *,
    max_grade: int | None = None,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Score a run against graded qrels (pytrec_eval convention: {qid: {docid: int grade}} and
    {qid: {docid: float score}}).

    Returns {measure: mean}, or with by_query {qid: {measure: value}} for every averaged query (gcl: all
    queries of the qrels; standard: those in both run and qrels). Profiles are described in the module
    docstring and docs/metrics.md; max_grade is the standard profile's grade-scale maximum for ERR
    (default: the largest grade in the qrels).
    """
    report = evaluate_report(qrels, run, measures, profile, max_grade=max_grade)
    return report.by_query() if by_query else report.means()
