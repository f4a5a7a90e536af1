"""TREC qrels and run files, read into and written from the dicts `gcl_eval.measures.metrics.evaluate` takes.

qrels: one judgement a line, `qid 0 docid grade` (the second field, the iteration, is ignored; grade an
integer). run: one retrieved document a line, `qid Q0 docid rank score tag` (Q0 and tag ignored). Fields
are separated by any whitespace; blank lines are skipped. Ids stay strings.

A run query's documents are ordered by the rank field, lines with the same rank in file order: that is
the retrieval order the gcl metric profile uses to break score ties (trec_eval ignores the rank field and
breaks ties by docid; the standard profile does that at evaluation time, whatever the order here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from gcl_eval.util.atomic import atomic_file
from gcl_eval.util.errors import DataError

QRELS_FORMAT = "'qid 0 docid grade' (4 fields, integer grade)"
RUN_FORMAT = "'qid Q0 docid rank score tag' (6 fields, integer rank, numeric score)"


def _lines(path: str | os.PathLike):
    """(line number, fields, line) of each non-blank line; a missing or unreadable file is a DataError."""
    path = Path(path)
    try:
        handle = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    with handle:
        try:
            for lineno, line in enumerate(handle, start=1):
                fields = line.split()
                if fields:
                    yield lineno, fields, line
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a UTF-8 text file") from None


def _bad_line(path, lineno: int, line: str, expected: str) -> DataError:
    text = line.strip()
    if len(text) > 80:
        text = text[:77] + "..."
    return DataError(f"{path}:{lineno}: expected {expected}, got {text!r}")


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """{qid: {docid: grade}} from a TREC qrels file; a malformed or repeated line is a DataError."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, fields, line in _lines(path):
        if len(fields) != 4:
            raise _bad_line(path, lineno, line, QRELS_FORMAT)
        qid, _, docid, grade_text = fields
        try:
            grade = int(grade_text)
        except ValueError:
            raise _bad_line(path, lineno, line, QRELS_FORMAT) from None
        judgements = qrels.setdefault(qid, {})
        if docid in judgements:
            raise DataError(f"{path}:{lineno}: document {docid!r} of query {qid!r} is judged twice")
        judgements[docid] = grade
    return qrels


def read_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """{qid: {docid: score}} from a TREC run file, each query's documents in rank-field order (stable).

    A malformed line, a NaN score or a document listed twice for a query is a DataError.
    """
    rows: dict[str, list[tuple[int, str, float, int]]] = {}  # (rank, docid, score, line)
    for lineno, fields, line in _lines(path):
        if len(fields) != 6:
            raise _bad_line(path, lineno, line, RUN_FORMAT)
        qid, _, docid, rank_text, score_text, _ = fields
        try:
            rank = int(rank_text)
            score = float(score_text)
        except ValueError:
            raise _bad_line(path, lineno, line, RUN_FORMAT) from None
        if math.isnan(score):
            raise _bad_line(path, lineno, line, RUN_FORMAT + " (not NaN)")
        rows.setdefault(qid, []).append((rank, docid, score, lineno))
    run: dict[str, dict[str, float]] = {}
    for qid, entries in rows.items():
        entries.sort(key=lambda entry: entry[0])  # stable: equal ranks keep file order
        docs: dict[str, float] = {}
        for _, docid, score, lineno in entries:
            if docid in docs:
                raise DataError(f"{path}:{lineno}: document {docid!r} is listed twice for query {qid!r}")
            docs[docid] = score
        run[qid] = docs
    return run


def _check_id(value: object, what: str) -> str:
    text = str(value)
    if not text or any(ch.isspace() for ch in text):
        raise DataError(f"a TREC {what} must be non-empty and free of whitespace, got {text!r}")
    return text


def _is_integer(value: object) -> bool:
    """An int, a numpy integer or an integral float (not a bool, not a string)."""
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        return float(value) == int(value)
    except (TypeError, ValueError, OverflowError):
        return False


def _write_atomically(path: str | os.PathLike, lines) -> None:
    """Write through a temporary file in the same folder and rename it: a crash leaves no partial file."""
    with atomic_file(path) as tmp, open(tmp, "x", encoding="utf-8", newline="\n") as handle:
        handle.writelines(lines)


def write_qrels(path: str | os.PathLike, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """Write {qid: {docid: grade}} as `qid 0 docid grade` lines, in dict order."""

    def lines():
        for qid, judgements in qrels.items():
            q = _check_id(qid, "query id")
            for docid, grade in judgements.items():
                if not _is_integer(grade):
                    raise DataError(
                        f"qrels grade of query {q!r}, document {docid!r} must be an integer, got {grade!r}"
                    )
                yield f"{q} 0 {_check_id(docid, 'document id')} {int(grade)}\n"

    _write_atomically(path, lines())


def write_run(path: str | os.PathLike, run: Mapping[str, Mapping[str, float]], tag: str = "gcl-eval") -> None:
    """Write {qid: {docid: score}} as `qid Q0 docid rank score tag` lines.

    Each query's documents go out by score descending, ties in dict order (the gcl ranking), with ranks
    1, 2, ...; scores are written with repr so that reading the file back gives the same floats.
    """
    tag = _check_id(tag, "run tag")

    def lines():
        for qid, docs in run.items():
            q = _check_id(qid, "query id")
            ranked = sorted(docs.items(), key=lambda item: float(item[1]), reverse=True)  # stable
            for rank, (docid, score) in enumerate(ranked, start=1):
                score = float(score)
                if math.isnan(score):
                    raise DataError(f"run score of query {q!r}, document {docid!r} is NaN")
                yield f"{q} Q0 {_check_id(docid, 'document id')} {rank} {score!r} {tag}\n"

    _write_atomically(path, lines())
