"""gcl_eval.measures: plain per-query reference code, hand-computed values, edge cases, measure names.

The comparisons with pytrec_eval (nDCG, MAP, recall, P, recip_rank) are in tests/comparison/test_pytrec_eval.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gcl_eval.measures import (
    ERR,
    KNOWN_MEASURES,
    MAP,
    MRR,
    PAPER_MEASURES,
    RBP,
    RUN_MEASURES,
    Measure,
    P,
    R,
    measure_names,
    nDCG,
    parse_measure,
    parse_measures,
)
from gcl_eval.measures.metrics import evaluate, evaluate_arrays, evaluate_report
from gcl_eval.util.errors import GclError
from metric_cases import OWN_MEASURES, TREC_MEASURES, random_case, ranked_docs


# ---------------------------------------------------------------------------------------------------------
# Plain per-query reference implementations (written for the tests, in the style of the GCL eval code)


def ref_err(qrel_q: dict, docs: list[str], gmax: int, k: int | None = None) -> float:
    err, p_continue = 0.0, 1.0
    for rank, doc in enumerate(docs[:k] if k else docs, start=1):
        rel = max(qrel_q.get(doc, 0), 0)
        r = (2**rel - 1) / (2**gmax)
        err += p_continue * r / rank
        p_continue *= 1 - r
    return err


def ref_rbp(qrel_q: dict, docs: list[str], p: float, gmax: int | None) -> float:
    """gmax None = binary relevance (standard); else gain g / gmax (gcl)."""
    total = 0.0
    for rank, doc in enumerate(docs, start=1):
        rel = qrel_q.get(doc, 0)
        if rel > 0:
            total += (1.0 if gmax is None else rel / gmax) * p ** (rank - 1)
    return total * (1 - p)


def ref_mrr(qrel_q: dict, docs: list[str], k: int) -> float:
    for rank, doc in enumerate(docs[:k], start=1):
        if qrel_q.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def query_gmax(qrel_q: dict) -> int:
    return max([0, *qrel_q.values()])


def reference(qrels, run, measure: Measure, profile: str, scale: int | None = None) -> dict[str, float]:
    """Per-query values of ERR / RBP / MRR the straightforward way."""
    out = {}
    qids = list(qrels) if profile == "gcl" else [q for q in qrels if qrels[q] and q in run]
    for qid in qids:
        qrel_q, docs = qrels[qid], ranked_docs(run.get(qid, {}), profile)
        gmax = query_gmax(qrel_q) if profile == "gcl" else scale
        if measure.family == "ERR":
            out[qid] = ref_err(qrel_q, docs, gmax, measure.k)
        elif measure.family == "RBP":
            if profile == "gcl":
                out[qid] = ref_rbp(qrel_q, docs, measure.p, gmax) if gmax > 0 else 0.0
            else:
                out[qid] = ref_rbp(qrel_q, docs, measure.p, None)
        elif measure.family == "MRR":
            out[qid] = ref_mrr(qrel_q, docs, measure.k)
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("profile", ["gcl", "standard"])
def test_err_rbp_mrr_match_reference_loop(seed, ties, profile):
    qrels, run = random_case(seed, ties=ties)
    scale = max(g for j in qrels.values() for g in j.values())
    ours = evaluate(qrels, run, OWN_MEASURES, profile=profile, by_query=True)
    for name in OWN_MEASURES:
        expected = reference(qrels, run, parse_measure(name), profile, scale)
        assert set(expected) == set(ours)
        for qid, value in expected.items():
            assert ours[qid][name] == pytest.approx(value, abs=1e-12), (qid, name)


def test_gcl_err_and_rbp_are_bit_exact_with_the_reference_loop():
    """Same operations in the same order as the reference code: not merely close."""
    qrels, run = random_case(7, n_queries=60, grades=100)
    ours = evaluate(qrels, run, ["ERR", "RBP(p=0.9)"], by_query=True)
    for name in ("ERR", "RBP(p=0.9)"):
        expected = reference(qrels, run, parse_measure(name), "gcl")
        assert all(ours[q][name] == expected[q] for q in expected), name


@pytest.mark.parametrize("profile", ["gcl", "standard"])
@pytest.mark.parametrize("ties", [False, True])
def test_evaluate_arrays_equals_evaluate_on_equivalent_dicts(profile, ties):
    qrels, run = random_case(11, ties=ties)
    measures = TREC_MEASURES + OWN_MEASURES
    report = evaluate_report(qrels, run, measures, profile=profile)
    qids = list(report.query_ids)
    ranked = [[max(qrels[q].get(d, 0), 0) for d in ranked_docs(run.get(q, {}), profile)] for q in qids]
    relevant = [sorted(qrels[q].values()) for q in qids]  # any order, negatives included
    width_r = max(map(len, ranked))
    width_j = max(map(len, relevant))
    ranked_arr = np.array([r + [0] * (width_r - len(r)) for r in ranked], dtype=np.int64)
    relevant_arr = np.array([r + [0] * (width_j - len(r)) for r in relevant], dtype=np.int64)
    kwargs = {"max_grade": report.max_grade} if profile == "standard" else {}
    arrays = evaluate_arrays(ranked_arr, relevant_arr, measures, profile=profile, by_query=True, **kwargs)
    for name in measures:
        np.testing.assert_allclose(arrays[name], report.per_query[name], rtol=0, atol=1e-15, err_msg=name)
    means = evaluate_arrays(ranked_arr, relevant_arr, measures, profile=profile, **kwargs)
    assert means == pytest.approx(report.means(), abs=1e-15)


# ---------------------------------------------------------------------------------------------------------
# Hand-computed values and edge cases


def test_hand_computed_values():
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": {"a": 0.9, "x": 0.8, "b": 0.7}}  # grades in rank order: 2, 0, 1
    got = evaluate(qrels, run, ["nDCG@3", "ERR", "ERR@1", "RBP(p=0.5)", "MAP@3", "MRR@3", "R@1", "P@2"])
    idcg = 2 + 1 / math.log2(3)
    assert got["nDCG@3"] == pytest.approx((2 + 1 / 2) / idcg, abs=1e-15)
    assert got["ERR"] == pytest.approx(3 / 4 + (1 / 4) * (1 / 4) / 3, abs=1e-15)
    assert got["ERR@1"] == pytest.approx(3 / 4, abs=1e-15)
    assert got["RBP(p=0.5)"] == pytest.approx(0.5 * (1 + 0.5 * 0.25), abs=1e-15)
    assert got["MAP@3"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    assert got["MRR@3"] == 1.0
    assert got["R@1"] == 0.5
    assert got["P@2"] == 0.5
    # standard: Chapelle's ERR with the scale maximum, binary RBP
    std = evaluate(qrels, run, ["ERR", "RBP(p=0.5)"], profile="standard", max_grade=4)
    r1, r3 = 3 / 16, 1 / 16
    assert std["ERR"] == pytest.approx(r1 + (1 - r1) * r3 / 3, abs=1e-15)
    assert std["RBP(p=0.5)"] == pytest.approx(0.5 * (1 + 0.25), abs=1e-15)


ALL = ["nDCG@10", "ERR", "ERR@5", "RBP(p=0.9)", "MAP@100", "MRR@100", "R@10", "P@10"]


def test_empty_run_scores_zero_in_gcl_and_is_an_error_in_standard():
    qrels = {"q1": {"a": 1}, "q2": {"b": 3}}
    assert evaluate(qrels, {}, ALL) == {name: 0.0 for name in ALL}
    assert evaluate(qrels, {"q1": {}}, ALL, by_query=True)["q1"] == {name: 0.0 for name in ALL}
    with pytest.raises(GclError, match="no query"):
        evaluate(qrels, {}, ALL, profile="standard")


def test_query_missing_from_run_counts_as_zero_in_gcl_only():
    qrels = {"q1": {"a": 1}, "q2": {"b": 3}}
    run = {"q1": {"a": 1.0}}
    assert evaluate(qrels, run, ["nDCG@10", "ERR"]) == {"nDCG@10": 0.5, "ERR": 0.25}
    assert evaluate(qrels, run, ["nDCG@10"], profile="standard") == {"nDCG@10": 1.0}


def test_retrieved_docs_not_in_qrels_only_push_relevant_docs_down():
    qrels = {"q": {"a": 1}}
    run = {"q": {"x": 3.0, "y": 2.0, "a": 1.0}}
    got = evaluate(qrels, run, ["MRR@10", "P@3", "R@2", "R@3", "nDCG@10"])
    assert got["MRR@10"] == pytest.approx(1 / 3)
    assert got["P@3"] == pytest.approx(1 / 3)
    assert (got["R@2"], got["R@3"]) == (0.0, 1.0)
    assert got["nDCG@10"] == pytest.approx(1 / math.log2(4))


def test_one_relevant_doc_at_the_top_is_perfect():
    qrels = {"q": {"a": 7, "b": 0}}
    run = {"q": {"a": 2.0, "b": 1.0, "c": 0.0}}
    got = evaluate(qrels, run, ALL)
    assert got["nDCG@10"] == got["MAP@100"] == got["MRR@100"] == got["R@10"] == 1.0
    assert got["P@10"] == pytest.approx(0.1)
    assert got["ERR"] == pytest.approx((2**7 - 1) / 2**7)
    assert got["RBP(p=0.9)"] == pytest.approx(0.1)


def test_all_grades_equal():
    qrels = {"q": {d: 3 for d in "abcd"}}
    run = {"q": {"a": 4.0, "z": 3.5, "b": 3.0, "c": 2.0, "d": 1.0}}
    got = evaluate(qrels, run, ["ERR", "RBP(p=0.5)", "nDCG@5"], by_query=True)["q"]
    assert got["ERR"] == pytest.approx(reference(qrels, run, parse_measure("ERR"), "gcl")["q"], abs=1e-15)
    # every relevant doc has gain g / gmax = 1: binary RBP, same as the standard profile
    assert got["RBP(p=0.5)"] == pytest.approx(0.5 * (1 + 0.25 + 0.125 + 0.0625))
    std = evaluate(qrels, run, ["RBP(p=0.5)"], profile="standard")
    assert std["RBP(p=0.5)"] == pytest.approx(got["RBP(p=0.5)"])


def test_k_longer_than_the_list():
    qrels = {"q": {"a": 1, "b": 1}}
    run = {"q": {"a": 1.0}}
    got = evaluate(qrels, run, ["P@1000", "R@1000", "MAP@1000", "nDCG@1000", "ERR@1000", "ERR"])
    assert got["P@1000"] == pytest.approx(1 / 1000)
    assert got["R@1000"] == 0.5
    assert got["MAP@1000"] == 0.5
    assert got["nDCG@1000"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert got["ERR@1000"] == got["ERR"] == 0.5  # R = (2^1 - 1) / 2^1


def test_query_without_relevant_docs_scores_zero_without_dividing_by_zero():
    qrels = {"q": {"a": 0, "b": -1}, "r": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 0.5}, "r": {"a": 1.0}}
    got = evaluate(qrels, run, ALL, by_query=True)
    assert got["q"] == {name: 0.0 for name in ALL}
    assert got["r"]["nDCG@10"] == 1.0


def test_standard_err_scale_is_the_largest_grade_of_the_whole_qrels():
    qrels = {"q1": {"a": 1}, "q2": {"b": 3}}  # q2 is not in the run, its grade still sets the scale
    run = {"q1": {"a": 1.0}}
    report = evaluate_report(qrels, run, ["ERR"], profile="standard")
    assert report.max_grade == 3 and report.query_ids == ("q1",)
    assert report.means() == {"ERR": 1 / 8}
    assert evaluate(qrels, run, ["ERR"])["ERR"] == (1 / 2 + 0) / 2  # gcl: own maximum, both queries
    arrays = evaluate_arrays(np.array([[1]]), np.array([[1]]), ["ERR"], profile="standard")
    assert arrays == {"ERR": 1 / 2}  # the arrays only know q1; max_grade=3 reproduces evaluate
    assert evaluate_arrays(np.array([[1]]), np.array([[1]]), ["ERR"], profile="standard", max_grade=3) == {
        "ERR": 1 / 8
    }


def test_gcl_ties_keep_insertion_order_standard_uses_docid_descending():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0}}
    assert evaluate(qrels, run, ["MRR@10"])["MRR@10"] == 1.0
    assert evaluate(qrels, run, ["MRR@10"], profile="standard")["MRR@10"] == 0.5
    run = {"q": {"b": 1.0, "a": 1.0}}
    assert evaluate(qrels, run, ["MRR@10"])["MRR@10"] == 0.5


def test_run_order_does_not_matter_without_ties():
    qrels, run = random_case(5)
    shuffled = {q: dict(sorted(d.items())) for q, d in run.items()}
    descending = {q: dict(sorted(d.items(), key=lambda it: -it[1])) for q, d in run.items()}
    a = evaluate(qrels, shuffled, ALL, by_query=True)
    b = evaluate(qrels, descending, ALL, by_query=True)
    assert a == b


def test_large_grades_do_not_overflow_err():
    qrels = {"q": {"a": 2000, "b": 1999}}
    run = {"q": {"b": 2.0, "a": 1.0}}
    got = evaluate(qrels, run, ["ERR", "RBP(p=0.5)"])
    assert got["ERR"] == pytest.approx(0.5 + 0.5 * 1.0 / 2)  # R = 1/2 then R = 1 (rounded)
    assert math.isfinite(got["RBP(p=0.5)"])


def test_evaluate_arrays_by_query_shape_and_padding():
    ranked = np.array([[3, 0, 1], [0, 0, 0]])
    relevant = np.array([[1, 3, 0, 0], [2, 0, 0, 0]])
    out = evaluate_arrays(ranked, relevant, ["nDCG@2", "ERR"], by_query=True)
    assert out["nDCG@2"].shape == (2,) and out["nDCG@2"].dtype == np.float64
    assert out["nDCG@2"][1] == 0.0
    assert out["ERR"][0] == pytest.approx(7 / 8 + (1 / 8) * (1 / 8) / 3)
    # integral floats and booleans are grades too
    floats = evaluate_arrays(ranked.astype(float), relevant.astype(float), ["ERR"])
    assert floats == evaluate_arrays(ranked, relevant, ["ERR"])
    assert evaluate_arrays(np.array([[True, False]]), np.array([[True]]), ["P@2"]) == {"P@2": 0.5}


# ---------------------------------------------------------------------------------------------------------
# Names and errors


def test_parse_measure_gives_the_named_measure_objects():
    assert parse_measure("nDCG@10") == nDCG @ 10 == Measure("nDCG", k=10)
    assert parse_measure("ERR") == ERR and parse_measure("ERR@20") == ERR @ 20
    assert parse_measure("RBP(p=0.9)") == RBP(p=0.9) == Measure("RBP", p=0.9)
    assert (parse_measure("MAP@5"), parse_measure("MRR@5"), parse_measure("R@5"), parse_measure("P@5")) == (
        MAP @ 5, MRR @ 5, R @ 5, P @ 5)
    assert parse_measure("RBP(p=.8)").p == 0.8 and parse_measure("nDCG@10").k == 10
    families = [m.family for m in parse_measures(["MAP@1000", "MRR@1000", "R@100", "P@10"])]
    assert families == ["MAP", "MRR", "R", "P"]
    assert measure_names(["ERR", "nDCG@10", "ERR"]) == ["ERR", "nDCG@10"]
    assert measure_names("RBP(p=0.7)") == ["RBP(p=0.7)"]
    assert list(evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, "RBP(p=0.9)")) == ["RBP(p=0.9)"]
    with pytest.raises(Exception):
        parse_measure("ERR").k = 3  # frozen


def test_a_measure_prints_as_its_canonical_name_and_results_keep_the_spelling_given():
    assert [str(m) for m in (nDCG @ 10, ERR, ERR @ 5, RBP(p=0.9), MAP @ 1000, MRR @ 1000, R @ 100, P @ 10)] == [
        "nDCG@10", "ERR", "ERR@5", "RBP(p=0.9)", "MAP@1000", "MRR@1000", "R@100", "P@10"]
    assert repr(RBP(p=0.9)) == "RBP(p=0.9)" and (nDCG @ 10).name == "nDCG@10"
    given = parse_measure("RBP(p=.90)")
    assert given == RBP(p=0.9) and str(given) == "RBP(p=0.9)" and given.name == "RBP(p=.90)"
    qrels, run = {"q": {"a": 2, "b": 1}}, {"q": {"b": 1.0, "a": 0.5}}
    by_object = evaluate(qrels, run, [nDCG @ 10, RBP(p=0.9)])
    by_name = evaluate(qrels, run, ["nDCG@10", "RBP(p=.90)"])
    assert list(by_object) == ["nDCG@10", "RBP(p=0.9)"] and list(by_name) == ["nDCG@10", "RBP(p=.90)"]
    assert list(by_object.values()) == list(by_name.values())
    assert evaluate_arrays(np.array([[1, 2]]), np.array([[2, 1]]), ERR @ 1) == {"ERR@1": 0.25}


def test_paper_and_run_measures():
    assert PAPER_MEASURES == ("nDCG@10", "ERR", "RBP(p=0.9)")
    assert RUN_MEASURES[:3] == PAPER_MEASURES and len(set(RUN_MEASURES)) == 10
    assert measure_names(RUN_MEASURES) == list(RUN_MEASURES)  # canonical names parse back to themselves


@pytest.mark.parametrize("measure", [nDCG, RBP, MAP, MRR, R, P])
def test_a_family_without_its_parameter_is_not_a_measure(measure):
    with pytest.raises(GclError, match=f"incomplete measure '{measure.family}'"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, [measure])


@pytest.mark.parametrize("build", [lambda: nDCG @ 0, lambda: nDCG @ 2.5, lambda: nDCG @ True, lambda: RBP @ 10,
                                   lambda: RBP(p=1.0), lambda: RBP(p="0.5"), lambda: ERR(p=0.5),
                                   lambda: Measure("AP", k=10)])
def test_bad_parameters_are_gcl_errors(build):
    with pytest.raises(GclError) as info:
        build()
    assert "\n" not in str(info.value) and "known forms" in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["ndcg@10", "nDCG", "nDCG@0", "nDCG@-1", "P@1.5", "RBP", "RBP(p=1)", "RBP(p=0)", "RBP(p=x)", "AP", ""],
)
def test_unknown_or_malformed_measure_lists_the_known_forms(name):
    with pytest.raises(GclError) as info:
        parse_measure(name)
    message = str(info.value)
    assert "\n" not in message and repr(name) in message
    for form in KNOWN_MEASURES:
        assert form in message


def test_bad_arguments_are_gcl_errors():
    qrels, run = {"q": {"a": 1}}, {"q": {"a": 1.0}}
    with pytest.raises(GclError, match="profile"):
        evaluate(qrels, run, ["ERR"], profile="trec")
    with pytest.raises(GclError, match="standard profile only"):
        evaluate(qrels, run, ["ERR"], max_grade=3)
    with pytest.raises(GclError, match="exceeds max_grade"):
        evaluate({"q": {"a": 5}}, run, ["ERR"], profile="standard", max_grade=3)
    with pytest.raises(GclError, match="no measure"):
        evaluate(qrels, run, [])
    with pytest.raises(GclError, match="integers; query 'q'"):
        evaluate({"q": {"a": 1.5}}, run, ["ERR"])
    with pytest.raises(GclError, match="NaN"):
        evaluate(qrels, {"q": {"a": float("nan")}}, ["ERR"])
    with pytest.raises(GclError, match="numbers"):
        evaluate(qrels, {"q": {"a": "high"}}, ["ERR"])
    with pytest.raises(GclError, match="no query"):
        evaluate({}, run, ["ERR"])
    with pytest.raises(GclError, match="rows"):
        evaluate_arrays(np.zeros((2, 3), int), np.zeros((3, 3), int), ["ERR"])
    with pytest.raises(GclError, match="2-D"):
        evaluate_arrays(np.zeros(3, int), np.zeros((3, 3), int), ["ERR"])
    with pytest.raises(GclError, match="integer grades"):
        evaluate_arrays(np.full((1, 2), 0.5), np.ones((1, 1)), ["ERR"])
    with pytest.raises(GclError, match="largest grade"):
        evaluate_arrays(np.array([[3]]), np.array([[2]]), ["ERR"])
    with pytest.raises(GclError, match="more relevant"):
        evaluate_arrays(np.array([[2, 2]]), np.array([[2]]), ["ERR"])
