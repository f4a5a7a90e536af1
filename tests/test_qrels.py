"""Ground-truth construction of the reference protocol (grades, top-k ground truth; the sample: test_sampling)."""

import numpy as np
import pandas as pd
import pytest

from gcl_eval.util.errors import DataError
from gcl_eval.protocol.qrels import build_qrels, grades_from_scores


def test_linear_scores_are_their_own_grades():
    scores = np.arange(1, 101, dtype=float)
    assert grades_from_scores(scores).tolist() == list(range(1, 101))


def test_min_max_rescale_truncates():
    # 0..10 -> 1 + 99 * s / 10: 0 -> 1, 5 -> 50.5 -> 50, 10 -> 100
    assert grades_from_scores([0.0, 5.0, 10.0, 1.0]).tolist() == [1, 50, 100, 10]


def test_constant_scores_all_get_the_top_grade():
    assert grades_from_scores([3.0, 3.0]).tolist() == [100, 100]


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
