"""The query sample: the reference rule against pandas' own DataFrame.sample, and the numpy rule.

pandas is the oracle. pandas 3 refuses a weighted draw without replacement when n * max(p) > 1
(which includes every non-uniform draw of all the queries); the reference ran on pandas 2.2, whose
DataFrame.sample made that draw with the two lines `_pandas_2_2_draw` repeats, so the oracle falls
back to them only where the installed pandas refuses.
"""

import numpy as np
import pandas as pd
import pytest

from gcl_eval.data.dataset import Dataset, Documents, make_documents
from gcl_eval.protocol.evaluate import EvalProtocol, split_queries
from gcl_eval.protocol.qrels import build_qrels
from gcl_eval.protocol.sampling import (QUERY_KEY_SEPARATOR, REFERENCE_SEED, SAMPLING_RULES, numpy_draw,
                                        pandas_weighted_sample, reference_draw, sample_queries)
from gcl_eval.util.errors import GclError

from run_helpers import tiny_dataset


def _pandas_2_2_draw(frame: pd.DataFrame, n: int, weights: str, seed: int) -> pd.DataFrame:
    w = frame[weights].to_numpy(dtype=np.float64)
    return frame.take(np.random.RandomState(seed).choice(len(frame), size=n, replace=False, p=w / w.sum()))


def _pandas_sample(frame: pd.DataFrame, n: int, weights: str, seed: int) -> tuple[pd.DataFrame, bool]:
    """DataFrame.sample as the reference calls it; second value: whether pandas itself drew."""
    try:
        return frame.sample(n=n, weights=frame[weights], random_state=seed, replace=False), True
    except ValueError as err:
        if "Weighted sampling cannot be achieved" not in str(err):
            raise
        return _pandas_2_2_draw(frame, n, weights, seed), False


def _reference_queries(df: pd.DataFrame, top_q: int, weight_key: str, query_key: str, seed: int = REFERENCE_SEED):
    """The reference's get_test_queries (evals/eval_gs_v1.py) with the oracle's draw: keys in draw order."""
    temp = df[[query_key, weight_key]].groupby(query_key).sum()
    top_q = min(top_q, len(df[query_key].unique()))
    sampled, _ = _pandas_sample(temp, top_q, weight_key, seed)
    # the reference then sorts by weight (sort_values), an order no score depends on; gcl-eval keeps row order
    return list(sampled.index)


def _in_row_order(keys, row_keys) -> list:
    """keys in the order of their first row."""
    first = {k: i for i, k in reversed(list(enumerate(row_keys)))}
    return sorted(keys, key=first.__getitem__)


