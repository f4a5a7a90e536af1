"""The aligned start of the mini presets: the pretraining stage (trainers.align) run once per dataset.

A preset whose [model] says ``start = "aligned"`` fine-tunes (or, zero-shot, evaluates) the checkpoint
this stage makes on the dataset's in-domain (title, image) pairs. It is cached beside the trained
presets (checkpoints/ARCH-aligned-KEY/, keyed by the stage's recipe and the dataset's fingerprint), so
every arm and seed on one dataset starts from the same weights and the stage runs once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import click

from gcl_eval.experiments.preset import Preset
from gcl_eval.util.atomic import file_lock
from gcl_eval.util.paths import cache_dir, mark_used


def aligned_start(arch: str, dataset, *, device: str, root: Path | None = None) -> Path:
    """The aligned checkpoint (model.pt) of ``arch`` for ``dataset``: made now unless cached. Under torchrun
    rank 0 makes it and the other ranks then find it."""
    from gcl_eval.util.distributed import main_first

    return main_first(lambda: _aligned_start(arch, dataset, device=device, root=root))


def _aligned_start(arch: str, dataset, *, device: str, root: Path | None) -> Path:
    from trainers.align import AlignConfig, align_image_tower

    config = AlignConfig(arch=arch)
    folder = aligned_start_dir(config, dataset.fingerprint(), root)
    with file_lock(folder, best_effort=True):
        if not (folder / "model.pt").is_file():
            click.echo(f"pretraining stage: aligning the {arch} image tower with its text tower on the in-domain "
                       f"(title, image) pairs (once per dataset; cached in {folder})", err=True)
            record = align_image_tower(config, dataset, folder, device=device)
            click.echo(f"pretraining stage done in {record['seconds']:.0f} s: image->title top-1 "
                       f"{record['image_to_title_top1']:.3f} on {min(2000, record['documents'])} documents", err=True)
        mark_used(folder)
    return folder / "model.pt"


def aligned_start_dir(config, dataset_fingerprint: str, root: Path | None = None) -> Path:
    key = json.dumps({"recipe": config.recipe(), "data": dataset_fingerprint}, sort_keys=True)
    base = Path(root) if root else cache_dir("checkpoints")
    return base / f"{config.arch}-aligned-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def with_start(preset: Preset, dataset, *, device: str, root: Path | None = None) -> Preset:
    """``preset`` with its [model] start resolved to a checkpoint file (``pretrained``); unchanged when it
    names no start."""
    if preset.kind != "open_clip" or not preset.model.get("start"):
        return preset
    path = aligned_start(preset.model["arch"], dataset, device=device, root=root)
    return dataclasses.replace(preset, model={**preset.model, "pretrained": str(path)})
