"""Ground-truth construction of the reference protocol (grades, top-k ground truth; the sample: test_sampling)."""

import numpy as np
import pandas as pd
import pytest

from gcl_eval.util.errors import DataError
from gcl_eval.protocol.qrels import build_qrels, grades_from_scores
from reference_eval import reference_grades


SCORE_COLUMNS = {
    "linear 1..100": np.arange(1, 101),  # score_linear: 101 - position
    "linear 1..100 as floats": np.arange(100, 0, -1, dtype=np.float64),
    "1..10 (rescaled)": np.repeat(np.arange(1, 11), 3),
    "81..100 (a short list per query)": np.arange(81, 101),
    "fractional": np.random.default_rng(0).uniform(-3.0, 7.0, 500),
    "constant": np.full(7, 3.0),
}


@pytest.mark.parametrize("name", SCORE_COLUMNS)
def test_grades_are_the_reference_expression(name):
    scores = SCORE_COLUMNS[name]
    grades = grades_from_scores(scores)
    assert grades.dtype == np.int64
    assert np.array_equal(grades, reference_grades(scores))  # pandas, as the reference runs it
    s = np.asarray(scores, dtype=np.float64)  # and written out in numpy float64
    if s.max() > s.min():
        assert np.array_equal(grades, (((s - s.min()) / (s.max() - s.min())) * 99 + 1).astype(np.int64))
    assert grades.min() >= 1 and grades.max() <= 100


def test_the_reference_arithmetic_moves_some_integer_scores_down():
    # on a 1..100 column 1 + 99 * (s - 1) / 99 lands a hair below s for three scores, which truncate one lower
    scores = np.arange(1, 101)
    moved = {int(s): int(g) for s, g in zip(scores, grades_from_scores(scores)) if s != g}
    assert moved == {28: 27, 55: 54, 60: 59}


def test_min_max_rescale_truncates():
    # 0..10 -> (s / 10) * 99 + 1: 0 -> 1, 5 -> 50.5 -> 50, 10 -> 100
    assert grades_from_scores([0.0, 5.0, 10.0, 1.0]).tolist() == [1, 50, 100, 10]


def test_constant_scores_all_get_grade_one_as_in_the_reference():
    assert grades_from_scores([3.0, 3.0]).tolist() == [1, 1]
    assert grades_from_scores([]).tolist() == []


def _pairs():
    return pd.DataFrame({
        "query_id": ["q1", "q1", "q1", "q2", "q2"],
        "doc_id": ["d3", "d1", "d2", "d2", "d4"],
        "grade": [10, 30, 20, 5, 7],
    })


def test_ground_truth_sorted_by_grade_and_cut_at_top_k():
    corpus = ["d1", "d2", "d3", "d4", "d5"]
    qrels = build_qrels(_pairs(), corpus, ["q1", "q2"], top_k=2)
    assert qrels.to_dict(corpus) == {"q1": {"d1": 30, "d2": 20}, "q2": {"d4": 7, "d2": 5}}
    assert qrels.grades.tolist() == [[30, 20], [7, 5]]


def test_grade_lookup_matches_a_dict_lookup():
    rng = np.random.default_rng(0)
    corpus = [f"{i:05d}" for i in range(300)]
    rows = []
    for q in range(40):
        for d in rng.choice(300, size=rng.integers(1, 30), replace=False):
            rows.append((f"q{q}", corpus[d], int(rng.integers(1, 101))))
    pairs = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade"])
    qids = [f"q{q}" for q in range(40)]
    qrels = build_qrels(pairs, corpus, qids)
    retrieved = rng.integers(-1, 300, size=(40, 50))
    expected = {(q, d): g for q, d, g in rows}
    want = [[0 if r < 0 else expected.get((qids[i], corpus[r]), 0) for r in row] for i, row in enumerate(retrieved)]
    assert qrels.grade(retrieved).tolist() == want


def test_document_outside_the_corpus_is_an_input_error():
    with pytest.raises(DataError, match="d3"):
        build_qrels(_pairs(), ["d1", "d2", "d4"], ["q1"])
