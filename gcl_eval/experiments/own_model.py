"""Your own model from Python: one call evaluates an Encoder (gcl_eval.retrieval.encoder) under the protocol.

`evaluate_encoder` (exported as ``gcl_eval.evaluate_model``) is what `gcl-eval eval` does for an
open_clip model, for any object with fingerprint / encode_queries / encode_field: the same query
sample, field pooling, embedding cache, exact search, tie rule and measures, and the same RunResult
(written as a run folder when ``out`` is given, which compare, gate and the leaderboard read).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Mapping

from gcl_eval.data.dataset import COLD_START_SPLITS, Dataset
from gcl_eval.protocol.evaluate import EvalProtocol
from gcl_eval.protocol.results import RunResult
from gcl_eval.retrieval.encoder import Encoder
from gcl_eval.retrieval.fields import FieldWeights

TRACK_OF_FIELDS = {("title",): "text", ("image",): "image", ("image", "title"): "multi"}


def evaluate_encoder(encoder: Encoder, data: str | Path | Dataset, *, fields: Mapping[str, float] | None = None,
                     cold_start_fields: Mapping[str, float] | None = None, protocol: EvalProtocol | None = None,
                     out: str | Path | None = None, name: str | None = None, cache: bool = True,
                     images_root: str | Path | None = None, mirror: str | None = None,
                     device: str | None = None) -> RunResult:
    """Evaluate `encoder` on a dataset (a folder, a registered name or a read Dataset) under `protocol`.

    fields: document field weights (default {"title": 1.0}); cold_start_fields: the weights on
    novel_query, novel_corpus and zero_shot when they differ. out: also write the run folder.
    name: the model's name in result.json and tables (default: the encoder's class name). cache:
    read and write the embedding cache (keyed by the encoder's fingerprint). device: where the
    top-k search runs (None: CPU; "cuda" etc. for torch's search).
    """
    from gcl_eval.protocol.evaluate import evaluate_dataset
    from gcl_eval.protocol.results import save_run
    from gcl_eval.retrieval.dense import DenseRetriever
    from gcl_eval.retrieval.embedding_cache import EmbeddingCache
    from gcl_eval.retrieval.encoder import checked_encoder

    started = time.perf_counter()
    protocol = protocol or EvalProtocol()
    protocol.validate()
    weights = FieldWeights.of(**(fields or {"title": 1.0}))
    cold = FieldWeights.of(**cold_start_fields) if cold_start_fields else None
    checked = checked_encoder(encoder)
    dataset = _dataset(data, "image" in weights.active() + (cold.active() if cold else []), images_root, mirror)
    retriever = DenseRetriever(checked, doc_weights=weights,
                               split_doc_weights={s: cold for s in COLD_START_SPLITS} if cold else None,
                               cache=EmbeddingCache() if cache else None, device=device)
    evaluation = evaluate_dataset(retriever, dataset, protocol, device=device,
                                  model_info=_model_record(encoder, checked, name, weights, retriever))
    timings = evaluation.result.timings
    if retriever.cache is not None:
        timings["embedding_cache"] = retriever.cache.stats.as_dict()
    timings["total_s"] = round(time.perf_counter() - started, 3)
    if out is not None:
        save_run(evaluation.result, Path(out), evaluation.runs)
    return evaluation.result


def _dataset(data, images: bool, images_root, mirror) -> Dataset:
    if isinstance(data, Dataset):
        return data
    from gcl_eval.data.io import read_dataset
    from gcl_eval.data.resolve import resolve_dataset

    return read_dataset(resolve_dataset(data, images=images, mirror=mirror), images_root=images_root)


def _model_record(encoder, checked, name: str | None, weights: FieldWeights, retriever) -> dict:
    from gcl_eval.experiments.record import model_record

    label = name or type(encoder).__name__
    labels = {"label": label, "family": "python", "kind": "python", "encoder": "python", "name": label,
              "fingerprint_sha256": hashlib.sha256(checked.fingerprint().encode()).hexdigest()}
    track = TRACK_OF_FIELDS.get(tuple(weights.active()))
    if track:
        labels["track"] = track
    return model_record(retrieval=retriever.describe(), labels=labels)
