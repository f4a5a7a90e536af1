"""result.json's "model": what was evaluated, built in this one place, section by section.

The sections, in this order: the preset (name, family, track, whether it trains, kind); its training
run (checkpoint file and digest, score-to-weight curve, train config and result); the weights encoded
with; a suite's labels (run label, seed, suite key, world); how documents were scored (field weights,
or BM25's settings). A bare model (`gcl-eval eval`: no preset) also names its encoder and precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gcl_eval.experiments.checkpoints import Training
from gcl_eval.experiments.preset import Preset

STW_CURVE_SCORES = range(1, 101)  # the score-to-weight curve is recorded at scores 1..100 (s_max 100)


@dataclass(frozen=True)
class Weights:
    """The weights a dense model encoded with: architecture or text model name, source, sha256."""

    kind: str  # "open_clip" or "text"
    name: str
    source: str
    sha256: str
    precision: str  # the encoder's precision as it ran


def model_record(*, retrieval: Mapping, preset: Preset | None = None, training: Training | None = None,
                 weights: Weights | None = None, labels: Mapping | None = None) -> dict:
    """The record; ``retrieval`` is the retriever's describe(). A key already set by an earlier section
    keeps its value: a retriever describes only how it scores (BM25 calls itself preset "bm25" whatever
    the preset file is named)."""
    record: dict = {}
    if preset is not None:
        record.update(preset=preset.name, family=preset.family, track=preset.track, trains=preset.trains,
                      kind=preset.kind)
    if training is not None:
        record.update(training_record(training))
    if weights is not None:
        record.update(weights_record(weights, bare=preset is None))
    record.update(labels or {})
    record.update((key, value) for key, value in retrieval.items() if key not in record)
    return record


def training_record(training: Training) -> dict:
    from trainers.weights import score_to_weight

    config, trained = training.config, training.trained
    params = dict(config.stw_params)
    curve = score_to_weight(config.stw, list(STW_CURVE_SCORES), s_max=100, **params)
    train = {"config": config.to_dict(), "result": trained.info.get("result")}
    learning_curve = evaluations_of(trained.path)
    if learning_curve:
        train["learning_curve"] = learning_curve
    return {"checkpoint": str(trained.path), "checkpoint_sha256": trained.sha256,
            "stw": {"name": config.stw, "params": params, "curve": [round(float(w), 6) for w in curve]},
            "train": train}


def evaluations_of(path) -> list[dict]:
    """The evaluations during training of the run whose model is at ``path`` (its folder's metrics.jsonl):
    [{"step", "epoch", "splits": {split: {measure: value}}}], in step order; [] when it had none."""
    from pathlib import Path

    from trainers.monitor import read_metrics

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return [{"step": r["step"], "epoch": r.get("epoch"), "splits": r["splits"]}
            for r in read_metrics(folder) if r.get("kind") == "eval" and isinstance(r.get("splits"), dict)]


def weights_record(weights: Weights, *, bare: bool) -> dict:
    """open_clip: arch, source, checkpoint_sha256 (a preset's training run set the same digest first, so it
    keeps its place); a bare model adds encoder and precision. Text: text_model, source, checkpoint_sha256
    and eval_precision."""
    if weights.kind == "text":
        return {"text_model": weights.name, "source": weights.source, "checkpoint_sha256": weights.sha256,
                "eval_precision": weights.precision}
    record = {"arch": weights.name, "source": weights.source, "checkpoint_sha256": weights.sha256}
    if bare:
        record.update(encoder="open_clip", precision=weights.precision)
    return record
