"""`gcl-eval run` as a library call: preset -> (built-in) dataset -> train if needed -> evaluate -> run folder.

Checkpoints are cached per (preset recipe, dataset fingerprint) (gcl_eval.experiments.checkpoints) and
embeddings per content, so a second run of the same preset only evaluates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gcl_eval.experiments.evaluate_model import ModelToEvaluate, evaluate_model
from gcl_eval.experiments.preset import DEFAULT_PRESET, Preset, list_presets, load_preset
from gcl_eval.protocol.evaluate import EvalProtocol, Evaluation
from gcl_eval.util.console import status
from gcl_eval.util.errors import GclError


@dataclass(frozen=True)
class RunOptions:
    model: str = DEFAULT_PRESET
    data: Path | None = None  # None: the built-in synthetic dataset
    out: Path | None = None  # None: runs/<preset>
    protocol: EvalProtocol = EvalProtocol()
    device: str | None = None  # None or "auto": cuda, then mps, then cpu (gcl_eval.util.distributed)
    workers: int | None = None
    train_overrides: tuple[tuple[str, object], ...] = ()  # TrainConfig fields, e.g. (("epochs", 1),)
    checkpoints: Path | None = None  # None: the gcl-eval cache's checkpoints folder
    world: str = "default"  # the built-in world used when data is None (gcl_eval.data.synth.world.BUILTIN_WORLDS)
    preset: Preset | None = None  # an already-loaded (e.g. suite-modified) preset instead of `model`
    labels: tuple[tuple[str, object], ...] = ()  # added to the run's "model" record (a suite's label, seed, key)
    write_trec: bool = True  # the TREC run files (~40 MB per 1,000 queries x 1,000 results)


def run_preset(options: RunOptions) -> tuple[Evaluation, Path]:
    """Train when the preset trains and no finished checkpoint exists, evaluate, save; (evaluation, folder)."""
    from gcl_eval.data.io import read_dataset
    from gcl_eval.experiments.checkpoints import train_or_reuse
    from gcl_eval.experiments.datasets import builtin_dataset
    from gcl_eval.protocol.results import save_run
    from gcl_eval.util.distributed import resolve_device

    started = time.perf_counter()
    options.protocol.validate()
    preset = options.preset if options.preset is not None else load_preset(options.model)
    device = str(resolve_device(options.device))
    if "gpu" in preset.needs and not device.startswith("cuda"):
        cpu_presets = [p.name for p in list_presets() if not p.needs]
        raise GclError(f"preset {preset.name} needs a GPU (no CUDA device here); CPU presets: {', '.join(cpu_presets)}")
    data_dir = Path(options.data) if options.data else builtin_dataset(options.world)
    with status(f"reading {data_dir}"):
        dataset = read_dataset(data_dir)
    training = None
    if preset.trains:
        overrides = dict(options.train_overrides)
        if options.workers is not None:
            overrides.setdefault("num_workers", options.workers)
        training = train_or_reuse(preset, dataset, device=device, overrides=overrides, root=options.checkpoints)
    model = preset_model(preset, device, training=training, workers=options.workers)
    evaluation = evaluate_model(model, dataset, options.protocol, device=device, preset=preset,
                                labels=dict(options.labels), started=started)
    out = Path(options.out) if options.out else Path("runs") / preset.name
    save_run(evaluation.result, out, evaluation.runs if options.write_trec else None)
    return evaluation, out


def preset_model(preset: Preset, device: str, *, training=None, workers: int | None = None) -> ModelToEvaluate:
    """What the preset evaluates: its [model] (or the trained weights) with its [eval] settings."""
    if preset.kind == "bm25":
        return ModelToEvaluate(kind="bm25", bm25={k: preset.model[k] for k in ("backend", "k1", "b") if k in preset.model})
    precision = preset.eval_precision
    if preset.kind == "open_clip" and not device.startswith("cuda"):
        precision = "fp32"  # open_clip autocasts on CUDA only
    name = preset.model["arch"] if preset.kind == "open_clip" else preset.model["text_model"]
    return ModelToEvaluate(kind=preset.kind, name=name, pretrained=preset.model.get("pretrained") or None,
                           prefixes=preset.model.get("prefixes", "e5"), training=training,
                           doc_weights=preset.doc_fields, cold_start_weights=preset.cold_start_fields,
                           batch_size=preset.eval_batch_size, workers=workers, precision=precision)
