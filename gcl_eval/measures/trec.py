"""TREC qrels and run files, read into and written from the dicts `gcl_eval.measures.metrics.evaluate` takes.

qrels: one judgement a line, `qid 0 docid grade` (the second field, the iteration, is ignored; grade an
integer). run: one retrieved document a line, `qid Q0 docid rank score tag` (Q0 and tag ignored). Fields
are separated by any whitespace; blank lines are skipped. Ids stay strings.

A run query's documents are ordered by the rank field, lines with the same rank in file order: that is
the retrieval order the gcl metric profile uses to break score ties (trec_eval ignores the rank field and
breaks ties by docid; the standard profile does that at evaluation time, whatever the order here).

The writers put each query's documents in trec_eval's own order (score descending, then docid
descending, as strings) with ranks 1, 2, ..., and write every score as the shortest text that reads
back as the same value in its own precision (float32 or float64): equal scores print equal, distinct
scores distinct and in the same order. Every tool therefore reads the ranking the rank field states.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

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
    """Write {qid: {docid: score}} as `qid Q0 docid rank score tag` lines, ranked as trec_eval ranks them.

    Each query's documents go out by score descending, then docid descending (trec_eval's tie rule), with
    ranks 1, 2, ...; scores are written so that reading the file back gives the same floats.
    """
    def ranked():
        for qid, docs in run.items():
            items = sorted(((str(d), s) for d, s in docs.items()), key=lambda item: (float(item[1]), item[0]),
                           reverse=True)
            yield qid, [d for d, _ in items], np.asarray([s for _, s in items])

    write_ranked_run(path, ranked(), tag)


def write_ranked_run(path: str | os.PathLike, ranked: Iterable[tuple[str, Sequence[str], Sequence[float]]],
                     tag: str = "gcl-eval") -> None:
    """Write (qid, docids, scores) lists as `qid Q0 docid rank score tag` lines, each in the order given.

    The order must be trec_eval's (score descending, then docid descending), so that the rank field and
    every tool that re-sorts by score agree; a list out of that order, or a NaN score, is a DataError.
    Scores keep their precision: a float32 array is written in float32's shortest digits.
    """
    tag = _check_id(tag, "run tag")

    def lines():
        for qid, docs, scores in ranked:
            q = _check_id(qid, "query id")
            docs = [_check_id(d, "document id") for d in docs]
            values = _as_floats(scores)
            _check_trec_order(q, docs, values)
            for rank, (docid, text) in enumerate(zip(docs, _score_texts(values)), start=1):
                yield f"{q} Q0 {docid} {rank} {text} {tag}\n"

    _write_atomically(path, lines())


def _as_floats(scores) -> np.ndarray:
    values = np.asarray(scores)
    return values if values.dtype == np.float32 else values.astype(np.float64)


def _score_texts(values: np.ndarray) -> list[str]:
    """The shortest round-trip text of each value in its dtype (numpy's), -0.0 written as 0.0."""
    return (values + values.dtype.type(0)).astype(str).tolist()


def _check_trec_order(qid: str, docs: list[str], values: np.ndarray) -> None:
    if len(values) != len(docs):
        raise DataError(f"run of query {qid!r}: {len(docs)} documents but {len(values)} scores")
    if np.isnan(values).any():
        docid = docs[int(np.flatnonzero(np.isnan(values))[0])]
        raise DataError(f"run score of query {qid!r}, document {docid!r} is NaN")
    step = np.flatnonzero(values[1:] >= values[:-1])  # a rise, or a tie that must fall in docid
    for i in step:
        if values[i + 1] > values[i] or docs[i + 1] >= docs[i]:
            raise DataError(f"run of query {qid!r}: document {docs[i + 1]!r} at rank {i + 2} is out of trec_eval's "
                            "order (score descending, then document id descending)")
