"""`gcl-eval eval` as a library call: load a model and a dataset, run the protocol, save the run folder."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from gcl_eval.data.dataset import SPLITS
from gcl_eval.util.errors import GclError
from gcl_eval.retrieval.fields import FieldWeights
from gcl_eval.util.threads import budget_cpu_threads, default_workers
from gcl_eval.protocol.evaluate import EvalProtocol, Evaluation, evaluate_dataset

COLD_START_SPLITS = ("novel_query", "novel_corpus", "zero_shot")


@dataclass(frozen=True)
class OpenClipEvalConfig:
    """An open_clip model to evaluate: architecture plus checkpoint file, pretrained tag or seeded init."""

    arch: str
    data: Path
    checkpoint: Path | None = None
    pretrained: str | None = None
    seed: int = 0
    images_root: Path | None = None
    protocol: EvalProtocol = field(default_factory=EvalProtocol)
    doc_weights: FieldWeights = field(default_factory=lambda: FieldWeights.of(title=0.5, image=0.5))
    cold_start_weights: FieldWeights | None = None  # e.g. title only on the cold-start splits ("0.5/0.0")
    device: str | None = None  # None: cuda when available, else cpu
    batch_size: int = 256
    workers: int | None = None  # None: half the CPU cores (gcl_eval.util.threads)
    precision: str = "fp32"
    use_cache: bool = True


def resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GclError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise GclError(f"unknown device {device!r}; expected cpu, cuda or cuda:N")
    return device


def init_distributed(device: str) -> None:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def evaluate_open_clip(config: OpenClipEvalConfig) -> Evaluation:
    """Load, encode (with the embedding cache), search and score every split; nothing is written."""
    from gcl_eval.data.io import read_dataset
    from gcl_eval.retrieval.dense import DenseRetriever
    from gcl_eval.retrieval.embedding_cache import EmbeddingCache
    from gcl_eval.retrieval.encoders import OpenClipEncoder
    from gcl_eval.retrieval.models import load_open_clip

    config.protocol.validate()
    device = resolve_device(config.device)
    init_distributed(device)
    started = time.perf_counter()
    dataset = read_dataset(config.data, images_root=config.images_root)
    pretrained = str(config.checkpoint) if config.checkpoint else config.pretrained
    loaded = load_open_clip(config.arch, pretrained, seed=config.seed, device=device)
    workers = config.workers if config.workers is not None else default_workers()
    budget_cpu_threads(workers, device)
    encoder = OpenClipEncoder(loaded, device=device, batch_size=config.batch_size, num_workers=workers,
                              precision=config.precision)
    split_weights = {s: config.cold_start_weights for s in COLD_START_SPLITS} if config.cold_start_weights else {}
    model_info = {"arch": config.arch, "source": loaded.source, "checkpoint_sha256": loaded.weights_sha256,
                  "encoder": "open_clip", "precision": encoder.precision}
    cache = EmbeddingCache() if config.use_cache else None
    retriever = DenseRetriever(encoder, doc_weights=config.doc_weights, split_doc_weights=split_weights,
                               cache=cache, model_info=model_info, device=device)
    load_s = time.perf_counter() - started
    evaluation = evaluate_dataset(retriever, dataset, config.protocol, device=device)
    evaluation.result.model = retriever.describe()
    evaluation.result.timings["load_s"] = round(load_s, 3)
    evaluation.result.timings["total_s"] = round(time.perf_counter() - started, 3)
    if cache is not None:
        evaluation.result.timings["embedding_cache"] = cache.stats.as_dict()
    return evaluation


def valid_splits(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in SPLITS]
    if unknown:
        raise GclError(f"unknown split {unknown[0]!r}; known: {', '.join(SPLITS)}")
    return names or SPLITS
