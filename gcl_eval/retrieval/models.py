"""Loading open_clip models: packaged configs, and weights from any source gcl_eval.retrieval.model_source
resolves (pretrained tags, local checkpoints, URLs, hf-hub: models, seeded random init).

Every failure is a one-line GclError: an unknown architecture, a checkpoint that does not load, or
pretrained weights that cannot be fetched (offline), with how to pass a local file instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcl_eval.util.errors import GclError

PACKAGED_CONFIGS = Path(__file__).parent / "model_configs"
TEXT_TOWER_CONFIGS = PACKAGED_CONFIGS / "text-towers"  # configs whose text tower is a Hugging Face text model
_registered = False
_registered_text_towers: set[str] = set()


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


def text_tower_archs() -> list[str]:
    """The packaged architectures whose text tower is a Hugging Face text model (e.g. "mini-clip")."""
    return sorted(p.stem for p in TEXT_TOWER_CONFIGS.glob("*.json"))


def text_tower_name(arch: str) -> str:
    """The text model ``arch``'s text tower starts from, as gcl-eval names text models ("minilm")."""
    return json.loads((TEXT_TOWER_CONFIGS / f"{arch}.json").read_text())["text_cfg"]["hf_model_name"]


def register_text_tower_arch(open_clip, arch: str) -> None:
    """Make ``arch`` (one of text_tower_archs()) known to open_clip with its text model resolved.

    Its config names the text model as gcl-eval's text models are named ("minilm" is the packaged
    all-MiniLM-L6-v2): open_clip needs a folder, so the resolved config is written to the cache
    (model-configs/ARCH.json) and registered from there, once per process."""
    if arch in _registered_text_towers:
        return
    from gcl_eval.retrieval.model_source import resolve_text_model
    from gcl_eval.util.atomic import atomic_write_text
    from gcl_eval.util.paths import cache_dir

    config = json.loads((TEXT_TOWER_CONFIGS / f"{arch}.json").read_text())
    text = config["text_cfg"]
    for key in ("hf_model_name", "hf_tokenizer_name"):
        text[key] = str(resolve_text_model(text[key]))
    try:
        import transformers
    except ImportError:
        raise GclError(f"{arch} has a Hugging Face text tower: pip install 'gcl-eval[text]'") from None
    path = cache_dir("model-configs") / f"{arch}.json"
    resolved = json.dumps(config, indent=2, sort_keys=True)
    if not path.is_file() or path.read_text() != resolved:
        atomic_write_text(path, resolved)
    open_clip.add_model_config(path)
    _registered_text_towers.add(arch)
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar or load report on stderr
    transformers.utils.logging.set_verbosity_error()


def text_pad_id(model) -> int | None:
    """The padding token id of a model whose text tower is a Hugging Face model, else None.

    Such a tower masks its attention by this id, so trailing all-padding columns can be cut off a
    batch (:func:`trim_padding`) without changing its embeddings, only the compute."""
    config = getattr(getattr(model, "text", None), "config", None)
    return getattr(config, "pad_token_id", None) if config is not None else None


def trim_padding(tokens, pad_id: int | None):
    """``tokens`` (N, L) without the trailing columns that are padding in every row (at least one kept)."""
    if pad_id is None or tokens.shape[1] == 0:
        return tokens
    used = (tokens != pad_id).any(dim=0).nonzero()
    keep = int(used.max()) + 1 if len(used) else 1
    return tokens[:, :keep]


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

    hf_text_tower = arch in text_tower_archs()
    if hf_text_tower:
        register_text_tower_arch(open_clip, arch)
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
    source = weights.source
    if hf_text_tower and weights.file is None:  # a pretrained text tower, a random image tower
        source = f"text:{text_tower_name(arch)}+{weights.source}"
    if weights.file is not None:
        digest = weights.sha256 or file_sha256(weights.file)
    else:
        digest = state_sha256(model)
    return LoadedModel(model, preprocess_train, preprocess_val, tokenizer, weights.model_name, source, digest)


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
