"""The protocol's tie rule (score descending, then document id descending as strings) and the run folder's
TREC files: written in trec_eval's own order, scores that round-trip, and numbers every reader reproduces.
(pytrec_eval on the same files: comparison/test_pytrec_eval.py.)"""

import numpy as np
import pytest

from gcl_eval.measures import RUN_MEASURES
from gcl_eval.measures.trec import read_qrels, write_ranked_run
from gcl_eval.protocol.evaluate import EvalProtocol, split_queries
from gcl_eval.protocol.ranking import TIE_RULE, rank_retrieved
from gcl_eval.util.errors import DataError
from reference_eval import individual_err, individual_rbp, read_run_lines, read_run_ranks
from tie_cases import CASES, TOP_K, make_tie_run, per_query, retriever_and_dataset, tie_protocol

TOL = 1e-9


def test_ties_go_by_doc_id_descending_as_strings():
    ids = np.array(["d9", "d10", "D1", "é", "d2"], dtype=object)
    indices = np.array([[0, 1, 2, 3, 4], [4, 1, -1, -1, -1]])
    scores = np.array([[2, 1, 1, 1, 1], [5, 5, 0, 0, 0]], dtype=np.float32)
    ranked, ranked_scores = rank_retrieved(indices, scores, ids)
    # "é" > "d2" > "d10" > "D1" code point by code point (trec_eval's strcmp on UTF-8); padding stays last
    assert [[ids[i] if i >= 0 else None for i in row] for row in ranked] == [
        ["d9", "é", "d2", "d10", "D1"], ["d2", "d10", None, None, None]]
    assert ranked_scores.tolist() == [[2, 1, 1, 1, 1], [5, 5, 0, 0, 0]]


def test_rows_are_sorted_by_score_and_padding_goes_last():
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    indices = np.array([[2, -1, 0, 3]])
    scores = np.array([[0.5, 0.0, 0.9, 0.5]], dtype=np.float32)
    ranked, ranked_scores = rank_retrieved(indices, scores, ids)
    assert ranked.tolist() == [[0, 3, 2, -1]] and ranked_scores.tolist() == [[np.float32(0.9), 0.5, 0.5, 0.0]]


def test_rows_without_ties_are_returned_as_they_are():
    indices = np.array([[3, 1, 2], [0, -1, -1]])
    scores = np.array([[0.9, 0.5, 0.1], [1.0, 0.0, 0.0]], dtype=np.float32)
    ranked, ranked_scores = rank_retrieved(indices, scores, ["a", "b", "c", "d"])
    assert ranked is indices and ranked_scores is scores


def test_the_protocol_records_its_rules():
    protocol = EvalProtocol().to_json()
    assert protocol["grades"] == "reference" and protocol["ties"] == TIE_RULE == "score desc, doc id desc"
    assert EvalProtocol(ground_truth="dev").to_json()["grades"] == "dev ground-truth file"


@pytest.fixture(scope="module")
def tie_runs(tmp_path_factory):
    """{(case, profile): (folder, evaluation, dataset)}, made on first use."""
    made = {}

    def get(case, profile="gcl"):
        if (case, profile) not in made:
            made[case, profile] = make_tie_run(case, tmp_path_factory.mktemp(f"{case}-{profile}"), profile)
        return made[case, profile]

    return get


@pytest.mark.parametrize("case", CASES)
def test_written_run_is_in_trec_eval_order_with_many_ties(case, tie_runs):
    folder, evaluation, _ = tie_runs(case)
    tied = 0
    for split in evaluation.result.splits:
        for qid, lines in read_run_ranks(folder / f"run_{split}.trec").items():
            assert [rank for rank, _, _ in lines] == list(range(1, len(lines) + 1))
            for (_, doc, score), (_, next_doc, next_score) in zip(lines, lines[1:]):
                assert float(next_score) < float(score) or (next_score == score and next_doc < doc), (qid, doc)
                tied += next_score == score
    assert tied > 100


@pytest.mark.parametrize("case", CASES)
def test_written_scores_are_the_raw_float32_scores(case, tie_runs):
    folder, evaluation, dataset = tie_runs(case)
    retriever, _ = retriever_and_dataset(case)
    split = "zero_shot"
    queries = split_queries(dataset, split, tie_protocol())
    corpus = dataset.corpus_for(split)
    indices, scores = retriever.search(split, queries.texts, dataset.split_corpus[split], corpus, TOP_K)
    written = read_run_ranks(folder / f"run_{split}.trec")
    for qid, row, row_scores in zip(queries.qrels.query_ids, indices, scores):
        raw = {corpus.ids[i]: s for i, s in zip(row, row_scores) if i >= 0}
        assert {doc: np.float32(text) for _, doc, text in written.get(qid, [])} == raw


