"""Evaluations during training: the protocol on a fixed sample of queries of a few splits, run on the
weights being trained through the one evaluation path (gcl_eval.experiments.evaluate_model).

The training loop (trainers/) knows nothing of the protocol; `gcl-eval train` builds the function here and
hands it to trainers.loop.train as ``evaluate`` (trainers.monitor.Evaluate).
"""

from __future__ import annotations

from dataclasses import dataclass

from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.protocol.evaluate import EvalProtocol
from gcl_eval.util.errors import GclError

DEFAULT_EVAL_SPLITS = ("in_domain",)
DEFAULT_EVAL_QUERIES = 200


@dataclass(frozen=True)
class TrainingEvaluation:
    """``evaluate(model, step, epoch) -> {split: {measure: value}}`` on ``dataset``: the protocol with
    ``protocol``'s splits, query sample and measures, documents scored with the field weights the model
    trains (``doc_weights``), nothing cached (the weights change between calls)."""

    dataset: object  # gcl_eval.data.dataset.Dataset
    protocol: EvalProtocol
    doc_weights: object  # gcl_eval.retrieval.fields.FieldWeights
    device: str
    workers: int | None = None
    precision: str = "fp32"  # bf16 when the run trains under bf16 autocast

    def __call__(self, trained, step: int, epoch: int) -> dict[str, dict[str, float]]:
        from gcl_eval.experiments.checkpoints import Training
        from gcl_eval.experiments.evaluate_model import ModelToEvaluate, evaluate_model
        from trainers.config import TrainConfig

        training = Training(TrainConfig.from_dict(trained.info["config"]), trained, 0.0, False)
        model = ModelToEvaluate(kind=trained.kind, training=training, doc_weights=self.doc_weights,
                                workers=self.workers, use_cache=False, precision=self.precision)
        evaluation = evaluate_model(model, self.dataset, self.protocol, device=self.device)
        return {split: dict(body["metrics"]) for split, body in evaluation.result.splits.items()}


def training_evaluation(dataset, config, *, splits=DEFAULT_EVAL_SPLITS,
                        queries: int = DEFAULT_EVAL_QUERIES) -> TrainingEvaluation:
    """The evaluation ``config`` (a trainers.config.TrainConfig) asks for: the paper's measures plus the
    --keep-best measure, on ``splits`` of ``dataset`` with ``queries`` sampled queries each (the protocol's
    sample rule and seed: `gcl-eval eval --queries N` samples the same queries). Bad splits,
    measures or a keep-best split that is not evaluated: GclError before any training."""
    from gcl_eval.util.distributed import resolve_device

    measures = list(PAPER_MEASURES)
    best_split = None
    if config.keep_best:
        measure, _, best_split = config.keep_best.partition(":")
        if measure.strip() not in measures:
            measures.append(measure.strip())
    splits = tuple(splits)
    protocol = EvalProtocol(queries_per_split=queries, measures=tuple(measures), splits=splits)
    protocol.validate()
    missing = [s for s in splits if s not in dataset.pairs]
    if missing:
        raise GclError(f"--eval-splits: dataset {dataset.name} has no split {missing[0]}")
    if best_split and best_split.strip() not in splits:
        raise GclError(f"--keep-best {config.keep_best}: split {best_split.strip()} is not evaluated; "
                       f"add it to --eval-splits ({','.join(splits)})")
    device = str(resolve_device(config.device))
    precision = "bf16" if config.precision == "bf16" else "fp32"
    return TrainingEvaluation(dataset, protocol, config.doc_fields, device, config.num_workers, precision)
