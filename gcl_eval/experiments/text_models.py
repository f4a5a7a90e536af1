"""Which text model `gcl-eval eval --text-model` evaluates, with which prefixes, pooling and length.

A text model is the packaged ``minilm``, a Hugging Face name (offline: only when the hub cache holds
it), a local sentence-transformers or transformers folder, or, with ``--checkpoint``, the folder of a
finished ``gcl-eval train --text-model`` run. Pooling is what the model's sentence-transformers config
states (modules.json -> its Pooling module's config.json: mean, CLS or last token); a model that states
none needs an explicit pooling, never a silent mean. A trained checkpoint is pooled as it was trained,
with the prefixes and length it was trained with unless others are given. docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gcl_eval.util.errors import GclError

STATED = "stated"  # pooling: what the model's sentence-transformers config says, refused when it says nothing
AUTO = "auto"  # pooling: what it says, else the mean (the E5 convention training uses; `gcl-eval run`)
DEFAULT_PREFIXES = "e5"  # "query: " / "passage: ", as `gcl-eval run` uses when a preset names none


@dataclass(frozen=True)
class LoadedText:
    """A text encoder (trainers.text_model.TextEncoder) and what identifies its weights."""

    encoder: object
    sha256: str
    source: str


def load_text_for_eval(name: str, *, checkpoint: str | None, prefixes, pooling: str, max_length: int | None,
                       device: str) -> LoadedText:
    """The text model ``name`` (or a trained ``checkpoint`` of it) ready to encode.

    ``prefixes``: a convention name or {"query", "document"} pair; None: the checkpoint's, else the model's
    sentence-transformers prompts named "query" and "document", else E5.
    ``pooling``: "mean", "cls", "lasttoken", STATED or AUTO."""
    from trainers.text_model import load_text_model, resolve_text_model

    from baselines.text_encoder import text_model_sha256

    if checkpoint is not None:
        return _trained_text(name, checkpoint, prefixes=prefixes, pooling=pooling, max_length=max_length,
                             device=device)
    length = {"max_length": max_length} if max_length else {}
    explicit = None if pooling in (STATED, AUTO) else pooling
    source = resolve_text_model(name)
    prefixes = prefixes or stated_prefixes(source) or DEFAULT_PREFIXES
    encoder = load_text_model(name, prefixes=prefixes, pooling=explicit, device=device, **length)
    if pooling == STATED:
        _require_stated_pooling(name, source)
    return LoadedText(encoder, text_model_sha256(encoder), encoder.source)


def stated_prefixes(source) -> dict[str, str] | None:
    """The query and document prefixes a sentence-transformers model states as its prompts named "query" and
    "document" (config_sentence_transformers.json, as `gcl-eval export` writes them); None when it states none."""
    import json

    from trainers.text_model import model_file

    config = model_file(source, "config_sentence_transformers.json")
    try:
        prompts = json.loads(config.read_text()).get("prompts") if config is not None else None
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(prompts, dict) or not {"query", "document"} <= set(prompts):
        return None
    return {"query": str(prompts["query"]), "document": str(prompts["document"])}


def _require_stated_pooling(name: str, source) -> None:
    from trainers.text_model import POOLINGS, declared_pooling

    if declared_pooling(source) is None:
        raise GclError(f"text model {name!r} states no pooling (no sentence-transformers modules.json with a "
                       f"Pooling module): pass --pooling {'|'.join(POOLINGS)}")


def _trained_text(name: str, checkpoint: str, *, prefixes, pooling: str, max_length: int | None,
                  device: str) -> LoadedText:
    """A finished `gcl-eval train --text-model` run: its model.pt on the model it was trained from."""
    from trainers.checkpoint import read_train_info
    from trainers.text_model import load_text_model

    folder = Path(checkpoint).expanduser()
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise GclError(f"text checkpoint {checkpoint} does not exist (expected a gcl-eval train output folder)")
    info = read_train_info(folder)
    if info.get("model", {}).get("kind") != "text":
        raise GclError(f"{folder} is an open_clip training run: evaluate it with --arch "
                       f"{info.get('config', {}).get('arch', 'ARCH')} --checkpoint {folder}")
    config = info["config"]
    if name != config["text_model"]:
        raise GclError(f"{folder} was trained from text model {config['text_model']!r}, not {name!r}: pass "
                       f"--text-model {config['text_model']}")
    path = folder / info["model_file"]
    encoder = load_text_model(config["text_model"], checkpoint=path, prefixes=prefixes or config["text_prefixes"],
                              max_length=max_length or config["max_length"],
                              pooling=None if pooling in (STATED, AUTO) else pooling, device=device)
    return LoadedText(encoder.eval(), info["model_sha256"], str(path))
