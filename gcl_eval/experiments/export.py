"""`gcl-eval export`: a finished training run as a folder other tools load on their own.

* ``sentence-transformers`` (a ``gcl-eval train --text-model`` run): the fine-tuned transformer and its
  tokenizer, modules.json (Transformer -> Pooling -> Normalize), the pooling and the maximum length the
  model was trained with, and the role prefixes as sentence-transformers prompts named "query" and
  "document" (config_sentence_transformers.json), so ``SentenceTransformer(DIR).encode_query(...)`` /
  ``encode_document(...)`` (or ``encode(..., prompt_name=...)``) give gcl-eval's embeddings.
* ``open_clip`` (a ``gcl-eval train --arch`` run): ``open_clip_config.json`` (model and preprocessing
  config) and ``open_clip_model.safetensors``, the layout open_clip's hf-hub and ``local-dir:`` loaders
  read: ``open_clip.create_model_and_transforms("local-dir:DIR")``; a run with a learned field fusion also
  gets its ``fusion.pt``, which `gcl-eval eval --checkpoint DIR` applies.

Each folder also gets a README.md saying what it is and how to load it. The folder is written
atomically: it appears whole or not at all. docs/export.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gcl_eval.util.errors import GclError

FORMATS = {"sentence-transformers": "text", "open_clip": "open_clip"}  # format -> the run kind it exports
ST_POOLING_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                   "lasttoken": "pooling_mode_lasttoken"}
ALL_ST_POOLING_KEYS = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                       "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                       "pooling_mode_lasttoken")
OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


@dataclass(frozen=True)
class Exported:
    """What `export_checkpoint` wrote."""

    format: str
    out: Path
    files: tuple[str, ...]


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path) -> Exported:
    """Write the finished training run ``checkpoint`` (a `gcl-eval train` output folder) as ``fmt`` to ``out``
    (which must not exist, or be empty); a one-line GclError for anything that does not fit."""
    from gcl_eval.util.atomic import atomic_folder

    if fmt not in FORMATS:
        raise GclError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GclError(f"{out} already exists and is not an empty folder: choose a new --out")
    info = _train_info(checkpoint)
    kind = info.get("model", {}).get("kind")
    if kind != FORMATS[fmt]:
        fitting = [name for name, wants in FORMATS.items() if wants == kind]
        raise GclError(f"{checkpoint} is a {kind} training run; it exports as {', '.join(fitting) or 'nothing'}, "
                       f"not {fmt}")
    from trainers.checkpoint import load_trained

    trained = load_trained(checkpoint, device="cpu")
    with atomic_folder(out) as tmp:
        if fmt == "sentence-transformers":
            _write_sentence_transformers(trained, tmp)
        else:
            _write_open_clip(trained, tmp)
    return Exported(fmt, out, tuple(sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())))


def _train_info(checkpoint) -> dict:
    """train.json of a finished gcl-eval training run; one line when ``checkpoint`` is none."""
    from trainers.checkpoint import TRAIN_JSON, read_train_info

    folder = Path(checkpoint)
    if not folder.is_dir() or not (folder / TRAIN_JSON).is_file():
        raise GclError(f"{checkpoint} is not a gcl-eval checkpoint: expected the output folder of gcl-eval train "
                       f"(with {TRAIN_JSON})")
    info = read_train_info(folder)
    if not isinstance(info, dict) or "config" not in info or "model_file" not in info:
        raise GclError(f"{folder / TRAIN_JSON} is not a gcl-eval training record")
    return info


def _write_sentence_transformers(trained, out: Path) -> None:
    """The text encoder as a sentence-transformers folder (Transformer -> Pooling -> Normalize)."""
    encoder = trained.model
    encoder.backbone.save_pretrained(out, safe_serialization=True)
    encoder.tokenizer.save_pretrained(out)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": encoder.max_length, "do_lower_case": False})
    modules = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Normalize", "Normalize")]
    _write_json(out / "modules.json", [{"idx": i, "name": name, "path": path,
                                        "type": f"sentence_transformers.models.{kind}"}
                                       for i, (name, path, kind) in enumerate(modules)])
    pooling = {key: key == ST_POOLING_KEYS[encoder.pooling] for key in ALL_ST_POOLING_KEYS}
    _write_json(out / "1_Pooling" / "config.json", {"word_embedding_dimension": encoder.backbone.config.hidden_size,
                                                    **pooling, "include_prompt": True})
    (out / "2_Normalize").mkdir()
    _write_json(out / "config_sentence_transformers.json", {
        "__version__": _versions("sentence-transformers", "transformers", "torch"),
        "prompts": dict(encoder.role_prefixes), "default_prompt_name": None, "similarity_fn_name": "cosine"})
    (out / "README.md").write_text(_sentence_transformers_readme(trained, encoder))


def _sentence_transformers_readme(trained, encoder) -> str:
    config = trained.info["config"]
    prefixes = encoder.role_prefixes
    return (f"# {Path(str(trained.path)).parent.name}: a text model fine-tuned with gcl-eval\n\n"
            f"Trained from `{config['text_model']}` by `gcl-eval train` (loss {config.get('loss')}, score-to-weight "
            f"{config.get('stw')}); model.pt sha256 `{trained.sha256}`.\n\n"
            f"- pooling: {encoder.pooling}, then L2 normalisation (cosine similarity)\n"
            f"- maximum length: {encoder.max_length} tokens\n"
            f"- query prefix: {prefixes['query']!r} (prompt `query`)\n"
            f"- document (title) prefix: {prefixes['document']!r} (prompt `document`)\n\n"
            "The prefixes are part of the model: encode queries and documents with their prompts.\n\n"
            "```python\nfrom sentence_transformers import SentenceTransformer\n\n"
            "model = SentenceTransformer(\"path/to/this/folder\")\n"
            "queries = model.encode([\"red shirt\"], prompt_name=\"query\")\n"
            "titles = model.encode([\"Red cotton shirt\"], prompt_name=\"document\")\n```\n\n"
            "`gcl-eval eval --text-model path/to/this/folder` reads the pooling and the prefixes from this folder.\n")


def _write_open_clip(trained, out: Path) -> None:
    """open_clip_config.json + open_clip_model.safetensors (+ an HF tokenizer's files, when the model has one)."""
    from safetensors.torch import save_file

    loaded = trained.model
    model_cfg, preprocess_cfg = _open_clip_configs(loaded.arch, loaded.model)
    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in loaded.model.state_dict().items()}
    save_file(state, str(out / OPEN_CLIP_WEIGHTS))
    tokenizer = getattr(loaded.tokenizer, "tokenizer", None)
    if hasattr(tokenizer, "save_pretrained"):  # an HF text tower: local-dir: loads its tokenizer from the folder
        tokenizer.save_pretrained(out)
    _write_json(out / OPEN_CLIP_CONFIG, {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg})
    fusion = getattr(trained, "fusion", None)
    if fusion is not None:
        from gcl_eval.retrieval.fusion import FUSION_FILE

        fusion.save(out / FUSION_FILE)
    config = trained.info["config"]
    fusion_note = ("The run learned a field fusion (fusion.pt, gcl_eval.retrieval.fusion): gcl-eval scores "
                   "documents with it; plain open_clip ignores it.\n" if fusion is not None else "")
    (out / "README.md").write_text(
        f"# {Path(str(trained.path)).parent.name}: an open_clip model trained with gcl-eval\n\n"
        f"Architecture `{loaded.arch}`, trained by `gcl-eval train` (loss {config.get('loss')}, score-to-weight "
        f"{config.get('stw')}); model.pt sha256 `{trained.sha256}`.\n\n"
        "```python\nimport open_clip\n\n"
        "model, _, preprocess = open_clip.create_model_and_transforms(\"local-dir:path/to/this/folder\")\n"
        "tokenizer = open_clip.get_tokenizer(\"local-dir:path/to/this/folder\")\n```\n\n"
        f"Evaluate it with `gcl-eval eval --arch {loaded.arch} --checkpoint path/to/this/folder`.\n" + fusion_note)


