"""Ranking measures with reference-exact semantics, vectorised over queries: the two entry points.

Both give the same numbers on the same data:

- `evaluate(qrels, run, measures)` takes the pytrec_eval / ir_measures dicts
  ({qid: {docid: grade}}, {qid: {docid: score}});
- `evaluate_arrays(ranked_grades, relevant_grades, measures)` takes what retrieval produces: the grades of
  the retrieved documents in rank order and each query's ground-truth grades.

Both reduce their input to the same flat form (gcl_eval.measures.flat; from dicts: dict_runs) and compute
every measure from it with numpy (gcl_eval.measures.kernels), with no Python loop over documents.

Measures are named as in ir_measures (`nDCG@10`, `ERR`, `ERR@10`, `RBP(p=0.9)`, `MAP@1000`, `MRR@1000`,
`R@100`, `P@10`; gcl_eval.measures.definitions) or given as Measure objects. Two profiles (docs/metrics.md
has the formulas):

- "gcl" (default): the reference evaluation code of the GCL paper. Averaged over all queries of the qrels
  (a query the run misses scores 0); ERR and RBP normalise by the query's own largest grade; ties in a dict
  run keep the run's insertion order (= retrieval order).
- "standard": trec_eval semantics (as pytrec_eval computes ndcg_cut, map_cut, recall, P): averaged over the
  queries present in both the run and the qrels, ties broken by docid descending; Chapelle's ERR with the
  grade scale's maximum; Moffat and Zobel's binary RBP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from gcl_eval.measures.definitions import (  # noqa: F401  (re-exported: the evaluation API names them)
    KNOWN_MEASURES,
    PAPER_MEASURES,
    Measure,
    measure_names,
    parse_measure,
    parse_measures,
)
from gcl_eval.measures.dict_runs import flat_grades, hits_and_judged
from gcl_eval.measures.flat import Hits, Judged, hits_from_matrix, ideal_depth, judged_from_matrix
from gcl_eval.measures.kernels import per_query_values
from gcl_eval.util.errors import GclError

PROFILES = ("gcl", "standard")


MeasureList = str | Measure | Iterable[str | Measure]


# ---------------------------------------------------------------------------------------------------------
# Profiles


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


def _per_query(
    measures: tuple[Measure, ...], hits: Hits, judged: Judged, profile: str, scale: int | None
) -> dict[str, np.ndarray]:
    """Every measure's per-query values under `profile`; `scale` is the standard grade-scale maximum.

    gcl normalises ERR and RBP by each query's largest grade; standard uses the scale's maximum for ERR
    (Chapelle) and binary relevance for RBP (Moffat and Zobel).
    """
    if profile == "gcl":
        return per_query_values(measures, hits, judged, judged.gmax, judged.gmax)
    return per_query_values(measures, hits, judged, np.full(judged.n, scale, dtype=np.int64), None)


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


def _check_rows(n_ranked: int, n_relevant: int) -> None:
    if n_relevant != n_ranked:
        raise GclError(
            f"ranked_grades has {n_ranked} rows (queries) but relevant_grades has {n_relevant}; "
            "they must match"
        )
    if n_ranked == 0:
        raise GclError("no query to evaluate: the grade arrays have no rows")


def _check_possible(hits: Hits, judged: Judged) -> None:
    """The ranked grades must be possible under the ground truth."""
    too_high = hits.grades > judged.gmax[hits.rows]
    if too_high.any():
        row = int(hits.rows[np.argmax(too_high)])
        raise GclError(
            f"ranked_grades row {row} holds a grade above that query's largest grade in relevant_grades"
        )
    too_many = np.bincount(hits.rows, minlength=judged.n) > judged.num_rel
    if too_many.any():
        row = int(np.argmax(too_many))
        raise GclError(
            f"ranked_grades row {row} retrieves more relevant documents than relevant_grades holds"
        )


def evaluate_arrays(
    ranked_grades: np.ndarray,
    relevant_grades: np.ndarray,
    measures: MeasureList = PAPER_MEASURES,
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
    _check_rows(ranked.shape[0], relevant.shape[0])
    judged = judged_from_matrix(relevant, ideal_depth(parsed))
    hits = hits_from_matrix(ranked)
    _check_possible(hits, judged)
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


def _qrels_scale(qrels: Mapping, qids: list, judged: Judged, max_grade: int | None) -> int:
    """Chapelle's ERR normalises by the grade scale: the largest grade anywhere in the qrels."""
    scored = set(qids)
    others = [q for q in qrels if q not in scored]
    other_qs = [qrels[q] for q in others]
    other_grades = flat_grades(others, other_qs, sum(map(len, other_qs)))
    observed = max(int(judged.gmax.max()), int(other_grades.max(initial=0)))
    return _scale_max(max_grade, observed)


def evaluate_report(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: MeasureList = PAPER_MEASURES,
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
    hits, judged = hits_and_judged(qrels, run, qids, profile, ideal_depth(parsed))
    scale = _qrels_scale(qrels, qids, judged, max_grade) if profile == "standard" else None
    values = _per_query(parsed, hits, judged, profile, scale)
    return MetricReport(profile, tuple(m.name for m in parsed), tuple(qids), values, scale)


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: MeasureList = PAPER_MEASURES,
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
