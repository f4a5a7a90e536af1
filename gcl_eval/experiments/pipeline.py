"""`gcl-eval run` as a library call: preset -> (built-in) dataset -> train if needed -> evaluate -> run folder.

This is part of the composition root (it reaches into trainers/ and baselines/), so it lives with the
CLI commands. Checkpoints are cached per (preset recipe, dataset fingerprint) and finished runs are
reused; a killed training run is resumed from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from gcl_eval.util.paths import cache_dir
from gcl_eval.util.console import status
from gcl_eval.util.errors import GclError
from gcl_eval.experiments.preset import DEFAULT_PRESET, Preset, load_preset
from gcl_eval.util.threads import budget_cpu_threads, default_workers
from gcl_eval.protocol.evaluate import EvalProtocol, Evaluation, evaluate_dataset

COLD_START_SPLITS = ("novel_query", "novel_corpus", "zero_shot")


@dataclass(frozen=True)
class RunOptions:
    model: str = DEFAULT_PRESET
    data: Path | None = None  # None: the built-in synthetic dataset
    out: Path | None = None  # None: runs/<preset>
    protocol: EvalProtocol = EvalProtocol()
    device: str | None = None
    workers: int | None = None
    train_overrides: tuple[tuple[str, object], ...] = ()  # TrainConfig fields, e.g. (("epochs", 1),)
    checkpoints: Path | None = None  # None: the gcl-eval cache's checkpoints folder
    world: str = "default"  # the built-in world used when data is None (gcl_eval.data.synth.world.BUILTIN_WORLDS)
    preset: Preset | None = None  # an already-loaded (e.g. suite-modified) preset instead of `model`
    extra_info: tuple[tuple[str, object], ...] = ()  # added to the run's "model" record (suite label, seed)
    write_trec: bool = True  # the TREC run files (~40 MB per 1,000 queries x 1,000 results)


def builtin_dataset(world: str = "default") -> Path:
    """A built-in synthetic world, generated once into the cache folder (keyed by generator version and
    its options)."""
    from gcl_eval.data.synth import SynthConfig
    from gcl_eval.data.synth.build import write_synthetic
    from gcl_eval.data.synth.world import BUILTIN_WORLDS, GENERATOR_VERSION

    if world not in BUILTIN_WORLDS:
        raise GclError(f"unknown built-in world {world!r}; known: {', '.join(BUILTIN_WORLDS)}")
    config = SynthConfig(**BUILTIN_WORLDS[world])
    key = hashlib.sha256(json.dumps({"v": GENERATOR_VERSION, **config.to_dict()}, sort_keys=True).encode()).hexdigest()
    folder = cache_dir("datasets") / f"synth-{world}-{key[:12]}"
    if not (folder / "synth.json").is_file():
        write_synthetic(config, folder, overwrite=True)
    return folder


def train_config(preset: Preset, overrides: dict | None = None):
    """The preset's TrainConfig (model source from [model], recipe from [train]) with overrides."""
    from trainers.config import TrainConfig

    options = dict(preset.train or {})
    if preset.kind == "open_clip":
        options.update(arch=preset.model["arch"], pretrained=preset.model.get("pretrained") or None)
    else:
        options.update(text_model=preset.model["text_model"])
    options.update(overrides or {})
    try:
        return TrainConfig.from_dict(options)
    except TypeError as err:
        raise GclError(f"preset {preset.name}: bad [train] table ({err})") from None


def checkpoint_dir(preset: Preset, config, dataset_fingerprint: str, root: Path | None) -> Path:
    recipe = json.dumps({"recipe": config.recipe(), "data": dataset_fingerprint}, sort_keys=True, default=str)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    base = Path(root) if root else cache_dir("checkpoints")
    return base / f"{preset.name}-{key}"