def _open_clip_configs(arch: str, model) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) of ``arch``, as open_clip_config.json holds them."""
    from gcl_eval.retrieval.model_source import hub_text_model_name
    from gcl_eval.retrieval.models import open_clip_module, text_tower_archs, text_tower_name

    open_clip = open_clip_module()
    if arch.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        hub = json.loads(Path(hf_hub_download(arch.removeprefix("hf-hub:"), OPEN_CLIP_CONFIG)).read_text())
        model_cfg = hub["model_cfg"]
    else:
        model_cfg = open_clip.get_model_config(arch)
    if not model_cfg:
        raise GclError(f"no open_clip config for architecture {arch!r}")
    if arch in text_tower_archs():  # registered with a local folder: name the hub model it packages instead
        text_cfg = dict(model_cfg["text_cfg"])
        for key in ("hf_model_name", "hf_tokenizer_name"):
            text_cfg[key] = hub_text_model_name(text_tower_name(arch))
        model_cfg = {**model_cfg, "text_cfg": text_cfg}
    visual = model.visual
    preprocess = {"mean": list(visual.image_mean), "std": list(visual.image_std)}
    extra = getattr(visual, "preprocess_cfg", {}) or {}
    preprocess.update({k: extra[k] for k in ("interpolation", "resize_mode") if k in extra})
    return dict(model_cfg), preprocess


def _versions(*packages: str) -> dict[str, str]:
    """The installed versions of ``packages`` (sentence-transformers need not be installed to export)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package.replace("-", "_").replace("torch", "pytorch")] = version(package)
        except PackageNotFoundError:
            pass
    return found


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
