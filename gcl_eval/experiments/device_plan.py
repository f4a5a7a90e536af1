"""A preset that "needs a GPU" on a machine without one: advice, not a wall.

Training such a preset on a CPU takes days, so `gcl-eval run` refuses it unless a device is asked
for explicitly (`--device cpu`). Evaluating one (zero-shot and released presets) runs, after one
line estimating how long encoding the corpora and queries will take on this CPU, from the number of
images and texts and a per-architecture throughput figure (CPU_SECONDS_PER_8).
"""

from __future__ import annotations

from dataclasses import dataclass

from gcl_eval.experiments.preset import Preset
from gcl_eval.util.errors import GclError

CPU_SECONDS_PER_8: dict[str, dict[str, float]] = {
    # Seconds to encode one batch of 8 on a CPU, fp32, random weights of the same shapes, texts padded
    # to 77 tokens for open_clip towers and about 24 (a product title) for Hugging Face text models.
    # Measured with torch 2.x on the 2-core CPU gcl-eval is developed on, which other jobs shared:
    # take them as +-50%. ViT-B-32 (both) and ViT-L-14 (image) were measured under load.
    "ViT-B-32": {"image": 0.40, "text": 0.27},
    "ViT-L-14": {"image": 7.4, "text": 1.8},
    "e5-large-v2": {"text": 4.9},  # open_clip's BERT-large text tower (e5-large-v2.json), 77 tokens
    "xlm-roberta-base-ViT-B-32": {"image": 0.40, "text": 1.8},
    "hf:e5-large": {"text": 1.6},  # a Hugging Face BERT-large (e5-large-v2 and its fine-tunes), ~24 tokens
    "tiny-clip": {"image": 0.001, "text": 0.001},
}
TEXT_MODEL_FIGURES = {"intfloat/e5-large-v2": "hf:e5-large", "Marqo/marqo-gcl-e5-large-v2-130": "hf:e5-large"}


def needs_gpu_here(preset: Preset, device: str) -> bool:
    """Whether the preset asks for a GPU and `device` (the resolved one) is not a CUDA device."""
    return "gpu" in preset.needs and not device.startswith("cuda")


def check_device(preset: Preset, requested: str | None, device: str) -> None:
    """Refuse to train a GPU preset on another device unless one was asked for explicitly."""
    if not needs_gpu_here(preset, device) or not preset.trains or requested not in (None, "auto"):
        return
    raise GclError(f"preset {preset.name} trains on a GPU and there is no CUDA device here: pass --device {device} "
                   f"to train it on this {device.upper()} anyway (days at the paper's size), or run a CPU preset "
                   "(gcl-eval models)")


def device_note(preset: Preset, device: str, dataset, protocol) -> str | None:
    """The line to print before running a GPU preset elsewhere: the CPU estimate, or that it trains there."""
    if not needs_gpu_here(preset, device):
        return None
    if preset.trains:
        return f"preset {preset.name} is meant for a GPU: training it on {device}, as --device asks"
    return cpu_estimate(preset, dataset, protocol) if device == "cpu" else None


@dataclass(frozen=True)
class Workload:
    """What evaluating encodes: images and texts (document titles and queries)."""

    images: int
    texts: int


def workload(preset: Preset, dataset, protocol) -> Workload:
    """The images and texts an evaluation of `preset` encodes: each searched corpus once per weighted
    field (embeddings are cached), and the sampled queries of each split."""
    fields = set(preset.doc_fields.active()) if preset.doc_fields is not None else {"title"}
    if preset.cold_start_fields is not None:
        fields |= set(preset.cold_start_fields.active())
    splits = [s for s in protocol.splits if s in dataset.pairs]
    corpora = {dataset.split_corpus[s] for s in splits}
    documents = sum(len(dataset.corpora[name]) for name in corpora)
    queries = sum(min(protocol.queries_per_split, dataset.pairs[s]["query"].nunique()) for s in splits)
    return Workload(images=documents if "image" in fields else 0,
                    texts=queries + (documents if "title" in fields else 0))


def cpu_estimate(preset: Preset, dataset, protocol) -> str:
    """One line: the preset runs on this CPU, and about how long encoding will take."""
    work = workload(preset, dataset, protocol)
    name = preset.model.get("arch") or preset.model.get("text_model") or preset.name
    figures = CPU_SECONDS_PER_8.get(TEXT_MODEL_FIGURES.get(name, name))
    head = f"no GPU here: evaluating {preset.name} on the CPU"
    counts = f"{work.images:,} images and {work.texts:,} texts"
    if figures is None:
        return f"{head}; no CPU throughput figure for {name}: {counts} to encode, expect it to take long"
    seconds = (work.images * figures.get("image", 0.0) + work.texts * figures.get("text", 0.0)) / 8
    rates = ", ".join(f"{kind} {value:g} s" for kind, value in figures.items())
    return f"{head}, about {duration(seconds)} to encode {counts} ({name} on a 2-core CPU, per batch of 8: {rates})"


def duration(seconds: float) -> str:
    """'40 s', '12 min', '5.2 h', '3.1 days'."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