def run_preset(options: RunOptions) -> tuple[Evaluation, Path]:
    """Train when the preset trains and no finished checkpoint exists, evaluate, save; (evaluation, folder)."""
    from gcl_eval.data.io import read_dataset
    from gcl_eval.experiments.evaluate_model import resolve_device
    from gcl_eval.protocol.results import save_run

    started = time.perf_counter()
    preset = options.preset if options.preset is not None else load_preset(options.model)
    device = resolve_device(options.device)
    if "gpu" in preset.needs and not device.startswith("cuda"):
        raise GclError(f"preset {preset.name} needs a GPU (no CUDA device here); CPU presets: tiny-gcl, "
                       f"tiny-gcl-multi, tiny-clip, tiny-clip-multi, tiny-siglip, minilm-zs, minilm-ce, minilm-gcl, bm25")
    data_dir = Path(options.data) if options.data else builtin_dataset(options.world)
    with status(f"reading {data_dir}"):
        dataset = read_dataset(data_dir)
    timings: dict = {}
    trained = None
    model_info = {"preset": preset.name, "family": preset.family, "track": preset.track, "trains": preset.trains,
                  "kind": preset.kind}
    if preset.trains:
        trained, train_info = _train(preset, options, dataset, device, timings)
        model_info.update(train_info)
    retriever = _retriever(preset, trained, device, options, model_info)
    t0 = time.perf_counter()
    evaluation = evaluate_dataset(retriever, dataset, options.protocol, device=device)
    model_info.update(options.extra_info)
    evaluation.result.model = {**model_info, **retriever.describe(), **model_info}
    evaluation.result.timings.update(timings, evaluate_s=round(time.perf_counter() - t0, 3),
                                     total_s=round(time.perf_counter() - started, 3))
    cache = getattr(retriever, "cache", None)
    if cache is not None:
        evaluation.result.timings["embedding_cache"] = cache.stats.as_dict()
    out = Path(options.out) if options.out else Path("runs") / preset.name
    save_run(evaluation.result, out, evaluation.runs if options.write_trec else None)
    return evaluation, out


def _train(preset: Preset, options: RunOptions, dataset, device: str, timings: dict):
    from trainers.checkpoint import is_finished, load_trained
    from trainers.loop import train
    from trainers.weights import score_to_weight

    overrides = dict(options.train_overrides)
    overrides.setdefault("device", device)
    if options.workers is not None:
        overrides.setdefault("num_workers", options.workers)
    config = train_config(preset, overrides)
    folder = checkpoint_dir(preset, config, dataset.fingerprint(), options.checkpoints)
    t0 = time.perf_counter()
    reused = is_finished(folder)
    if not reused:
        train(config, dataset, folder, resume=True)
    timings["train_s"] = round(time.perf_counter() - t0, 3)
    timings["checkpoint_reused"] = reused
    trained = load_trained(folder, device=device)
    params = dict(config.stw_params)
    curve = score_to_weight(config.stw, list(range(1, 101)), s_max=100, **params)
    info = {"checkpoint": str(trained.path), "checkpoint_sha256": trained.sha256,
            "stw": {"name": config.stw, "params": params, "curve": [round(float(w), 6) for w in curve]},
            "train": {"config": config.to_dict(), "result": trained.info.get("result")}}
    return trained, info


def _retriever(preset: Preset, trained, device: str, options: RunOptions, model_info: dict):
    if preset.kind == "bm25":
        from baselines.bm25 import BM25Retriever

        keys = {k: preset.model[k] for k in ("backend", "k1", "b") if k in preset.model}
        return BM25Retriever(**keys)
    from gcl_eval.retrieval.dense import DenseRetriever
    from gcl_eval.retrieval.embedding_cache import EmbeddingCache

    workers = options.workers if options.workers is not None else default_workers()
    budget_cpu_threads(workers, device)
    if preset.kind == "open_clip":
        from gcl_eval.retrieval.encoders import OpenClipEncoder
        from gcl_eval.retrieval.models import load_open_clip

        loaded = trained.model if trained else load_open_clip(preset.model["arch"], preset.model.get("pretrained") or None,
                                                              device=device)
        precision = preset.eval_precision if device.startswith("cuda") else "fp32"  # autocast on CUDA only
        encoder = OpenClipEncoder(loaded, device=device, batch_size=preset.eval_batch_size, num_workers=workers,
                                  precision=precision)
        model_info.update(arch=loaded.arch, source=loaded.source, checkpoint_sha256=loaded.weights_sha256)
    else:
        from baselines.text_encoder import TextModelEncoder, text_model_sha256
        from trainers.text_model import load_text_model

        if trained:
            text, digest = trained.model, trained.sha256
        else:
            text = load_text_model(preset.model["text_model"], prefixes=preset.model.get("prefixes", "e5"), device=device)
            digest = text_model_sha256(text)
        encoder = TextModelEncoder(text, digest, batch_size=preset.eval_batch_size, device=device,
                                   precision=preset.eval_precision)
        model_info.update(text_model=preset.model["text_model"], source=text.source, checkpoint_sha256=digest,
                          eval_precision=preset.eval_precision)
    split_weights = {s: preset.cold_start_fields for s in COLD_START_SPLITS} if preset.cold_start_fields else {}
    return DenseRetriever(encoder, doc_weights=preset.doc_fields, split_doc_weights=split_weights,
                          cache=EmbeddingCache(), model_info=dict(model_info), device=device)
