"""Which queries of a split the protocol scores: the weighted query sample (docs/evaluation.md).

Two rules, selected by EvalProtocol.sampling and recorded in result.json's protocol section:

- ``reference`` (the default) draws as the GCL evaluation code does. Its queries are keyed by their
  text (it joins the query fields, each followed by the separator ``_{!@#~}_``), so rows that share a
  text under different ids are one query; the keys are in pandas' groupby order (sorted); a key's
  weight is the sum of its grades; the draw is ``DataFrame.sample(n, weights=..., random_state=seed,
  replace=False)`` with n capped at the number of keys (so a split with fewer queries uses them all).
  The drawn queries are reported in the split's row order. The reference lists them by weight, an
  order no score depends on (and its unstable sort leaves ties to the sort's implementation); the row
  order makes two splits with the same queries ask for the same query list.
- ``numpy`` is gcl-eval's earlier draw: keyed by query id, ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gcl_eval.util.errors import GclError

QUERY_KEY_SEPARATOR = "_{!@#~}_"
REFERENCE_SEED = 1  # the reference's random_state
DEFAULT_SAMPLING = "reference"
SAMPLING_RULES: dict[str, str] = {
    "reference": "reference: weighted by summed grades per query text, without replacement, "
                 "pandas DataFrame.sample(random_state=seed)",
    # the description runs recorded before the reference rule existed, so they stay comparable
    "numpy": "weighted by summed grades, without replacement, numpy.random.default_rng(seed)",
}


def check_sampling(rule: str) -> None:
    if rule not in SAMPLING_RULES:
        raise GclError(f"unknown sampling rule {rule!r}; known: {', '.join(SAMPLING_RULES)}")


def sample_queries(graded: pd.DataFrame, n: int, seed: int, rule: str = DEFAULT_SAMPLING
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """The split's graded rows keyed as the rule keys queries, and the drawn query ids in order.

    graded needs columns query_id, query and grade. Under the reference rule, rows whose text is
    shared by several ids move to the first of those ids (in row order), which is the id reported.
    """
    check_sampling(rule)
    if rule == "numpy":
        return graded, numpy_draw(graded["query_id"].to_numpy(), graded["grade"].to_numpy(), n, seed)
    texts = graded["query"].to_numpy(dtype=object)
    codes, uniques = pd.factorize(texts)
    first_row = np.unique(codes, return_index=True)[1]  # factorize numbers texts by first appearance
    representative = graded["query_id"].to_numpy(dtype=object)[first_row]
    keyed = graded.assign(query_id=representative[codes])
    drawn = np.sort(reference_draw(uniques, codes, graded["grade"].to_numpy(), n, seed))
    return keyed, representative[drawn]


def reference_draw(texts, codes: np.ndarray, grades: np.ndarray, n: int, seed: int = REFERENCE_SEED) -> np.ndarray:
    """Indices into texts (distinct query texts; codes: each row's text) of the reference's sample, in draw order.

    Keys are text + separator sorted as pandas' groupby sorts them (code-point order: a text and its
    extensions can order differently with the separator appended), weights the summed grades.
    """
    keys = np.array([str(t) + QUERY_KEY_SEPARATOR for t in texts], dtype=object)
    key_order = np.argsort(keys)  # distinct strings: no ties
    sums = np.bincount(codes, weights=np.asarray(grades, dtype=np.float64), minlength=len(keys))[key_order]
    return key_order[pandas_weighted_sample(sums, min(n, len(keys)), seed)]


def pandas_weighted_sample(weights: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions drawn by ``DataFrame.sample(n, weights=weights, random_state=seed, replace=False)``.

    pandas (pandas/core/sample.py) divides the float64 weights by their sum and calls the legacy
    ``RandomState(seed).choice``, whose stream numpy keeps fixed across versions. pandas 3 also
    refuses draws where n * max(p) > 1, among them a draw of every query when weights differ; the
    reference ran on pandas 2.2, which makes them, and so does this.
    """
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    return np.random.RandomState(seed).choice(len(p), size=n, replace=False, p=p).astype(np.intp, copy=False)


def numpy_draw(query_ids: np.ndarray, grades: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to n distinct query ids, with probability proportional to each id's summed grades.

    Returns the drawn ids in draw order; n >= the number of queries returns all of them in
    first-appearance order.
    """
    frame = pd.DataFrame({"qid": np.asarray(query_ids, dtype=object), "g": np.asarray(grades, dtype=np.int64)})
    totals = frame.groupby("qid", sort=False)["g"].sum()
    if n >= len(totals):
        return totals.index.to_numpy(dtype=object)
    p = totals.to_numpy(dtype=np.float64)
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(totals), size=n, replace=False, p=p)
    return totals.index.to_numpy(dtype=object)[drawn]
