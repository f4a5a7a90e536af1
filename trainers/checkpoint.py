"""Checkpoint folders: periodic resumable checkpoints, the exported model, and the completion marker.

A run's folder (``--out``) holds:

- ``checkpoint.pt``: everything a resumed run needs to continue bit for bit: model (``towers.state_dict()``,
  keys prefixed "model." / "encoder."), optimizer, schedule and grad-scaler states, the RNG states of
  python, numpy, torch and CUDA (one per rank), the data position (epoch, next batch, step, the epoch's
  loss so far, per-epoch history), the config, its recipe part and the dataset fingerprint. It is not an
  open_clip checkpoint: evaluate ``model.pt`` of a finished run. Written atomically (temp file,
  fsync, os.replace), so a kill leaves the previous checkpoint or the new one, never half of one.
- at the end, in this order: ``model.pt`` (the plain model state dict: for open_clip architectures
  ``open_clip.create_model_and_transforms(arch, pretrained="DIR/model.pt")`` loads it), with a learned
  field fusion ``fusion.pt`` (gcl_eval.retrieval.fusion), ``train.json`` (config, result, timings,
  versions) and ``DONE``. ``DONE`` is written last: a folder without it was
  killed or is still training; :func:`is_finished` and :func:`load_trained` go by it.

Checkpoints load with ``torch.load(weights_only=True)``: nothing in them is arbitrary pickled code.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcl_eval.util.distributed import initialized_cuda_devices
from gcl_eval.util.atomic import atomic_file, atomic_write_text
from gcl_eval.util.errors import GclError

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
TRAIN_JSON = "train.json"
DONE_FILE = "DONE"
FORMAT = "gcl-eval/train-checkpoint"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------ atomic files


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save into a temp sibling, fsync, rename onto ``path`` (gcl_eval.util.atomic)."""
    with atomic_file(path) as tmp, open(tmp, "xb") as handle:
        torch.save(obj, handle)


# ------------------------------------------------------------------------------------------ RNG states


def rng_state() -> dict:
    """python, numpy, torch (CPU) and CUDA generator states, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(d) for d in initialized_cuda_devices()],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """random.setstate wants the nested tuples that random.getstate gave (a round trip may give lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint_path(out_dir) -> Path:
    return Path(out_dir) / CHECKPOINT_FILE


def save_checkpoint(out_dir, state: dict) -> Path:
    """Write ``state`` (see the module docstring for its keys) atomically as DIR/checkpoint.pt."""
    path = checkpoint_path(out_dir)
    atomic_torch_save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, path)
    return path


def read_checkpoint(out_dir, map_location="cpu") -> dict | None:
    """The checkpoint of DIR, or None when there is none; a file that is not ours is a GclError."""
    path = checkpoint_path(out_dir)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated by hand, or another program's file
        raise GclError(f"{path} is not a readable gcl-eval checkpoint: {' '.join(str(err).split())[:200]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GclError(f"{path} is not a gcl-eval training checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise GclError(f"{path} has checkpoint format {state.get('format_version')}; this gcl-eval reads {FORMAT_VERSION}")
    return state


def check_same_run(config, recipe: dict, data_fingerprint: str | None, fingerprint: str, where) -> None:
    """Refuse to resume a run of another model, loss, recipe or dataset (one line naming the first difference)."""
    diffs = config.recipe_differences(recipe)
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise GclError(f"cannot resume {where}: it is from another run, {diffs[0]}{more}; "
                       "use the same options or another --out")
    if data_fingerprint != fingerprint:
        raise GclError(f"cannot resume {where}: it was trained on other data (dataset fingerprint differs)")


# ------------------------------------------------------------------------------------------ export


def export_final(out_dir, model_state: dict, train_info: dict, fusion=None) -> dict:
    """Write model.pt (and fusion.pt for a learned field fusion), then train.json, then DONE; returns the
    DONE record (model file and sha256)."""
    from gcl_eval.retrieval.fusion import FUSION_FILE
    from gcl_eval.retrieval.models import file_sha256

    out_dir = Path(out_dir)
    model_path = out_dir / MODEL_FILE
    atomic_torch_save(model_state, model_path)
    digest = file_sha256(model_path)
    info = {**train_info, "model_file": MODEL_FILE, "model_sha256": digest}
    if fusion is not None:
        fusion.save(out_dir / FUSION_FILE)
        info.update(fusion_file=FUSION_FILE, fusion_sha256=file_sha256(out_dir / FUSION_FILE))
    atomic_write_text(out_dir / TRAIN_JSON, json.dumps(info, indent=2, sort_keys=True) + "\n")
    done = {"model_file": MODEL_FILE, "model_sha256": digest, "train_json": TRAIN_JSON}
    atomic_write_text(out_dir / DONE_FILE, json.dumps(done, sort_keys=True) + "\n")
    return done


def is_finished(out_dir) -> bool:
    """True when DIR holds a completed training run (DONE written after model.pt and train.json)."""
    return (Path(out_dir) / DONE_FILE).is_file()


def read_train_info(out_dir) -> dict:
    """train.json of a finished run (GclError when the run is not finished)."""
    out_dir = Path(out_dir)
    if not is_finished(out_dir):
        hint = (" (a checkpoint is there: the run was interrupted; continue it with gcl-eval train ... --resume)"
                if checkpoint_path(out_dir).is_file() else "")
        raise GclError(f"{out_dir} holds no finished training run: no {DONE_FILE} marker{hint}")
    try:
        return json.loads((out_dir / TRAIN_JSON).read_text())
    except (OSError, ValueError) as err:
        raise GclError(f"{out_dir / TRAIN_JSON} does not read: {err}") from None


@dataclass
class TrainedModel:
    """A finished run's model, ready to encode: ``model`` is a gcl_eval.retrieval.models.LoadedModel (open_clip)
    or a trainers.text_model.TextEncoder (text), in eval mode; ``info`` is its train.json; ``fusion`` its
    learned field fusion (gcl_eval.retrieval.fusion.FieldFusion), None when its fields were fused by weights."""

    kind: str  # "open_clip" or "text"
    model: Any
    info: dict
    path: Path  # the model.pt file
    sha256: str
    fusion: Any = None


def load_trained(out_dir, device="cpu") -> TrainedModel:
    """Load the exported model of a FINISHED run (refuses a killed one), for evaluation."""
    out_dir = Path(out_dir)
    info = read_train_info(out_dir)
    path = out_dir / info["model_file"]
    config = info["config"]
    if info["model"]["kind"] == "open_clip":
        from gcl_eval.retrieval.models import load_open_clip

        loaded = load_open_clip(config["arch"], str(path), device=str(device))
        loaded.model.eval()
        fusion = None
        if config.get("fusion", "fixed") == "learned":
            from gcl_eval.retrieval.fusion import FUSION_FILE, FieldFusion

            fusion = FieldFusion.load(out_dir / info.get("fusion_file", FUSION_FILE), device=device)
        return TrainedModel("open_clip", loaded, info, path, loaded.weights_sha256, fusion)
    from trainers.text_model import load_text_model

    encoder = load_text_model(config["text_model"], checkpoint=path, prefixes=config["text_prefixes"],
                              max_length=config["max_length"], device=device)
    encoder.eval()
    return TrainedModel("text", encoder, info, path, info["model_sha256"])
