"""Loading open_clip models: packaged configs, and weights from any source gcl_eval.retrieval.model_source
resolves (pretrained tags, local checkpoints, URLs, hf-hub: models, seeded random init).

Every failure is a one-line GclError: an unknown architecture, a checkpoint that does not load, or
pretrained weights that cannot be fetched (offline), with how to pass a local file instead.
"""

from __future__ import annotations

import hashlib
import logging
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
    source: str  # "random:<seed>", a pretrained tag, a checkpoint path, a URL or an hf-hub: name
    weights_sha256: str  # the checkpoint file's sha256, or a hash of the initial state


def load_open_clip(arch: str, pretrained: str | None = None, *, seed: int = 0, device: str = "cpu",
                   sha256: str | None = None, mirror: str | None = None) -> LoadedModel:
    """Build `arch` with the weights `pretrained` names (gcl_eval.retrieval.model_source): a pretrained
    tag, a local checkpoint file or folder, an http(s) URL (downloaded once; `sha256` checks it, `mirror`
    fetches it from MIRROR/<file name>), an `hf-hub:org/name` model, or None for seeded random init.

    A checkpoint may be a plain state dict, `{"state_dict": ...}` with DDP's `module.` prefixes, or a
    training state `{"epoch", "name", "state_dict", "optimizer"}`: open_clip takes the state dict from
    each (read with torch.load(weights_only=True): no pickled code runs)."""
    from gcl_eval.retrieval.model_source import resolve_weights

    open_clip = open_clip_module()
    import torch

    weights = resolve_weights(open_clip, arch, pretrained, seed=seed, sha256=sha256, mirror=mirror)
    torch.manual_seed(seed)
    try:
        with _quiet_root_logger():  # open_clip logs "Model initialized randomly" for every random init
            model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                weights.model_name, pretrained=weights.pretrained, device=device)
    except GclError:
        raise
    except Exception as err:  # open_clip raises many kinds; the user needs one line
        reason = " ".join(str(err).split())[:300]
        raise GclError(f"{weights.describe()} does not load as {weights.model_name}: {reason}") from None
    tokenizer = open_clip.get_tokenizer(weights.model_name)
    if weights.file is not None:
        digest = weights.sha256 or file_sha256(weights.file)
    else:
        digest = state_sha256(model)
    return LoadedModel(model, preprocess_train, preprocess_val, tokenizer, weights.model_name, weights.source, digest)


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


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
