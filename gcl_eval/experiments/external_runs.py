"""Another system's retrieval scored under the protocol: the sampled queries out, TREC runs in.

`sampled_queries` gives the queries the protocol scores on each split (ids and texts, exactly as
`gcl-eval eval` samples them); an external system (BM25 in Pyserini or Elasticsearch, a BEIR
model, ...) retrieves for them from the split's corpus and writes a TREC run per split.
`evaluate_run_files` scores those runs with the protocol's own query sample and ground truth, each
query's documents ordered by the protocol's one tie rule (gcl_eval.protocol.ranking: score
descending, then document id descending, as trec_eval reads a run; the rank column is ignored) and
cut at the protocol's top_k. Feeding a run folder's own run_<split>.trec files back reproduces its
numbers exactly.

What a run may hold: lines of sampled queries (a query of the run that the sample does not hold is
ignored and counted, unless none of them is sampled, which is an error: the wrong split or the wrong
protocol options); documents of the split's corpus only; each (query, document) once; finite scores.
A sampled query the run does not answer scores 0, as the protocol scores a query with no results,
and is counted.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from gcl_eval.data.dataset import SPLITS, Dataset, Documents
from gcl_eval.protocol.evaluate import EvalProtocol, Evaluation, evaluate_dataset, split_queries
from gcl_eval.protocol.ranking import rank_retrieved
from gcl_eval.util.errors import DataError, GclError

QUERY_FORMATS = ("tsv", "jsonl")


# ---------------------------------------------------------------------------------- queries out

def sampled_queries(dataset: Dataset, protocol: EvalProtocol) -> dict[str, list[tuple[str, str]]]:
    """{split: [(query id, text), ...]}: the queries the protocol scores, in its order, for every split of
    protocol.splits (a split the dataset lacks is an error)."""
    protocol.validate()
    missing = [s for s in protocol.splits if s not in dataset.pairs]
    if missing:
        raise DataError(f"dataset {dataset.name} has no split {missing[0]} (it has {', '.join(dataset.pairs)})")
    out = {}
    for split in protocol.splits:
        queries = split_queries(dataset, split, protocol)
        out[split] = [(str(q), str(t)) for q, t in zip(queries.qrels.query_ids, queries.texts)]
    return out


def format_queries(queries: Sequence[tuple[str, str]], fmt: str) -> str:
    """tsv: `id<TAB>text` lines (Pyserini's topic format; tabs and line breaks in a text become spaces);
    jsonl: BEIR's queries.jsonl lines {"_id": ..., "text": ...} (texts exact)."""
    if fmt == "tsv":
        return "".join(f"{qid}\t{' '.join(text.replace(chr(9), ' ').splitlines())}\n" for qid, text in queries)
    if fmt == "jsonl":
        return "".join(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n" for qid, text in queries)
    raise GclError(f"unknown query file format {fmt!r}; known: {', '.join(QUERY_FORMATS)}")


# ------------------------------------------------------------------------------------- runs in

@dataclass
class RunFile:
    """One split's run read from a TREC file: per sampled query the retrieved corpus rows and scores."""

    path: Path
    sha256: str
    docs: dict[str, tuple[np.ndarray, np.ndarray]]  # query id -> (corpus rows, scores)
    ignored_queries: int  # run queries the sample does not hold
    unanswered: int = 0  # sampled queries the run has no line for


def read_run_file(path: Path, split: str, corpus: Documents, sampled: Sequence[str]) -> RunFile:
    """Read and check a TREC run of `split` against its corpus and query sample (module docstring)."""
    from gcl_eval.measures.trec import read_run
    from gcl_eval.retrieval.models import file_sha256

    path = Path(path)
    run = read_run(path)  # malformed lines, NaN scores and repeated (query, doc) lines: file:line errors
    row_of = {str(doc_id): row for row, doc_id in enumerate(corpus.ids)}
    wanted = set(sampled)
    docs, ignored = {}, 0
    for qid, scored in run.items():
        unknown = [d for d in scored if d not in row_of]
        if unknown:
            raise DataError(f"{path}: document {unknown[0]!r} (query {qid!r}) is not in the corpus of split {split} "
                            f"({len(unknown)} such document(s) for this query)")
        bad = next((d for d, s in scored.items() if not math.isfinite(s)), None)
        if bad is not None:
            raise DataError(f"{path}: query {qid!r}, document {bad!r}: the score {scored[bad]} is not finite")
        if qid not in wanted:
            ignored += 1
            continue
        docs[qid] = (np.fromiter((row_of[d] for d in scored), dtype=np.int64, count=len(scored)),
                     np.fromiter(scored.values(), dtype=np.float64, count=len(scored)))
    if run and not docs:
        raise DataError(f"{path}: none of its {len(run)} queries is among the {len(wanted)} sampled queries of split "
                        f"{split} (another split's run, or other --queries/--sampling/--ground-truth options?)")
    unanswered = sum(1 for q in sampled if q not in docs)
    return RunFile(path, file_sha256(path), docs, ignored, unanswered)


def ranked_matrix(run: RunFile, query_ids: Sequence[str], corpus_ids, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of the queries in order, each ranked by the tie rule and cut at k; -1 pads.

    A query with more than k documents is ranked and cut on its own first, so that one long list
    does not widen the whole matrix."""
    lists = [run.docs.get(qid, _NOTHING) for qid in query_ids]
    lists = [_top(rows, values, corpus_ids, k) if len(rows) > k else (rows, values) for rows, values in lists]
    width = max(1, max((len(rows) for rows, _ in lists), default=1))
    indices = np.full((len(query_ids), width), -1, dtype=np.int64)
    scores = np.zeros((len(query_ids), width), dtype=np.float64)
    for i, (rows, values) in enumerate(lists):
        indices[i, :len(rows)], scores[i, :len(rows)] = rows, values
    return rank_retrieved(indices, scores, corpus_ids)


_NOTHING = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))


def _top(rows: np.ndarray, values: np.ndarray, corpus_ids, k: int) -> tuple[np.ndarray, np.ndarray]:
    ranked_rows, ranked_values = rank_retrieved(rows[None, :], values[None, :], corpus_ids)
    return ranked_rows[0, :k], ranked_values[0, :k]


class RunFileRetriever:
    """The protocol's Retriever over read run files: `search` returns each split's run for its sampled
    queries (the protocol asks for them in the order `split_queries` gives, which `query_ids` holds)."""

    def __init__(self, runs: Mapping[str, RunFile], query_ids: Mapping[str, list[str]]):
        self.runs, self.query_ids = runs, query_ids

    def describe(self) -> dict:
        return {}

    def search(self, split: str, query_texts: Sequence[str], corpus_name: str, documents: Documents,
               k: int) -> tuple[np.ndarray, np.ndarray]:
        query_ids = self.query_ids[split]
        if len(query_texts) != len(query_ids):  # the sample is deterministic; this would be a protocol change
            raise GclError(f"split {split}: asked for {len(query_texts)} queries, the sample holds {len(query_ids)}")
        return ranked_matrix(self.runs[split], query_ids, documents.ids, k)


@dataclass(frozen=True)
class ExternalSystem:
    """What result.json's model record says about the runs' system."""

    name: str
    track: str | None = None  # text, image or multi: the leaderboard table the run joins
    family: str = "external"
    extra: Mapping = field(default_factory=dict)


def evaluate_run_files(dataset: Dataset, run_files: Mapping[str, str | Path], protocol: EvalProtocol,
                       system: ExternalSystem | None = None) -> Evaluation:
    """Score TREC runs ({split: path}) under the protocol and return the evaluation (nothing is written).

    With protocol.splits at its default (all four) the splits scored are those of run_files; otherwise
    protocol.splits, each of which needs a run file."""
    started = time.perf_counter()
    protocol = _protocol_for(run_files, protocol)
    queries = sampled_queries(dataset, protocol)  # also: every split is one of the dataset's
    query_ids = {split: [q for q, _ in rows] for split, rows in queries.items()}
    runs = {split: read_run_file(Path(run_files[split]), split, dataset.corpus_for(split), query_ids[split])
            for split in protocol.splits}
    retriever = RunFileRetriever(runs, query_ids)
    evaluation = evaluate_dataset(retriever, dataset, protocol, model_info=_model_record(system, runs))
    evaluation.result.timings["total_s"] = round(time.perf_counter() - started, 3)
    return evaluation


def _protocol_for(run_files: Mapping[str, str | Path], protocol: EvalProtocol) -> EvalProtocol:
    if not run_files:
        raise GclError("no run files given (SPLIT=PATH)")
    unknown = [s for s in run_files if s not in SPLITS]
    if unknown:
        raise GclError(f"run file for unknown split {unknown[0]!r}; known: {', '.join(SPLITS)}")
    if tuple(protocol.splits) == SPLITS:  # the default: the splits that have a run file
        return replace(protocol, splits=tuple(s for s in SPLITS if s in run_files))
    lacking = [s for s in protocol.splits if s not in run_files]
    if lacking:
        raise GclError(f"split {lacking[0]} is asked for but has no run file (give {lacking[0]}=PATH)")
    extra = [s for s in run_files if s not in protocol.splits]
    if extra:
        raise GclError(f"a run file is given for split {extra[0]}, which the requested splits leave out")
    return replace(protocol, splits=tuple(s for s in SPLITS if s in protocol.splits))


def _model_record(system: ExternalSystem | None, runs: Mapping[str, RunFile]) -> dict:
    from gcl_eval.experiments.record import model_record

    system = system or ExternalSystem(name="external")
    record = {"label": system.name, "family": system.family, "kind": "external", "system": system.name}
    if system.track:
        record["track"] = system.track
    record["run_files"] = {split: {"path": str(run.path), "sha256": run.sha256,
                                   "queries_without_results": run.unanswered, "ignored_queries": run.ignored_queries}
                           for split, run in runs.items()}
    record.update(system.extra)
    return model_record(retrieval={}, labels=record)


# ------------------------------------------------------------------------------ the CLI's entries

def load_dataset(data: str | Path, *, mirror: str | None = None) -> Dataset:
    """A dataset folder or registered name, read without its images (neither path here needs them)."""
    from gcl_eval.data.io import read_dataset
    from gcl_eval.data.resolve import resolve_dataset

    return read_dataset(resolve_dataset(data, images=False, mirror=mirror))


def write_sampled_queries(data: str | Path, protocol: EvalProtocol, out: Path | None, fmt: str, *,
                          splits: tuple[str, ...] | None = None, mirror: str | None = None) -> dict[str, str]:
    """The query files of `splits` (None: every split of the dataset): {split: text}. Written to `out` when
    given (one split: the file `out`; several: `out`/queries_<split>.<fmt>), atomically; without `out`,
    only one split may be asked for (it goes to standard output)."""
    from gcl_eval.util.atomic import atomic_write_text

    if fmt not in QUERY_FORMATS:
        raise GclError(f"unknown query file format {fmt!r}; known: {', '.join(QUERY_FORMATS)}")
    dataset = load_dataset(data, mirror=mirror)
    protocol = replace(protocol, splits=splits or tuple(s for s in SPLITS if s in dataset.pairs))
    if len(protocol.splits) > 1 and out is None:
        raise GclError(f"{len(protocol.splits)} splits go to a folder: give --out FOLDER, or one --split "
                       "for standard output")
    texts = {split: format_queries(rows, fmt) for split, rows in sampled_queries(dataset, protocol).items()}
    if out is not None:
        if len(texts) == 1:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out), next(iter(texts.values())))
        else:
            Path(out).mkdir(parents=True, exist_ok=True)
            for split, text in texts.items():
                atomic_write_text(Path(out) / f"queries_{split}.{fmt}", text)
    return texts


def evaluate_and_save_run_files(data: str | Path, run_files: Mapping[str, str | Path], protocol: EvalProtocol,
                                out: Path, system: ExternalSystem, *, mirror: str | None = None) -> Evaluation:
    """`gcl-eval eval --run-file`: score the runs and write the run folder (nothing on an error)."""
    from gcl_eval.protocol.results import save_run

    evaluation = evaluate_run_files(load_dataset(data, mirror=mirror), run_files, protocol, system)
    save_run(evaluation.result, out, evaluation.runs, tag=_trec_tag(system.name))
    return evaluation


def _trec_tag(name: str) -> str:
    return "".join(ch if not ch.isspace() else "_" for ch in name) or "external"


def run_file_summary(result) -> list[str]:
    """One line per split whose run left sampled queries unanswered or had queries outside the sample."""
    lines = []
    for split, info in result.model.get("run_files", {}).items():
        missing, ignored = info["queries_without_results"], info["ignored_queries"]
        if missing or ignored:
            lines.append(f"{split}: {missing} of {result.splits[split]['n_queries']} sampled queries have no results "
                         f"in the run (scored 0); {ignored} run queries outside the sample ignored")
    return lines
