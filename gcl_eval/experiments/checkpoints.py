"""The checkpoint cache: a preset trained on a dataset once, reused by every later run.

A checkpoint folder is keyed by the training recipe (what decides the weights, not the device or the
worker count) and the dataset's fingerprint. A finished folder is reused as it is; a killed training
run is resumed from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

from gcl_eval.experiments.preset import Preset
from gcl_eval.util.atomic import file_lock
from gcl_eval.util.errors import GclError
from gcl_eval.util.paths import cache_dir, mark_used


@dataclass(frozen=True)
class Training:
    """A preset's finished training run: the config it ran, the trained model
    (trainers.checkpoint.TrainedModel), how long this call spent on it and whether it was already done."""

    config: Any
    trained: Any
    seconds: float
    reused: bool


CURVE_SPLITS = ("in_domain", "novel_corpus")  # what a run's learning curve evaluates (one seen, one new corpus)
CURVE_QUERIES = 200


def checkpoint_dir(preset: Preset, config, dataset_fingerprint: str, root: Path | None = None) -> Path:
    """The cache folder of (preset, recipe, dataset); ``root`` None: the gcl-eval cache's checkpoints folder.
    A run that records a learning curve (``eval_every``) has a folder of its own: the same weights, plus
    the evaluations an unwatched run does not have."""
    key = {"recipe": config.recipe(), "data": dataset_fingerprint}
    if config.eval_every:
        key["curve"] = {"every": config.eval_every, "splits": list(CURVE_SPLITS), "queries": CURVE_QUERIES}
    recipe = json.dumps(key, sort_keys=True, default=str)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    base = Path(root) if root else cache_dir("checkpoints")
    return base / f"{preset.name}-{key}"


def train_or_reuse(preset: Preset, dataset, *, device: str, overrides: dict | None = None,
                   root: Path | None = None) -> Training:
    """Train ``preset`` on ``dataset`` unless its checkpoint folder already holds a finished run (resuming a
    killed one), then load the trained model onto ``device``. ``overrides``: TrainConfig fields.

    Under torchrun every rank calls this: they train together (rank 0 writes the folder), or reuse the
    finished run together, then each loads it. The checkpoints folder must be one that every rank sees
    (a shared filesystem across nodes); a rank that sees it otherwise than rank 0 is a GclError."""
    from gcl_eval.util.distributed import is_main_process
    from trainers.checkpoint import load_trained
    from trainers.loop import train

    config = preset.train_config({"device": device, **(overrides or {})})
    folder = checkpoint_dir(preset, config, dataset.fingerprint(), root)
    evaluate = None
    if config.eval_every:
        from gcl_eval.experiments.training_eval import training_evaluation

        evaluate = training_evaluation(dataset, config, splits=CURVE_SPLITS, queries=CURVE_QUERIES)
    started = time.perf_counter()
    with _training_lock(folder):
        reused = _finished_on_every_rank(folder, before=True)
        if not reused:
            train(config, dataset, folder, resume=True, evaluate=evaluate)
            _finished_on_every_rank(folder, before=False)
        if is_main_process():
            mark_used(folder)
    seconds = time.perf_counter() - started
    return Training(config, load_trained(folder, device=device), seconds, reused)


def _training_lock(folder: Path) -> ContextManager:
    """One training per checkpoint folder at a time: a second command waits, then reuses the finished run.
    Under torchrun only rank 0 takes it: the ranks train together, so another rank waiting on it would
    stall rank 0's collectives."""
    from gcl_eval.util.distributed import is_main_process

    if not is_main_process():
        return nullcontext()
    return file_lock(folder, best_effort=True)


def _finished_on_every_rank(folder: Path, *, before: bool) -> bool:
    """Whether ``folder`` holds a finished run, as every rank sees it (rank 0 decides under torchrun; the
    others must see the same, and the same checkpoint to resume, or the ranks would train apart)."""
    from gcl_eval.util.distributed import barrier, gather_objects
    from trainers.checkpoint import checkpoint_path, is_finished

    barrier()  # look once rank 0 holds the lock (no other command is writing the folder then)
    views = gather_objects((is_finished(folder), checkpoint_path(folder).is_file() if before else None))
    differing = [rank for rank, view in enumerate(views) if view != views[0]]
    if differing:
        ranks = ", ".join(map(str, differing))
        raise GclError(f"rank(s) {ranks} see the checkpoint folder {folder} otherwise than rank 0: under a "
                       "multi-node launch put the checkpoints on a filesystem every node shares "
                       "(GCL_EVAL_CACHE)")
    return views[0][0]
