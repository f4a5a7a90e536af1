"""TREC qrels / run reading and writing."""

from __future__ import annotations

import re

import pytest

from gcl_eval.util.errors import GclError
from gcl_eval.measures.trec import read_qrels, read_run, write_qrels, write_run


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_qrels_keeps_ids_as_strings(tmp_path):
    path = write(tmp_path, "q.txt", "001 0 d1 2\n001 0 0042 0\n\n002\t0\td1\t-1\n")
    assert read_qrels(path) == {"001": {"d1": 2, "0042": 0}, "002": {"d1": -1}}


def test_read_run_orders_by_rank_field_then_file_order(tmp_path):
    text = "q1 Q0 c 3 0.5 t\nq1 Q0 a 1 0.9 t\nq1 Q0 b 2 0.9 t\nq1 Q0 d 2 0.1 t\nq2 Q0 x 1 -1e3 t\n"
    run = read_run(write(tmp_path, "r.txt", text))
    assert list(run["q1"]) == ["a", "b", "d", "c"]
    assert run["q1"]["b"] == 0.9 and run["q2"] == {"x": -1000.0}


@pytest.mark.parametrize(
    "text, lineno",
    [
        ("q 0 d 1\nq 0 d2\n", 2),  # 3 fields
        ("q 0 d 1 extra\n", 1),
        ("\nq 0 d high\n", 2),  # not an integer
        ("q 0 d 1.5\n", 1),
    ],
)
def test_malformed_qrels_line_names_file_and_line(tmp_path, text, lineno):
    path = write(tmp_path, "bad.qrels", text)
    with pytest.raises(GclError) as info:
        read_qrels(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{lineno}: expected 'qid 0 docid grade'")
    assert "\n" not in message


@pytest.mark.parametrize(
    "text, lineno",
    [
        ("q Q0 d 1 0.5\n", 1),  # 5 fields
        ("q Q0 d 1 0.5 t\nq Q0 e one 0.4 t\n", 2),
        ("q Q0 d 1 high t\n", 1),
        ("q Q0 d 1 nan t\n", 1),
    ],
)
def test_malformed_run_line_names_file_and_line(tmp_path, text, lineno):
    path = write(tmp_path, "bad.run", text)
    expected = rf"^{re.escape(str(path))}:{lineno}: expected 'qid Q0 docid rank score tag'"
    with pytest.raises(GclError, match=expected):
        read_run(path)


def test_duplicates_and_missing_files_are_errors(tmp_path):
    with pytest.raises(GclError, match=r":2: document 'd' of query 'q' is judged twice"):
        read_qrels(write(tmp_path, "q", "q 0 d 1\nq 0 d 2\n"))
    with pytest.raises(GclError, match=r":2: document 'd' is listed twice for query 'q'"):
        read_run(write(tmp_path, "r", "q Q0 d 1 1.0 t\nq Q0 d 2 0.5 t\n"))
    with pytest.raises(GclError, match="no such file"):
        read_qrels(tmp_path / "missing")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00q 0 d 1")
    with pytest.raises(GclError, match="UTF-8"):
        read_run(tmp_path / "binary")


def test_round_trip(tmp_path):
    qrels = {"q1": {"d1": 3, "d2": 0}, "q_2": {"d3": 1}}
    run = {"q1": {"d2": 0.1, "d1": 0.7, "d9": 0.1}, "q_2": {"d3": 1 / 3, "d4": -2.5e-300}}
    write_qrels(tmp_path / "qrels", qrels)
    write_run(tmp_path / "run", run, tag="mine")
    assert read_qrels(tmp_path / "qrels") == qrels
    back = read_run(tmp_path / "run")
    assert back == run
    # written in trec_eval's ranking: score descending, ties by docid descending
    assert list(back["q1"]) == ["d1", "d9", "d2"]
    lines = (tmp_path / "run").read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 0.7 mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_writers_reject_ids_with_whitespace_and_bad_grades(tmp_path):
    with pytest.raises(GclError, match="whitespace"):
        write_qrels(tmp_path / "q", {"q 1": {"d": 1}})
    with pytest.raises(GclError, match="integer"):
        write_qrels(tmp_path / "q", {"q": {"d": 1.5}})
    with pytest.raises(GclError, match="whitespace"):
        write_run(tmp_path / "r", {"q": {"d x": 1.0}})
    assert not (tmp_path / "q").exists() and not (tmp_path / "r").exists()
