"""RunResult and the run folder: result.json (versioned), per_query.parquet, run_<split>.trec, qrels_<split>.trec.

The folder is built in a temporary sibling and renamed into place, so a killed run never leaves a
result that looks complete. `load_run` validates the schema and the agreement between the per-query
scores and the aggregates, so a hand-edited or truncated folder is refused with one line.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gcl_eval import __version__
from gcl_eval.measures.trec import write_qrels, write_ranked_run
from gcl_eval.util.atomic import atomic_folder
from gcl_eval.util.errors import GclError

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "tool", "model", "dataset", "protocol", "splits", "timings", "environment")
PROTOCOL_KEYS = ("top_k", "queries_per_split", "sampling", "seed", "metric_profile", "measures")


@dataclass
class SplitRun:
    """The ranked lists of one split (query ids; per query the retrieved doc ids and scores, in the
    protocol's rank order) and the graded judgements they were scored against ({qid: {doc id: grade}})."""

    query_ids: list[str]
    doc_ids: list[list[str]]
    scores: list[np.ndarray]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class RunResult:
    """Everything a run folder holds. splits[name] = {n_queries, corpus_size, metrics{measure: mean}}."""

    model: dict
    dataset: dict
    protocol: dict
    splits: dict[str, dict]
    per_query: pd.DataFrame  # columns: split, qid, one per measure
    timings: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    tool: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "tool": self.tool or tool_info(),
            "model": self.model,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "splits": self.splits,
            "timings": self.timings,
            "environment": self.environment or environment_info(),
        }

    def metric(self, split: str, measure: str) -> float:
        return self.splits[split]["metrics"][measure]


def display_label(model: dict) -> str | None:
    """A run's name for tables: a suite run's label (with its seed), else its preset; None if neither."""
    if not isinstance(model, dict):
        return None
    label = model.get("label") or model.get("preset")
    if not label:
        return None
    seed = model.get("seed") if model.get("label") else None
    return f"{label} seed {seed}" if seed is not None else str(label)


def tool_info() -> dict:
    return {"name": "gcl-eval", "version": __version__, "git_commit": _git_commit()}


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_info(device: str | None = None) -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for name in ("numpy", "torch", "open_clip", "faiss"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", None)
    if device:
        info["device"] = device
    return info


def save_run(result: RunResult, out: Path, runs: dict[str, SplitRun] | None = None, *, tag: str = "gcl-eval") -> Path:
    """Write the run folder atomically (replacing an existing one only once the new one is complete).

    With runs, each split also gets its TREC files: `run_<split>.trec` (the ranked lists, in the order
    they were scored) and `qrels_<split>.trec` (the judgements they were scored against), so that any
    IR tool can recompute the numbers.
    """
    out = Path(out)
    with atomic_folder(out) as tmp:
        (tmp / "result.json").write_text(json.dumps(_jsonable(result.to_json()), indent=2, sort_keys=False) + "\n")
        result.per_query.to_parquet(tmp / "per_query.parquet", index=False)
        for split, run in (runs or {}).items():
            write_ranked_run(tmp / f"run_{split}.trec", zip(run.query_ids, run.doc_ids, run.scores), tag)
            write_qrels(tmp / f"qrels_{split}.trec", run.qrels)
    return out


def load_run(path: Path | str) -> RunResult:
    """Read and validate a run folder (or its result.json); one-line GclError when it is not valid."""
    folder = Path(path)
    if folder.is_file() and folder.name == "result.json":
        folder = folder.parent
    result_file = folder / "result.json"
    if not result_file.is_file():
        raise GclError(f"{folder}: not a run folder (no result.json)")
    try:
        doc = json.loads(result_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GclError(f"{result_file}: not valid JSON ({err})") from None
    _validate(doc, result_file)
    per_query_file = folder / "per_query.parquet"
    if not per_query_file.is_file():
        raise GclError(f"{folder}: per_query.parquet is missing")
    try:
        per_query = pd.read_parquet(per_query_file)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        raise GclError(f"{per_query_file}: cannot be read ({' '.join(str(err).split())[:200]})") from None
    _validate_per_query(doc, per_query, per_query_file)
    return RunResult(model=doc["model"], dataset=doc["dataset"], protocol=doc["protocol"], splits=doc["splits"],
                     per_query=per_query, timings=doc["timings"], environment=doc["environment"],
                     tool=doc["tool"], schema_version=doc["schema_version"])


def _validate(doc: object, where: Path) -> None:
    if not isinstance(doc, dict):
        raise GclError(f"{where}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise GclError(f"{where}: missing key(s) {', '.join(missing)}")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise GclError(f"{where}: schema_version {doc['schema_version']!r} is not supported (expected {SCHEMA_VERSION})")
    protocol = doc["protocol"]
    if not isinstance(protocol, dict) or any(k not in protocol for k in PROTOCOL_KEYS):
        raise GclError(f"{where}: protocol needs {', '.join(PROTOCOL_KEYS)}")
    if not isinstance(protocol["measures"], list) or not all(isinstance(m, str) for m in protocol["measures"]):
        raise GclError(f"{where}: protocol measures must be a list of measure names")
    if not isinstance(doc["splits"], dict) or not doc["splits"]:
        raise GclError(f"{where}: splits must be a non-empty object")
    for split, body in doc["splits"].items():
        if not isinstance(body, dict) or not {"n_queries", "corpus_size", "metrics"} <= set(body):
            raise GclError(f"{where}: split {split!r} needs n_queries, corpus_size and metrics")
        if not isinstance(body["metrics"], dict):
            raise GclError(f"{where}: split {split!r}: metrics must be an object of measure: value")
        for measure in protocol["measures"]:
            value = body["metrics"].get(measure)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise GclError(f"{where}: split {split!r} has no finite value for {measure!r}")


def _validate_per_query(doc: dict, per_query: pd.DataFrame, where: Path) -> None:
    needed = ["split", "qid", *doc["protocol"]["measures"]]
    missing = [c for c in needed if c not in per_query.columns]
    if missing:
        raise GclError(f"{where}: missing column(s) {', '.join(missing)}")
    not_numbers = [m for m in doc["protocol"]["measures"] if not pd.api.types.is_numeric_dtype(per_query[m])]
    if not_numbers:
        raise GclError(f"{where}: column(s) {', '.join(not_numbers)} must hold numbers")
    for split, body in doc["splits"].items():
        rows = per_query[per_query["split"] == split]
        if len(rows) != body["n_queries"]:
            raise GclError(f"{where}: split {split!r} has {len(rows)} rows, result.json says {body['n_queries']} queries")
        for measure in doc["protocol"]["measures"]:
            mean = float(rows[measure].mean()) if len(rows) else 0.0
            if not math.isclose(mean, body["metrics"][measure], rel_tol=1e-9, abs_tol=1e-12):
                raise GclError(f"{where}: mean {measure} of split {split!r} ({mean}) disagrees with result.json "
                               f"({body['metrics'][measure]})")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