@pytest.mark.parametrize("case", CASES)
def test_err_and_rbp_are_the_reference_loops_over_the_written_ranks(case, tie_runs):
    folder, evaluation, _ = tie_runs(case)
    for split, body in evaluation.result.splits.items():
        qrels = read_qrels(folder / f"qrels_{split}.trec")
        run = read_run_lines(folder / f"run_{split}.trec")
        values = per_query(evaluation, split)
        assert sorted(qrels) == sorted(values.index)  # the qrels file holds every sampled query
        err = {q: individual_err(judged, run.get(q, {})) for q, judged in qrels.items()}
        rbp = {q: individual_rbp(judged, run.get(q, {}), 0.9) for q, judged in qrels.items()}
        for qid in qrels:
            assert values.loc[qid, "ERR"] == pytest.approx(err[qid], abs=TOL), (split, qid)
            assert values.loc[qid, "RBP(p=0.9)"] == pytest.approx(rbp[qid], abs=TOL), (split, qid)
        assert body["metrics"]["ERR"] == pytest.approx(np.mean(list(err.values())), abs=TOL)
        assert body["metrics"]["RBP(p=0.9)"] == pytest.approx(np.mean(list(rbp.values())), abs=TOL)


def _metrics_command(gcl, folder, split, profile):
    measures = [arg for name in RUN_MEASURES for arg in ("-m", name)]
    result = gcl("metrics", folder / f"qrels_{split}.trec", folder / f"run_{split}.trec", "--profile", profile,
                 "--by-query", "--json", *measures)
    assert result.code == 0, result.err
    return result.json()


@pytest.mark.parametrize("case", CASES)
def test_metrics_command_on_the_files_reproduces_result_json(case, tie_runs, gcl):
    """gcl profile (rank-field order) and standard profile (ties by docid desc) both read the ranking scored."""
    for profile in ("gcl", "standard"):
        folder, evaluation, _ = tie_runs(case, profile)
        for split, body in evaluation.result.splits.items():
            doc = _metrics_command(gcl, folder, split, profile)
            values = per_query(evaluation, split)
            for qid, measured in doc["per_query"].items():
                for name in RUN_MEASURES:
                    assert measured[name] == pytest.approx(values.loc[qid, name], abs=TOL), (profile, qid, name)
            # the standard profile averages the queries in the run; every sampled query is there in these cases
            assert len(doc["per_query"]) == body["n_queries"]
            for name in RUN_MEASURES:
                assert doc["metrics"][name] == pytest.approx(body["metrics"][name], abs=TOL), (profile, name)


def test_ranked_writer_refuses_lists_out_of_trec_eval_order(tmp_path):
    write_ranked_run(tmp_path / "ok", [("q", ["b", "a", "c"], np.array([2, 2, 1], dtype=np.float32))])
    assert (tmp_path / "ok").read_text().splitlines() == ["q Q0 b 1 2.0 gcl-eval", "q Q0 a 2 2.0 gcl-eval",
                                                          "q Q0 c 3 1.0 gcl-eval"]
    for docs, scores in ((["a", "b"], [2.0, 2.0]), (["a", "b"], [1.0, 2.0]), (["a", "a"], [1.0, 1.0])):
        with pytest.raises(DataError, match="out of trec_eval's order"):
            write_ranked_run(tmp_path / "bad", [("q", docs, np.array(scores))])
    with pytest.raises(DataError, match="NaN"):
        write_ranked_run(tmp_path / "bad", [("q", ["a"], np.array([np.nan]))])
    assert not (tmp_path / "bad").exists()


def test_float32_scores_are_written_in_their_shortest_round_trip_digits(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.standard_normal(20000).astype(np.float32)
    values = np.concatenate([values, np.nextafter(values, np.float32(np.inf)), values[:50], [-0.0, 0.0]])
    order = np.argsort(-values, kind="stable")  # score descending; the doc ids below descend with the rank
    scores = values[order].astype(np.float32)
    docs = [f"d{len(values) - i:06d}" for i in range(len(values))]
    write_ranked_run(tmp_path / "run", [("q", docs, scores)])
    texts = [line.split()[4] for line in (tmp_path / "run").read_text().splitlines()]
    assert all(np.float32(t) == s for t, s in zip(texts, scores))  # exact in float32
    parsed = np.array([float(t) for t in texts])
    assert (np.diff(parsed) <= 0).all()  # read as doubles (trec_eval, pytrec_eval) the order stays
    same = scores[1:] == scores[:-1]
    assert ((parsed[1:] == parsed[:-1]) == same).all()  # and equal prints equal, distinct distinct
    assert "-0.0" not in texts and max(map(len, texts)) <= 15