def _weights(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return np.full(n, 7.0)
    if kind == "heavy_tailed":
        return np.floor(rng.pareto(1.2, n) * 50) + 1
    if kind == "some_zero":
        w = rng.integers(1, 101, n).astype(float)
        w[rng.choice(n, n // 4, replace=False)] = 0
        return w
    return rng.choice([3.0, 3.0, 3.0, 40.0, 100.0], n)  # ties


# n < 200 queries, n == 200 and n > 200 (capped); zero weights only below their count (grades are >= 1, and
# neither pandas nor numpy can draw more queries than there are non-zero weights)
CASES = [(kind, n) for kind in ("uniform", "heavy_tailed", "some_zero", "ties") for n in (5, 60, 200, 250)
         if kind != "some_zero" or n < 150]


@pytest.mark.parametrize("kind, n", CASES)
@pytest.mark.parametrize("seed", [1, 0, 2024])
def test_the_draw_is_pandas_dataframe_sample(kind, n, seed):
    rng = np.random.default_rng([seed, n, len(kind)])
    frame = pd.DataFrame({"w": _weights(kind, 200, rng)}, index=[f"k{i:03d}" for i in range(200)])
    size = min(n, len(frame))  # the reference caps n at the number of queries before it draws
    expected, by_pandas = _pandas_sample(frame, size, "w", seed)
    drawn = pandas_weighted_sample(frame["w"].to_numpy(), size, seed)
    assert list(frame.index[drawn]) == list(expected.index)
    if kind == "uniform" and size < 200:
        assert by_pandas


def test_most_oracle_draws_come_from_pandas_itself():
    # the fallback is only for what pandas 3 refuses: small draws of the heavy-tailed weights still go through pandas
    frame = pd.DataFrame({"w": np.floor(np.random.default_rng(0).pareto(3.0, 500) * 50) + 1})
    expected, by_pandas = _pandas_sample(frame, 20, "w", 1)
    assert by_pandas
    assert list(pandas_weighted_sample(frame["w"].to_numpy(), 20, 1)) == list(expected.index)


def _split(texts, ids, grades, docs=None):
    docs = docs or [f"d{i}" for i in range(len(texts))]
    return pd.DataFrame({"query_id": ids, "query": texts, "doc_id": docs, "grade": grades})


TEXTS = ["a", "a b", "a-b", "A", "ab", "a_b", "é dress", "z", "red dress", "red dress 2", "b", "B"]


@pytest.mark.parametrize("n", [3, 7, 12, 50])
def test_keys_are_texts_in_pandas_groupby_order(n):
    # "a" vs "a b": with the separator appended "a b_{!@#~}_" sorts first, so the key order is not the text order
    rng = np.random.default_rng(n)
    rows = rng.integers(0, len(TEXTS), 300)
    texts = [TEXTS[r] for r in rows]
    graded = _split(texts, [f"q{r}" for r in rows], rng.integers(1, 101, 300))
    _, ids = sample_queries(graded, n, REFERENCE_SEED)
    df = graded.assign(key=[t + QUERY_KEY_SEPARATOR for t in texts])
    expected = _reference_queries(df, n, "grade", "key")
    assert [TEXTS[int(q[1:])] + QUERY_KEY_SEPARATOR for q in ids] == _in_row_order(expected, df["key"])
    codes, uniques = pd.factorize(np.asarray(texts, dtype=object))
    drawn = reference_draw(uniques, codes, graded["grade"].to_numpy(), n)
    assert [uniques[i] + QUERY_KEY_SEPARATOR for i in drawn] == expected  # the draw order too


def test_a_text_under_two_ids_is_one_query_reported_under_its_first_id():
    graded = _split(["red dress", "blue shirt", "red dress", "red dress", "blue shirt"],
                    ["q7", "q2", "q3", "q7", "q2"], [50, 10, 40, 30, 5], ["d1", "d2", "d1", "d3", "d4"])
    keyed, ids = sample_queries(graded, 10, REFERENCE_SEED)
    assert list(ids) == ["q7", "q2"]  # row order
    assert keyed["query_id"].tolist() == ["q7", "q2", "q7", "q7", "q2"]
    # the reference's ground truth of the key: its rows by grade, top_k of them, {doc: grade} (the last row wins)
    rows = graded[graded["query"] == "red dress"].sort_values("grade", ascending=False, kind="stable")
    expected = {doc: grade for doc, grade in zip(rows["doc_id"], rows["grade"])}
    qrels = build_qrels(keyed, ["d1", "d2", "d3", "d4"], ids, top_k=1000)
    assert qrels.to_dict(["d1", "d2", "d3", "d4"])["q7"] == expected == {"d1": 40, "d3": 30}
    # the cut counts rows before they merge: top 1 keeps d1 at 50, top 2 holds d1 twice and keeps 40
    for top_k, kept in ((1, {"d1": 50}), (2, {"d1": 40})):
        cut = build_qrels(keyed, ["d1", "d2", "d3", "d4"], ["q7"], top_k=top_k)
        assert cut.to_dict(["d1", "d2", "d3", "d4"]) == {"q7": kept}


def test_shared_text_through_the_protocol():
    pairs = pd.DataFrame({"query_id": ["q1", "q2", "q1", "q3"], "query": ["red dress", "red dress", "red dress", "hat"],
                          "doc_id": ["d1", "d2", "d2", "d3"], "score": [3.0, 1.0, 2.0, 1.0]})
    docs = Documents(make_documents(["d1", "d2", "d3"], ["x", "y", "z"], [None] * 3))
    dataset = Dataset("shared", {"in_domain": pairs}, {"corpus_1": docs})
    queries = split_queries(dataset, "in_domain", EvalProtocol(splits=("in_domain",)))
    assert list(queries.qrels.query_ids) == ["q1", "q3"] and queries.texts == ["red dress", "hat"]
    assert queries.qrels.to_dict(["d1", "d2", "d3"])["q1"] == {"d1": 100, "d2": 1}
    numpy_rule = split_queries(dataset, "in_domain", EvalProtocol(splits=("in_domain",), sampling="numpy"))
    assert sorted(numpy_rule.qrels.query_ids) == ["q1", "q2", "q3"]


def test_sample_is_deterministic_and_seeded():
    rng = np.random.default_rng(5)
    graded = _split([f"t{i % 400}" for i in range(2000)], [f"q{i % 400}" for i in range(2000)],
                    rng.integers(1, 101, 2000))
    first = sample_queries(graded, 50, REFERENCE_SEED)[1]
    assert list(first) == list(sample_queries(graded.copy(), 50, REFERENCE_SEED)[1])
    other = sample_queries(graded, 50, 2)[1]
    assert set(first) != set(other)
    assert EvalProtocol().seed == REFERENCE_SEED == 1


def test_all_queries_when_the_sample_reaches_their_number():
    graded = _split(["x", "y", "z", "y"], ["q1", "q2", "q3", "q2b"], [5, 1, 9, 1], ["d1", "d2", "d3", "d4"])
    for n in (3, 4, 2000):
        keyed, ids = sample_queries(graded, n, REFERENCE_SEED)
        assert list(ids) == ["q1", "q2", "q3"]  # every query, in row order


def test_protocol_records_the_rule_and_refuses_unknown_ones():
    assert EvalProtocol().to_json()["sampling"] == SAMPLING_RULES["reference"]
    old = "weighted by summed grades, without replacement, numpy.random.default_rng(seed)"
    assert EvalProtocol(sampling="numpy").to_json()["sampling"] == old
    with pytest.raises(GclError, match="sampling rule 'pandas'"):
        EvalProtocol(sampling="pandas").validate()


def test_numpy_rule_is_seeded_weighted_and_capped():
    qids = np.array(["a"] * 3 + ["b"] * 3 + ["c"] + ["d"])
    grades = np.array([100, 100, 100, 90, 90, 90, 1, 1])
    first = numpy_draw(qids, grades, 2, seed=3)
    assert list(first) == list(numpy_draw(qids, grades, 2, seed=3))
    assert len(set(first)) == 2
    assert list(numpy_draw(qids, grades, 10, seed=3)) == ["a", "b", "c", "d"]
    draws = [tuple(sorted(numpy_draw(qids, grades, 2, seed=s))) for s in range(200)]
    assert draws.count(("a", "b")) > 150  # heavy queries dominate the draws


@pytest.mark.parametrize("top_q", [30, 96, 500])
def test_protocol_sample_on_a_world_is_the_reference_code_path(tmp_path, top_q):
    """The split as the reference reads it (a CSV), its grades, get_test_queries and ground truth."""
    dataset = tiny_dataset()
    split = "in_domain"
    pairs = dataset.pairs[split]
    path = tmp_path / "query_0_product_id_0.csv"
    pairs.rename(columns={"doc_id": "product_id", "score": "score_linear"}).to_csv(path, index=False)
    df = pd.read_csv(path, dtype={"product_id": str})
    df["query_id"] = ""
    for col in ["query"]:  # --left-keys "['query']"
        df["query_id"] += df[col] + QUERY_KEY_SEPARATOR
    w = df["score_linear"]
    df["score_linear"] = (((w - w.min()) / (w.max() - w.min())) * 99 + 1).astype(int)
    expected = _reference_queries(df, top_q, "score_linear", "query_id")
    assert len(expected) == min(top_q, pairs["query"].nunique())

    queries = split_queries(dataset, split, EvalProtocol(queries_per_split=top_q, top_k=1000))
    assert [t + QUERY_KEY_SEPARATOR for t in queries.texts] == _in_row_order(expected, df["query_id"])

    df = df.set_index("query_id")
    truth = queries.qrels.to_dict(dataset.corpus_for(split).ids)
    for qid, key in zip(queries.qrels.query_ids[:10], _in_row_order(expected, df.index)):
        rows = df.loc[[key]].sort_values(by="score_linear", ascending=False)
        assert truth[qid] == {doc: round(g) for doc, g in zip(rows["product_id"][:1000], rows["score_linear"][:1000])}


@pytest.mark.parametrize("command", ["eval", "run"])
def test_cli_offers_the_rule_and_refuses_others(gcl, command):
    assert "--sampling [reference|numpy]" in gcl(command, "--help").output
    required = ["--data", "x", "--out", "y", "--arch", "a"] if command == "eval" else []
    result = gcl(command, "--sampling", "pandas", *required)
    assert result.code == 2 and len(result.error_lines) == 1 and "pandas" in result.err
