"""gcl_eval.measures against pytrec_eval (trec_eval's ndcg_cut, map_cut, recall, P, recip_rank): from dicts,
from TREC files through `gcl-eval metrics`, and the protocol's per-query numbers on the run file it wrote.
Skipped when pytrec_eval (the dev extra) is missing."""

from __future__ import annotations

import numpy as np
import pytest

from gcl_eval.measures import parse_measure
from gcl_eval.measures.metrics import evaluate
from gcl_eval.measures.trec import read_run, write_qrels, write_run
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset, split_queries
from gcl_eval.protocol.results import save_run
from metric_cases import CUTOFFS, TREC_MEASURES, random_case
from run_helpers import RandomRanker, tiny_dataset
from tie_cases import CASES as TIE_CASES, make_tie_run

pytrec_eval = pytest.importorskip("pytrec_eval")

TOL = 1e-9
TREC_NAMES = {"nDCG": "ndcg_cut", "MAP": "map_cut", "R": "recall", "P": "P"}


def pytrec_values(qrels, run, names: list[str]) -> dict[str, dict[str, float]]:
    """{qid: {our measure name: pytrec_eval value}} for nDCG@k, MAP@k, R@k, P@k."""
    wanted = {}
    for name in names:
        m = parse_measure(name)
        wanted[name] = f"{TREC_NAMES[m.family]}_{m.k}"
    requested = {f"{TREC_NAMES[f]}.{','.join(map(str, CUTOFFS))}" for f in TREC_NAMES}
    clean_qrels = {q: {d: int(g) for d, g in j.items()} for q, j in qrels.items() if j}
    raw = pytrec_eval.RelevanceEvaluator(clean_qrels, requested).evaluate(run)
    return {qid: {name: vals[key] for name, key in wanted.items()} for qid, vals in raw.items()}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_standard_matches_pytrec_eval(seed, ties):
    qrels, run = random_case(seed, ties=ties)
    ours = evaluate(qrels, run, TREC_MEASURES, profile="standard", by_query=True)
    oracle = pytrec_values(qrels, run, TREC_MEASURES)
    assert set(ours) == set(oracle)
    for qid, values in oracle.items():
        for name, value in values.items():
            assert ours[qid][name] == pytest.approx(value, abs=TOL), (qid, name)
    means = evaluate(qrels, run, TREC_MEASURES, profile="standard")
    for name in TREC_MEASURES:
        assert means[name] == pytest.approx(np.mean([v[name] for v in oracle.values()]), abs=TOL)


@pytest.mark.parametrize("seed", range(4))
def test_gcl_matches_pytrec_eval_where_they_coincide(seed):
    """Tie-free: nDCG/MAP/R/P are trec_eval's per query (both take the ideal from all judged docs); the
    gcl profile adds the queries missing from the run (0) and the query without judgements (0)."""
    qrels, run = random_case(seed)
    ours = evaluate(qrels, run, TREC_MEASURES, by_query=True)
    oracle = pytrec_values(qrels, run, TREC_MEASURES)
    assert list(ours) == list(qrels)
    for qid in qrels:
        for name in TREC_MEASURES:
            expected = oracle[qid][name] if qid in oracle else 0.0
            assert ours[qid][name] == pytest.approx(expected, abs=TOL), (qid, name)
    means = evaluate(qrels, run, TREC_MEASURES)
    for name in TREC_MEASURES:
        expected = sum(oracle.get(q, {}).get(name, 0.0) for q in qrels) / len(qrels)
        assert means[name] == pytest.approx(expected, abs=TOL)


def test_standard_mrr_is_trec_eval_recip_rank_without_cutoff():
    qrels, run = random_case(3, ties=True)
    ours = evaluate(qrels, run, ["MRR@1000"], profile="standard", by_query=True)
    clean = {q: j for q, j in qrels.items() if j}
    oracle = pytrec_eval.RelevanceEvaluator(clean, {"recip_rank"}).evaluate(run)
    assert set(ours) == set(oracle)
    for qid, vals in oracle.items():
        assert ours[qid]["MRR@1000"] == pytest.approx(vals["recip_rank"], abs=TOL)


