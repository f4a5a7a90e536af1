"""Other systems as entrants: `gcl-eval data queries` and `gcl-eval eval --run-file` (docs/evaluation.md)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gcl_eval.data.io import read_dataset
from gcl_eval.experiments.external_runs import RunFile, evaluate_run_files, ranked_matrix, sampled_queries
from gcl_eval.protocol.ranking import rank_retrieved
from gcl_eval.protocol.evaluate import EvalProtocol, split_queries
from gcl_eval.protocol.results import load_run
from test_data_beir import make_beir_folder

SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
PROTOCOL = ["--queries", "20", "--top-k", "50"]


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("ext", "--queries", "120", "--docs-per-query", "20", "--seed", "2", "--no-images")


@pytest.fixture(scope="module")
def bm25_run(data, tmp_path_factory, gcl):
    out = tmp_path_factory.mktemp("bm25") / "bm25"
    result = gcl("run", "--model", "bm25", "--data", data, "--out", out, *PROTOCOL)
    assert result.code == 0, result.err
    return out


def _run_files(folder, splits=SPLITS):
    return [arg for s in splits for arg in ("--run-file", f"{s}={folder / f'run_{s}.trec'}")]


def _same_numbers(a, b):
    assert list(a.splits) == list(b.splits)
    for split in a.splits:
        assert a.splits[split]["metrics"] == b.splits[split]["metrics"], split
        assert a.splits[split]["curves"] == b.splits[split]["curves"], split
        assert a.splits[split]["n_queries"] == b.splits[split]["n_queries"]
    assert a.per_query.equals(b.per_query)


def test_a_bm25_run_folder_fed_back_reproduces_its_numbers(gcl, data, bm25_run, tmp_path):
    out = tmp_path / "results" / "again"
    result = gcl("eval", "--data", data, "--out", out, "--name", "bm25 again", "--track", "text", *PROTOCOL,
                 *_run_files(bm25_run))
    assert result.code == 0, result.err
    original, again = load_run(bm25_run), load_run(out)
    _same_numbers(original, again)
    assert again.protocol == original.protocol
    model = again.model
    assert model["kind"] == "external" and model["label"] == "bm25 again" and model["track"] == "text"
    assert len(model["run_files"]["zero_shot"]["sha256"]) == 64
    assert all(f["queries_without_results"] == 0 and f["ignored_queries"] == 0 for f in model["run_files"].values())
    for split in SPLITS:  # the rewritten run is the same ranking, line for line
        assert (out / f"run_{split}.trec").read_text().replace("bm25_again", "x").split("\n") == \
            [" ".join(line.split()[:5] + ["x"]) if line else "" for line in
             (bm25_run / f"run_{split}.trec").read_text().split("\n")]
    compared = gcl("compare", bm25_run, out)
    assert compared.code == 0, compared.err
    gate = gcl("gate", "--candidate", out, "--baseline", bm25_run)
    assert gate.code == 0, gate.err  # identical numbers: no regression
    shutil.copytree(bm25_run, out.parent / "bm25")
    site = gcl("leaderboard", "build", out.parent, "--out", tmp_path / "site")  # the same text track
    assert site.code == 0 and "2 runs, 2 models in 1 tables" in site.out, site.err


@pytest.mark.usefixtures("one_torch_thread")
def test_a_dense_run_folder_fed_back_reproduces_its_numbers(gcl, data, tmp_path):
    dense = tmp_path / "dense"
    result = gcl("eval", "--arch", "tiny-clip", "--data", data, "--out", dense, "--fields", "title=1", "--workers",
                 "0", "--batch-size", "64", "--sampling", "numpy", "--measure", "nDCG@10", "--measure", "ERR",
                 *PROTOCOL)
    assert result.code == 0, result.err
    out = tmp_path / "again"
    result = gcl("eval", "--data", data, "--out", out, "--sampling", "numpy", "--measure", "nDCG@10",
                 "--measure", "ERR", *PROTOCOL, *_run_files(dense))
    assert result.code == 0, result.err
    _same_numbers(load_run(dense), load_run(out))


def test_splits_scored_are_those_with_run_files(gcl, data, bm25_run, tmp_path):
    out = tmp_path / "two"
    result = gcl("eval", "--data", data, "--out", out, "--json", *PROTOCOL,
                 *_run_files(bm25_run, ("zero_shot", "in_domain")))
    assert result.code == 0, result.err
    assert list(result.json()["splits"]) == ["in_domain", "zero_shot"]
    assert result.json()["splits"]["in_domain"]["metrics"] == load_run(bm25_run).splits["in_domain"]["metrics"]


def test_missing_queries_score_zero_and_extra_queries_are_ignored(gcl, data, bm25_run, tmp_path):
    lines = (bm25_run / "run_in_domain.trec").read_text().splitlines()
    first = lines[0].split()[0]
    kept = [line for line in lines if line.split()[0] != first]
    doc = lines[0].split()[2]
    run = tmp_path / "run.trec"
    run.write_text("\n".join(kept + [f"not-sampled Q0 {doc} 1 3.5 x"]) + "\n")
    out = tmp_path / "r"
    result = gcl("eval", "--data", data, "--out", out, "--split", "in_domain", *PROTOCOL,
                 "--run-file", f"in_domain={run}")
    assert result.code == 0, result.err
    assert "1 of 20 sampled queries have no results" in result.out and "1 run queries outside" in result.out
    scored = load_run(out)
    row = scored.per_query[scored.per_query["qid"] == first]
    assert float(row["nDCG@10"].iloc[0]) == 0.0 and float(row["ERR"].iloc[0]) == 0.0
    original = load_run(bm25_run).per_query
    others = original[(original["split"] == "in_domain") & (original["qid"] != first)].reset_index(drop=True)
    assert others.equals(scored.per_query[scored.per_query["qid"] != first].reset_index(drop=True))
    info = scored.model["run_files"]["in_domain"]
    assert info["queries_without_results"] == 1 and info["ignored_queries"] == 1


def test_ties_are_ranked_by_the_tie_rule_whatever_the_rank_column(data, tmp_path):
    """Every document with one score, ranks reversed: ranked by doc id descending, as trec_eval does."""
    dataset = read_dataset(data)
    protocol = EvalProtocol(queries_per_split=5, top_k=50, splits=("in_domain",))
    queries = split_queries(dataset, "in_domain", protocol)
    ids = [str(d) for d in dataset.corpus_for("in_domain").ids]
    run = tmp_path / "ties.trec"
    run.write_text("".join(f"{q} Q0 {d} {i} 1.0 x\n" for q in queries.qrels.query_ids for i, d in enumerate(ids)))
    evaluation = evaluate_run_files(dataset, {"in_domain": run}, protocol)
    expected = sorted(ids, reverse=True)[:50]
    assert all(docs == expected for docs in evaluation.runs["in_domain"].doc_ids)


def test_data_queries_are_the_protocols_sample(gcl, data, tmp_path):
    dataset = read_dataset(data)
    for sampling in ("reference", "numpy"):
        protocol = EvalProtocol(queries_per_split=20, sampling=sampling, seed=4)
        expected = sampled_queries(dataset, protocol)
        result = gcl("data", "queries", data, "--split", "novel_query", "--queries", "20", "--seed", "4",
                     "--sampling", sampling)
        assert result.code == 0, result.err
        assert [tuple(line.split("\t")) for line in result.out.splitlines()] == expected["novel_query"]
    folder = tmp_path / "queries"
    result = gcl("data", "queries", data, "--out", folder, "--format", "jsonl", "--queries", "20")
    assert result.code == 0, result.err
    expected = sampled_queries(dataset, EvalProtocol(queries_per_split=20))
    for split in SPLITS:
        rows = [json.loads(line) for line in (folder / f"queries_{split}.jsonl").read_text().splitlines()]
        assert [(r["_id"], r["text"]) for r in rows] == expected[split]
        assert [q for q, _ in expected[split]] == [str(q) for q in split_queries(
            dataset, split, EvalProtocol(queries_per_split=20)).qrels.query_ids]


def _bad_run(tmp_path, bm25_run, edit):
    lines = (bm25_run / "run_in_domain.trec").read_text().splitlines()
    path = tmp_path / "bad.trec"
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda ls: ls + [ls[0].replace(ls[0].split()[2], "no-such-doc")], "'no-such-doc'"),
    (lambda ls: ls + [ls[0]], "listed twice"),
    (lambda ls: ls[:3] + [ls[3].rsplit(" ", 2)[0] + " nan x"] + ls[4:], "bad.trec:4"),
    (lambda ls: ls[:5] + ["q1 Q0 doc"] + ls[5:], "bad.trec:6"),
    (lambda ls: ls[:1] + [ls[1].rsplit(" ", 2)[0] + " inf x"], "not finite"),
    (lambda ls: ["x" + line for line in ls], "none of its"),  # every query id changed
])
def test_bad_run_files_exit_2_with_one_line_and_write_nothing(gcl, data, bm25_run, tmp_path, edit, needle):
    path = _bad_run(tmp_path, bm25_run, edit)
    result = gcl("eval", "--data", data, "--out", tmp_path / "r", *PROTOCOL, "--run-file", f"in_domain={path}")
    assert result.code == 2 and len(result.error_lines) == 1, result.err
    assert needle in result.err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, needle", [
    (["--split", "novel_query", "--run-file", "in_domain={run}"], "split novel_query is asked for"),
    (["--run-file", "nowhere={run}"], "unknown split 'nowhere'"),
    (["--run-file", "in_domain"], "not SPLIT=PATH"),
    (["--run-file", "in_domain={run}", "--run-file", "in_domain={run}"], "twice"),
    (["--run-file", "in_domain=/no/such/file"], "no such file"),
    ([], "--run-file SPLIT=PATH"),  # neither a model nor a run
    (["--arch", "tiny-clip", "--run-file", "in_domain={run}"], "without --arch"),
])
def test_bad_run_file_options_exit_2(gcl, data, bm25_run, tmp_path, args, needle):
    run = bm25_run / "run_in_domain.trec"
    result = gcl("eval", "--data", data, "--out", tmp_path / "r", *PROTOCOL, *[a.format(run=run) for a in args])
    assert result.code == 2 and len(result.error_lines) == 1, result.err
    assert needle in result.err
    assert not (tmp_path / "r").exists()


def test_a_split_the_dataset_lacks_exits_2(gcl, tmp_path):
    beir = make_beir_folder(tmp_path / "beir")  # one split: zero_shot
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 001 1 2.0 x\n")
    result = gcl("eval", "--data", beir, "--out", tmp_path / "r", "--run-file", f"in_domain={run}")
    assert result.code == 2 and "has no split in_domain" in result.err and len(result.error_lines) == 1, result.err
    assert not (tmp_path / "r").exists()
    result = gcl("data", "queries", beir, "--split", "novel_query")
    assert result.code == 2 and "has no split novel_query" in result.err, result.err


def test_a_beir_collection_scores_with_its_one_split(gcl, tmp_path):
    beir = make_beir_folder(tmp_path / "beir")
    queries = gcl("data", "queries", beir)  # one split: standard output
    assert queries.code == 0 and sorted(queries.out.splitlines()) == ["q1\tgrey sofa", "q2\tmug"]
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 001 1 2.0 x\nq1 Q0 d3 2 1.0 x\nq2 Q0 001 1 5.0 x\nq2 Q0 2 2 5.0 x\n")
    result = gcl("eval", "--data", beir, "--out", tmp_path / "r", "--json", "--measure", "MRR@1000",
                 "--run-file", f"zero_shot={run}")
    assert result.code == 0, result.err
    # q1: its relevant document first; q2: a tie, ranked by doc id descending: "2" before "001"
    assert result.json()["splits"]["zero_shot"]["metrics"]["MRR@1000"] == 1.0


def test_long_lists_cut_on_their_own_rank_as_the_whole_matrix_does():
    """ranked_matrix ranks a list longer than k by itself first; the result is the full ranking's top k."""
    rng = np.random.default_rng(0)
    corpus_ids = np.array([f"d{i:03d}" for i in rng.permutation(300)], dtype=object)
    docs = {}
    for q, n in enumerate([0, 3, 40, 120, 300]):
        rows = rng.permutation(300)[:n]
        docs[f"q{q}"] = (rows.astype(np.int64), rng.integers(0, 5, n).astype(np.float64))  # many ties
    run = RunFile(Path("r"), "", docs, 0)
    query_ids = [*docs, "unanswered"]
    full = np.full((len(query_ids), 300), -1, dtype=np.int64)
    scores = np.zeros(full.shape)
    for i, q in enumerate(query_ids[:-1]):
        full[i, :len(docs[q][0])], scores[i, :len(docs[q][0])] = docs[q]
    expected_rows, expected_scores = rank_retrieved(full, scores, corpus_ids)
    rows, values = ranked_matrix(run, query_ids, corpus_ids, 50)
    width = rows.shape[1]
    assert width == 50
    assert np.array_equal(rows, expected_rows[:, :width]) and np.array_equal(values[rows >= 0],
                                                                            expected_scores[:, :width][rows >= 0])
