"""Loading open_clip models: packaged configs, pretrained tags, local checkpoints, seeded random init.

Every failure is a one-line GclError: an unknown architecture, a checkpoint that does not load, or
pretrained weights that cannot be fetched (offline), with how to pass a local file instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcl_eval.util.errors import GclError

PACKAGED_CONFIGS = Path(__file__).parent / "model_configs"
_registered = False


def open_clip_module():
    """open_clip, imported behind the torchvision guard, with gcl-eval's model configs registered."""
    global _registered
    from gcl_eval.util.torchvision_guard import ensure_torchvision

    ensure_torchvision()
    import open_clip

    if not _registered:
        open_clip.add_model_config(PACKAGED_CONFIGS)
        _registered = True
    return open_clip


@dataclass
class LoadedModel:
    """An open_clip model with its transforms and tokenizer, and where its weights came from."""

    model: Any
    preprocess_train: Any
    preprocess_val: Any
    tokenizer: Any
    arch: str
    source: str  # "random:<seed>", a pretrained tag, or a checkpoint path
    weights_sha256: str  # the checkpoint file's sha256, or a hash of the initial state


def load_open_clip(arch: str, pretrained: str | None = None, *, seed: int = 0, device: str = "cpu") -> LoadedModel:
    """Build `arch` from a pretrained tag, a local checkpoint file or folder, or seeded random init."""
    open_clip = open_clip_module()
    import torch

    if arch not in open_clip.list_models():
        raise GclError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models(); "
                       f"gcl-eval adds: {', '.join(sorted(p.stem for p in PACKAGED_CONFIGS.glob('*.json')))})")
    checkpoint = _local_checkpoint(pretrained)
    if pretrained and checkpoint is None and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        raise GclError(f"{pretrained!r} is neither a file nor a pretrained tag of {arch} "
                       f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})")
    if pretrained and checkpoint is None and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise GclError(f"pretrained weights {arch}/{pretrained} need the network, and HF_HUB_OFFLINE=1: "
                       f"pass a local checkpoint file (.pt/.bin/.safetensors) instead, or no weights for random init")
    torch.manual_seed(seed)
    try:
        with _quiet_root_logger():  # open_clip logs "Model initialized randomly" for every random init
            model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                arch, pretrained=str(checkpoint) if checkpoint else pretrained, device=device)
    except GclError:
        raise
    except Exception as err:  # open_clip raises many kinds; the user needs one line
        what = f"checkpoint {checkpoint}" if checkpoint else f"pretrained weights {pretrained!r}"
        reason = " ".join(str(err).split())[:300]
        raise GclError(f"{what} does not load as {arch}: {reason}") from None
    tokenizer = open_clip.get_tokenizer(arch)
    if checkpoint is not None:
        source, digest = str(checkpoint), file_sha256(checkpoint)
    elif pretrained:
        source, digest = pretrained, state_sha256(model)
    else:
        source, digest = f"random:{seed}", state_sha256(model)
    return LoadedModel(model, preprocess_train, preprocess_val, tokenizer, arch, source, digest)


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _local_checkpoint(pretrained: str | None) -> Path | None:
    if not pretrained:
        return None
    path = Path(pretrained.removeprefix("local-dir:")).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.pt", "checkpoint.pt"):
            if (path / name).is_file():
                return path / name
        raise GclError(f"{path}: no checkpoint file in this folder (looked for open_clip_model.safetensors, "
                       f"open_clip_pytorch_model.bin, model.pt)")
    if pretrained.startswith(("/", "./", "../", "~", "local-dir:")) or pretrained.endswith((".pt", ".bin", ".safetensors")):
        raise GclError(f"checkpoint {pretrained} does not exist")
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(model) -> str:
    """Hash of every parameter and buffer, in state_dict order: identifies a random or tagged init."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