@pytest.mark.parametrize("ties", [False, True])
def test_metrics_command_on_trec_files_matches_pytrec_eval_on_the_same_files(ties, tmp_path, gcl):
    """The files as written by gcl_eval.measures.trec, read by pytrec_eval's own parsers; the standard
    profile breaks ties by docid as trec_eval does, whatever the rank field says."""
    qrels, run = random_case(21, ties=ties)
    qrels_path, run_path = tmp_path / "qrels.txt", tmp_path / "run.txt"
    write_qrels(qrels_path, {q: j for q, j in qrels.items() if j})
    write_run(run_path, {q: docs for q, docs in run.items() if docs})
    measures = [arg for name in TREC_MEASURES for arg in ("-m", name)]
    result = gcl("metrics", qrels_path, run_path, "--profile", "standard", "--by-query", "--json", *measures)
    assert result.code == 0, result.err
    with open(qrels_path) as q_file, open(run_path) as r_file:
        file_qrels, file_run = pytrec_eval.parse_qrel(q_file), pytrec_eval.parse_run(r_file)
    oracle = pytrec_values(file_qrels, file_run, TREC_MEASURES)
    per_query = result.json()["per_query"]
    assert set(per_query) == set(oracle)
    for qid, values in oracle.items():
        for name, value in values.items():
            assert per_query[qid][name] == pytest.approx(value, abs=TOL), (qid, name)


def test_protocol_numbers_equal_pytrec_eval_on_the_written_run(tmp_path):
    dataset = tiny_dataset(3)
    protocol = EvalProtocol(top_k=100, queries_per_split=40)
    evaluation = evaluate_dataset(RandomRanker(), dataset, protocol)
    folder = save_run(evaluation.result, tmp_path / "run", evaluation.runs)
    for split in ("in_domain", "zero_shot"):
        queries = split_queries(dataset, split, protocol)
        qrels = queries.qrels.to_dict(dataset.corpus_for(split).ids)
        run = read_run(folder / f"run_{split}.trec")
        # tie-free scores for pytrec_eval: rank order made explicit
        run = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in
               ((q, list(ranked)) for q, ranked in run.items())}
        oracle = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
        per_query = evaluation.result.per_query.query("split == @split").set_index("qid")
        for qid, values in oracle.items():
            assert per_query.loc[qid, "nDCG@10"] == pytest.approx(values["ndcg_cut_10"], abs=1e-9)
            assert per_query.loc[qid, "R@100"] == pytest.approx(values["recall_100"], abs=1e-9)


@pytest.mark.parametrize("case", TIE_CASES)
def test_protocol_ndcg_equals_pytrec_eval_on_written_files_full_of_ties(case, tmp_path):
    """BM25, duplicated embeddings, three score levels: pytrec_eval re-sorts the tied scores of the written
    run by docid (descending), which is the order the protocol scored, so nDCG@10 agrees per query."""
    folder, evaluation, _ = make_tie_run(case, tmp_path / "run")
    for split, body in evaluation.result.splits.items():
        with open(folder / f"qrels_{split}.trec") as q_file, open(folder / f"run_{split}.trec") as r_file:
            file_qrels, file_run = pytrec_eval.parse_qrel(q_file), pytrec_eval.parse_run(r_file)
        oracle = pytrec_eval.RelevanceEvaluator(file_qrels, {"ndcg_cut.10"}).evaluate(file_run)
        per_query = evaluation.result.per_query.query("split == @split").set_index("qid")
        assert set(oracle) == set(per_query.index)
        for qid, values in oracle.items():
            assert per_query.loc[qid, "nDCG@10"] == pytest.approx(values["ndcg_cut_10"], abs=TOL), (split, qid)
        mean = sum(v["ndcg_cut_10"] for v in oracle.values()) / len(oracle)
        assert body["metrics"]["nDCG@10"] == pytest.approx(mean, abs=TOL)
