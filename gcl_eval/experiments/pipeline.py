"""`gcl-eval run` as a library call: preset -> dataset -> train if needed -> evaluate -> run folder.

The dataset is --data (a folder or a registered dataset's name, gcl_eval.data.resolve), else the
preset's own dataset (the paper's lineup and the released models name marqo-gs-10m), else a built-in
synthetic world. Checkpoints are cached per (preset recipe, dataset fingerprint)
(gcl_eval.experiments.checkpoints) and embeddings per content, so a second run of the same preset
only evaluates. A preset meant for a GPU is handled by gcl_eval.experiments.device_plan. Under torchrun
the ranks share the work and rank 0 writes (docs/training.md, "Launching on N GPUs and M nodes").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click

from gcl_eval.experiments.evaluate_model import ModelToEvaluate, evaluate_model
from gcl_eval.experiments.preset import DEFAULT_PRESET, Preset, load_preset
from gcl_eval.protocol.evaluate import EvalProtocol, Evaluation
from gcl_eval.util.console import status


@dataclass(frozen=True)
class RunOptions:
    model: str = DEFAULT_PRESET
    data: str | Path | None = None  # a folder or a registered dataset; None: the preset's dataset, else a world
    images: Path | None = None  # the folder the dataset's image paths are re-rooted to
    mirror: str | None = None  # fetch datasets and checkpoint URLs from here (default: $GCL_EVAL_MIRROR)
    out: Path | None = None  # None: runs/<preset>
    protocol: EvalProtocol = EvalProtocol()
    device: str | None = None  # None or "auto": cuda, then mps, then cpu (gcl_eval.util.distributed)
    workers: int | None = None
    train_overrides: tuple[tuple[str, object], ...] = ()  # TrainConfig fields, e.g. (("epochs", 1),)
    checkpoints: Path | None = None  # None: the gcl-eval cache's checkpoints folder
    world: str | None = None  # the built-in world when data is None (gcl_eval.data.synth.world.BUILTIN_WORLDS);
    # None: the preset's dataset if it names one, else the "default" world
    preset: Preset | None = None  # an already-loaded (e.g. suite-modified) preset instead of `model`
    labels: tuple[tuple[str, object], ...] = ()  # added to the run's "model" record (a suite's label, seed, key)
    write_trec: bool = True  # the TREC run files (~40 MB per 1,000 queries x 1,000 results)


def run_preset(options: RunOptions) -> tuple[Evaluation, Path]:
    """Train when the preset trains and no finished checkpoint exists, evaluate, save; (evaluation, folder).

    Under torchrun every rank calls this inside one process group (started here unless the caller, e.g. a
    suite, already did): rank 0 fetches or generates the dataset first, all ranks train together (DDP) or
    reuse the checkpoint, all encode their shard of every corpus, and rank 0 alone writes the run folder."""
    from gcl_eval.experiments.device_plan import check_device
    from gcl_eval.util.distributed import process_group, resolve_device

    started = time.perf_counter()
    options.protocol.validate()
    preset = options.preset if options.preset is not None else load_preset(options.model)
    device = resolve_device(options.device)
    check_device(preset, options.device, str(device))
    with process_group(device):
        return _run(options, preset, str(device), started)


def _run(options: RunOptions, preset: Preset, device: str, started: float) -> tuple[Evaluation, Path]:
    from gcl_eval.data.io import read_dataset
    from gcl_eval.experiments.aligned_start import with_start
    from gcl_eval.experiments.checkpoints import train_or_reuse
    from gcl_eval.experiments.device_plan import device_note
    from gcl_eval.protocol.results import save_run
    from gcl_eval.util.distributed import barrier, is_main_process

    data_dir = run_dataset(options, preset)
    with status(f"reading {data_dir}"):
        dataset = read_dataset(data_dir, images_root=options.images)
    line = device_note(preset, device, dataset, options.protocol)
    if line and is_main_process():
        click.echo(line, err=True)
    preset = with_start(preset, dataset, device=device, root=options.checkpoints)
    training = None
    if preset.trains:
        overrides = dict(options.train_overrides)
        if options.workers is not None:
            overrides.setdefault("num_workers", options.workers)
        training = train_or_reuse(preset, dataset, device=device, overrides=overrides, root=options.checkpoints)
    model = preset_model(preset, device, training=training, workers=options.workers, mirror=options.mirror)
    labels = {**dict(options.labels), **reported_record(preset, data_dir)}
    evaluation = evaluate_model(model, dataset, options.protocol, device=device, preset=preset, labels=labels,
                                started=started)
    out = Path(options.out) if options.out else Path("runs") / preset.name
    if is_main_process():
        save_run(evaluation.result, out, evaluation.runs if options.write_trec else None)
    barrier()  # the folder is there for every rank (and a suite's next run) once this returns
    return evaluation, out


def run_dataset(options: RunOptions, preset: Preset) -> Path:
    """The dataset folder a run uses: --data, else the preset's registered dataset (fetched once when the
    cache lacks it), else a built-in world. Under torchrun rank 0 fetches or generates it first."""
    from gcl_eval.data.resolve import resolve_dataset
    from gcl_eval.experiments.datasets import builtin_dataset
    from gcl_eval.util.distributed import main_first

    name = options.data if options.data else preset.dataset if options.world is None else None
    if not name:
        return main_first(lambda: builtin_dataset(options.world or "default"))
    return main_first(lambda: resolve_dataset(name, images=preset_uses_images(preset), mirror=options.mirror))


def preset_uses_images(preset: Preset) -> bool:
    """Whether training or evaluating the preset reads images (a text-only one needs no image archive)."""
    weights = [preset.doc_fields, preset.cold_start_fields]
    fields = {name for w in weights if w is not None for name in w.active()}
    trained = (preset.train or {}).get("doc_fields")
    return "image" in fields or (isinstance(trained, dict) and trained.get("image", 0) > 0)


def reported_record(preset: Preset, data_dir: Path) -> dict:
    """{"reported": ...} for result.json's model record when the preset carries published numbers for the
    dataset evaluated (a folder `gcl-eval data get` made of that registered dataset), else {}."""
    from gcl_eval.data.get import registered_name

    if preset.reported is None or registered_name(data_dir) != preset.reported.dataset:
        return {}
    return {"reported": preset.reported.to_json()}


def preset_model(preset: Preset, device: str, *, training=None, workers: int | None = None,
                 mirror: str | None = None) -> ModelToEvaluate:
    """What the preset evaluates: its [model] (or the trained weights) with its [eval] settings."""
    if preset.kind == "bm25":
        return ModelToEvaluate(kind="bm25", bm25={k: preset.model[k] for k in ("backend", "k1", "b") if k in preset.model})
    precision = preset.eval_precision
    name = preset.model["arch"] if preset.kind == "open_clip" else preset.model["text_model"]
    return ModelToEvaluate(kind=preset.kind, name=name, pretrained=preset.model.get("pretrained") or None,
                           sha256=preset.model.get("sha256") or None, mirror=mirror,
                           prefixes=preset.model.get("prefixes", "e5"), max_length=preset.model.get("max_length"),
                           training=training,
                           doc_weights=preset.doc_fields, cold_start_weights=preset.cold_start_fields,
                           batch_size=preset.eval_batch_size, workers=workers, precision=precision)
