"""The one evaluation path, shared by `gcl-eval eval` and `gcl-eval run`: a model (open_clip, text or BM25)
becomes a retriever, the protocol runs on a dataset, and the result records what was evaluated.

Dense models encode through the embedding cache; field weights may differ on the cold-start splits
(the paper's "0.5/0.0": image and title in-domain, title only where the query or corpus is new). A model
trained with a learned field fusion (fusion.pt beside its model.pt) is scored by that fusion instead, the
same on every split. Under torchrun, `evaluate_and_save` splits encoding across the processes and the
main one writes the folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from gcl_eval.data.dataset import COLD_START_SPLITS
from gcl_eval.experiments.checkpoints import Training
from gcl_eval.experiments.preset import Preset
from gcl_eval.experiments.record import Weights, model_record
from gcl_eval.protocol.evaluate import EvalProtocol, Evaluation, evaluate_dataset
from gcl_eval.retrieval.fields import FieldWeights
from gcl_eval.util.threads import budget_cpu_threads, default_workers


@dataclass(frozen=True)
class ModelToEvaluate:
    """A model and how it scores documents.

    Weights by kind: "open_clip" ``name`` is the architecture (or an hf-hub: model), ``pretrained`` a
    pretrained tag, a checkpoint path or URL, or an hf-hub: model (None: the init seeded with ``seed``;
    gcl_eval.retrieval.model_source); "text" ``name`` is the text model (a folder or a hub name) and
    ``pretrained`` None or the folder of a finished text training run (gcl_eval.experiments.text_models);
    "bm25" has none (``bm25``: backend, k1, b). A finished ``training`` run replaces them.
    """

    kind: str
    name: str = ""
    pretrained: str | None = None
    sha256: str | None = None  # the digest a checkpoint URL's download must have (None: not recorded)
    mirror: str | None = None  # fetch a checkpoint URL from MIRROR/<file name> (default: $GCL_EVAL_MIRROR)
    seed: int = 0
    prefixes: str | Mapping | None = "e5"  # text models: "e5", "none" or {"query", "document"}; None: the
    # checkpoint's, else "e5"
    pooling: str = "auto"  # text models: mean, cls, lasttoken; "stated"/"auto": the model's (text_models)
    max_length: int | None = None  # text models: tokens per text (None: the encoder's default)
    bm25: Mapping = field(default_factory=dict)
    training: Training | None = None
    doc_weights: FieldWeights | None = None
    cold_start_weights: FieldWeights | None = None  # on COLD_START_SPLITS instead of doc_weights
    batch_size: int = 256
    workers: int | None = None  # image-decoding processes; None: half the CPU cores (gcl_eval.util.threads)
    precision: str = "fp32"
    use_cache: bool = True


def evaluate_model(model: ModelToEvaluate, dataset, protocol: EvalProtocol, *, device: str,
                   preset: Preset | None = None, labels: Mapping | None = None,
                   started: float | None = None) -> Evaluation:
    """Build the retriever, run the protocol on every split, record the model; nothing is written.

    ``preset`` and ``labels`` go into the record (gcl_eval.experiments.record); ``started``: when the whole
    job began (perf_counter), for total_s."""
    t0 = time.perf_counter()
    retriever, weights = build_retriever(model, device)
    load_s = time.perf_counter() - t0
    record = model_record(retrieval=retriever.describe(), preset=preset, training=model.training,
                          weights=weights, labels=labels)
    evaluation = evaluate_dataset(retriever, dataset, protocol, model_info=record, device=device)
    timings = evaluation.result.timings
    timings["load_s"] = round(load_s, 3)
    if model.training is not None:
        timings.update(train_s=round(model.training.seconds, 3), checkpoint_reused=model.training.reused)
    timings["total_s"] = round(time.perf_counter() - (t0 if started is None else started), 3)
    cache = getattr(retriever, "cache", None)
    if cache is not None:
        timings["embedding_cache"] = cache.stats.as_dict()
    return evaluation


def build_retriever(model: ModelToEvaluate, device: str):
    """(retriever, Weights or None for BM25)."""
    if model.kind == "bm25":
        from baselines.bm25 import BM25Retriever

        return BM25Retriever(**model.bm25), None
    from gcl_eval.retrieval.dense import DenseRetriever
    from gcl_eval.retrieval.embedding_cache import EmbeddingCache

    workers = model.workers if model.workers is not None else default_workers()
    budget_cpu_threads(workers, device)
    if model.kind == "open_clip":
        encoder, weights = _open_clip_encoder(model, device, workers)
    else:
        encoder, weights = _text_encoder(model, device)
    split_weights = {s: model.cold_start_weights for s in COLD_START_SPLITS} if model.cold_start_weights else {}
    retriever = DenseRetriever(encoder, doc_weights=model.doc_weights, split_doc_weights=split_weights,
                               cache=EmbeddingCache() if model.use_cache else None, device=device,
                               fusion=_learned_fusion(model))
    return retriever, weights


def _learned_fusion(model: ModelToEvaluate):
    """The model's learned field fusion, or None: a training run's, else the fusion.pt beside a local
    model.pt checkpoint (a finished run's folder or its model.pt, also best/ and epoch-K/)."""
    if model.training is not None:
        return getattr(model.training.trained, "fusion", None)
    if model.kind != "open_clip" or not model.pretrained:
        return None
    from gcl_eval.retrieval.fusion import FUSION_FILE, FieldFusion

    path = Path(model.pretrained).expanduser()
    folder = path if path.is_dir() else path.parent if path.name == "model.pt" and path.is_file() else None
    if folder is None or not (folder / FUSION_FILE).is_file():
        return None
    return FieldFusion.load(folder / FUSION_FILE)


def _open_clip_encoder(model: ModelToEvaluate, device: str, workers: int):
    from gcl_eval.retrieval.encoders import OpenClipEncoder
    from gcl_eval.retrieval.models import load_open_clip

    if model.training is not None:
        loaded = model.training.trained.model
    else:
        loaded = load_open_clip(model.name, model.pretrained, seed=model.seed, device=device, sha256=model.sha256,
                                mirror=model.mirror)
    encoder = OpenClipEncoder(loaded, device=device, batch_size=model.batch_size, num_workers=workers,
                              precision=model.precision)
    return encoder, Weights("open_clip", loaded.arch, loaded.source, loaded.weights_sha256, encoder.precision)


def _text_encoder(model: ModelToEvaluate, device: str):
    from baselines.text_encoder import TextModelEncoder
    from gcl_eval.experiments.text_models import load_text_for_eval

    if model.training is not None:
        text, digest = model.training.trained.model, model.training.trained.sha256
        source = text.source
    else:
        loaded = load_text_for_eval(model.name, checkpoint=model.pretrained, prefixes=model.prefixes,
                                    pooling=model.pooling, max_length=model.max_length, device=device)
        text, digest, source = loaded.encoder, loaded.sha256, loaded.source
    encoder = TextModelEncoder(text, digest, batch_size=model.batch_size, device=device, precision=model.precision)
    return encoder, Weights("text", model.name, source, digest, encoder.precision)


@dataclass(frozen=True)
class EvalRequest:
    """`gcl-eval eval`: a model on a dataset folder, written to a run folder."""

    model: ModelToEvaluate
    data: str | Path  # a dataset folder or a registered dataset's name (gcl_eval.data.resolve)
    out: Path
    protocol: EvalProtocol = field(default_factory=EvalProtocol)
    images_root: Path | None = None  # the folder the dataset's image paths are re-rooted to
    device: str | None = None  # None or "auto": cuda, then mps, then cpu (gcl_eval.util.distributed)


def evaluate_and_save(request: EvalRequest) -> Evaluation | None:
    """Evaluate and save the run folder; the evaluation, or None on a torchrun process other than the
    main one (it only helped encode)."""
    from gcl_eval.data.io import read_dataset
    from gcl_eval.data.resolve import resolve_dataset
    from gcl_eval.protocol.results import save_run
    from gcl_eval.util.distributed import init_distributed, is_main_process, resolve_device

    started = time.perf_counter()
    request.protocol.validate()
    device = resolve_device(request.device)
    init_distributed(device)
    model = request.model
    images = any("image" in w.active() for w in (model.doc_weights, model.cold_start_weights) if w is not None)
    fusion = _learned_fusion(model)
    images = images or (fusion is not None and "image" in fusion.fields)  # a fusion reads all of its fields
    data = resolve_dataset(request.data, images=images, mirror=model.mirror)
    dataset = read_dataset(data, images_root=request.images_root)
    evaluation = evaluate_model(request.model, dataset, request.protocol, device=str(device), started=started)
    if not is_main_process():
        return None
    save_run(evaluation.result, request.out, evaluation.runs)
    return evaluation
