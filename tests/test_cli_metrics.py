"""`gcl-eval metrics QRELS RUN` through the real entry point (the `gcl` fixture of conftest.py)."""

from __future__ import annotations

import pytest

from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.metrics import evaluate
from gcl_eval.measures.trec import read_qrels, read_run

QRELS = "q1 0 a 2\nq1 0 b 1\nq2 0 c 3\nq3 0 d 1\n"
RUN = "q1 Q0 a 1 0.9 t\nq1 Q0 x 2 0.8 t\nq1 Q0 b 3 0.7 t\nq2 Q0 y 1 0.5 t\nq2 Q0 c 2 0.4 t\n"


@pytest.fixture
def files(tmp_path):
    qrels, run = tmp_path / "qrels.txt", tmp_path / "run.txt"
    qrels.write_text(QRELS)
    run.write_text(RUN)
    return str(qrels), str(run)


def test_json_output_matches_the_library(files, gcl):
    qrels, run = files
    result = gcl("metrics", qrels, run, "--json", "-m", "nDCG@10", "-m", "ERR")
    assert result.code == 0 and result.err == ""
    doc = result.json()
    expected = evaluate(read_qrels(qrels), read_run(run), ["nDCG@10", "ERR"])
    assert doc["metrics"] == expected
    assert doc["profile"] == "gcl" and doc["n_queries"] == 3 and "per_query" not in doc


def test_json_by_query_and_standard_profile(files, gcl):
    qrels, run = files
    result = gcl("metrics", qrels, run, "--json", "--by-query", "--profile", "standard", "--max-grade", "4")
    assert result.code == 0
    doc = result.json()
    assert doc["profile"] == "standard" and doc["max_grade"] == 4
    assert set(doc["per_query"]) == {"q1", "q2"}  # q3 is not in the run
    assert tuple(doc["metrics"]) == PAPER_MEASURES == ("nDCG@10", "ERR", "RBP(p=0.9)")  # the defaults
    expected = evaluate(read_qrels(qrels), read_run(run), profile="standard", by_query=True, max_grade=4)
    assert doc["per_query"] == expected


def test_plain_text_when_not_a_terminal(files, gcl):
    qrels, run = files
    result = gcl("metrics", qrels, run, "--by-query")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "profile gcl, 3 queries"
    assert lines[1].split() == ["query", "nDCG@10", "ERR", "RBP(p=0.9)"]
    assert [line.split()[0] for line in lines[2:]] == ["q1", "q2", "q3", "all"]
    means = evaluate(read_qrels(qrels), read_run(run))
    assert lines[-1].split()[1:] == [f"{means[name]:.4f}" for name in means]
    assert lines[4].split()[1:] == ["0.0000"] * 3  # q3 retrieved nothing


def test_rich_table_on_a_terminal(files, gcl, monkeypatch):
    monkeypatch.setattr("gcl_eval.commands.metrics._stdout_is_terminal", lambda: True)
    qrels, run = files
    result = gcl("metrics", qrels, run, "-m", "P@2")
    assert result.code == 0
    assert "P@2" in result.out and "all" in result.out and "profile gcl" in result.out


def test_a_measure_keeps_the_spelling_given(files, gcl):
    qrels, run = files
    result = gcl("metrics", qrels, run, "--json", "-m", "RBP(p=.9)", "-m", "RBP(p=0.9)")
    assert result.code == 0
    metrics = result.json()["metrics"]
    assert list(metrics) == ["RBP(p=.9)", "RBP(p=0.9)"] and metrics["RBP(p=.9)"] == metrics["RBP(p=0.9)"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-m", "nDCG"], "unknown measure 'nDCG'; known forms: nDCG@k, ERR, ERR@k, RBP(p=x)"),
        (["-m", "RBP(p=2)"], "RBP needs 0 < p < 1"),
    ],
)
def test_bad_measure_exits_2_with_one_line(files, gcl, extra, message):
    qrels, run = files
    result = gcl("metrics", qrels, run, *extra)
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("gcl-eval: error: ") and message in result.err


def test_malformed_file_exits_2_naming_file_and_line(files, gcl, tmp_path):
    qrels, _ = files
    bad = tmp_path / "bad.run"
    bad.write_text("q1 Q0 a 1 0.9 t\nq1 Q0 b 2 t\n")
    result = gcl("metrics", qrels, bad)
    assert result.code == 2
    assert result.err == f"gcl-eval: error: {bad}:2: expected 'qid Q0 docid rank score tag' (6 fields, " \
        "integer rank, numeric score), got 'q1 Q0 b 2 t'\n"


def test_missing_file_and_bad_profile_exit_2(files, gcl, tmp_path):
    qrels, run = files
    result = gcl("metrics", tmp_path / "nope", run)
    assert result.code == 2 and "no such file" in result.err
    result = gcl("metrics", qrels, run, "--profile", "trec")
    assert result.code == 2 and "trec" in result.err
    result = gcl("metrics", qrels, run, "--max-grade", "3")
    assert result.code == 2 and "standard profile only" in result.err
