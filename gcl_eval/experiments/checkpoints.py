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
from gcl_eval.util.paths import cache_dir, mark_used


@dataclass(frozen=True)
class Training:
    """A preset's finished training run: the config it ran, the trained model
    (trainers.checkpoint.TrainedModel), how long this call spent on it and whether it was already done."""

    config: Any
    trained: Any
    seconds: float
    reused: bool


def checkpoint_dir(preset: Preset, config, dataset_fingerprint: str, root: Path | None = None) -> Path:
    """The cache folder of (preset, recipe, dataset); ``root`` None: the gcl-eval cache's checkpoints folder."""
    recipe = json.dumps({"recipe": config.recipe(), "data": dataset_fingerprint}, sort_keys=True, default=str)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    base = Path(root) if root else cache_dir("checkpoints")
    return base / f"{preset.name}-{key}"


def train_or_reuse(preset: Preset, dataset, *, device: str, overrides: dict | None = None,
                   root: Path | None = None) -> Training:
    """Train ``preset`` on ``dataset`` unless its checkpoint folder already holds a finished run (resuming a
    killed one), then load the trained model onto ``device``. ``overrides``: TrainConfig fields."""
    from trainers.checkpoint import is_finished, load_trained
    from trainers.loop import train

    config = preset.train_config({"device": device, **(overrides or {})})
    folder = checkpoint_dir(preset, config, dataset.fingerprint(), root)
    started = time.perf_counter()
    with _training_lock(folder):
        reused = is_finished(folder)
        if not reused:
            train(config, dataset, folder, resume=True)
        mark_used(folder)
    seconds = time.perf_counter() - started
    return Training(config, load_trained(folder, device=device), seconds, reused)


def _training_lock(folder: Path) -> ContextManager:
    """One training per checkpoint folder at a time: a second command waits, then reuses the finished run.
    Not under torchrun, where the ranks train together and one of them holding the lock would stall the rest."""
    from gcl_eval.util.distributed import world_info

    if world_info().world_size > 1:
        return nullcontext()
    return file_lock(folder, best_effort=True)
