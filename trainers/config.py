"""What a training run does, as one frozen value (configuration is a frozen dataclass).

A TrainConfig holds everything that decides the trained weights (the recipe) plus a few runtime knobs
(device, workers, checkpoint interval) that do not. ``resume`` compares the recipe of a checkpoint with
the new run's and refuses a mismatch, so a checkpoint folder always holds one run.

Defaults are CPU-sized (tiny models, small synthetic data); the paper's recipe is
lr 1e-4, 20 epochs, batch 2048, weight decay 0.02, fine-tuning pretrained checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from gcl_eval.util.errors import GclError
from gcl_eval.retrieval.fields import DOC_FIELDS, QUERY_FIELDS, FieldWeights
from trainers.losses import LOSS_KINDS, NORMALIZERS
from trainers.weights import STW_NAMES

PRECISIONS = ("fp32", "bf16", "fp16")
TEXT_PREFIXES = ("e5", "none")
FUSIONS = ("fixed", "learned")  # how a document's fields combine: weighted mean, or gcl_eval.retrieval.fusion
DEFAULT_DOC_FIELDS = FieldWeights.of(title=0.5, image=0.5)  # the paper's multi-field setting
TEXT_DOC_FIELDS = FieldWeights.of(title=1.0)  # a text-only model has no image tower
QUERY_SIDE = FieldWeights.of(query=1.0)

REPORTERS = ("tensorboard", "wandb")  # --report-to targets (optional extras of the same names)

# Fields that change how a run executes or what it records but not the weights it produces (on one kind
# of device): they may differ between a checkpoint and its resumption, and they are not part of the
# recipe, so they never change a checkpoint cache key.
RUNTIME_FIELDS = ("device", "num_workers", "checkpoint_every", "log_every", "eval_every", "keep_best",
                  "save_every_epoch", "report_to", "progress_every")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Exactly one of ``arch`` (open_clip) and ``text_model`` (HF text encoder) is set.

    lr: 5e-4 by default, what open_clip uses to train small models from scratch and what makes the tiny
    random-init CPU models learn within a few epochs; fine-tuning a pretrained checkpoint wants the
    paper's 1e-4. warmup: linear warm-up steps before the cosine decay (open_clip's cosine_lr).
    batch_size: the GLOBAL contrastive batch (all ranks together), the batch the loss sees.
    checkpoint_every: also checkpoint every this many optimizer steps (0: at epoch ends only).
    max_steps: stop after this many optimizer steps (a training budget smaller than ``epochs``; the
    cosine schedule then decays over these steps). None: ``epochs`` full epochs.
    augment: use the model's training transform (random resized crops) instead of its eval transform;
    off by default because a crop can cut away the frame that is the synthetic images' quality cue.
    fusion: "fixed" (the weighted mean of the present fields) or "learned" (a trained late fusion,
    gcl_eval.retrieval.fusion, exported as fusion.pt; needs at least two document fields).
    field_dropout: the probability that a training document's image is hidden (drawn from seed, epoch and
    record; never a document's last present field), so that a fusion learns to score title-only documents.
    fusion_lr: the learned fusion's own peak learning rate (None: ``lr``). Its few parameters start at the
    fixed weights; at a fine-tuning lr of 1e-4 they would hardly move in a few hundred steps.

    Watching a run (runtime fields, trainers.monitor): log_every: a metrics.jsonl record every this many
    steps (0: none); eval_every: evaluate every this many steps and at each epoch end (0: never; needs an
    evaluation callback); keep_best: "MEASURE" or "MEASURE:SPLIT", export the best evaluated weights to
    best/; save_every_epoch: export epoch-K/ at each epoch end; report_to: also send the records to
    TensorBoard and/or W&B; progress_every: seconds between plain progress lines when stderr is not a
    terminal.
    """

    arch: str | None = None
    text_model: str | None = None
    pretrained: str | None = None
    loss: str = "ce"
    stw: str = "inverse"
    stw_params: tuple[tuple[str, Any], ...] = ()
    s_max: float = 100.0
    normalize_by: str = "n"
    query_fields: FieldWeights = QUERY_SIDE
    doc_fields: FieldWeights | None = None  # None: title+image 0.5/0.5 for open_clip, title for text
    renormalize_mean: bool = False
    fusion: str = "fixed"
    field_dropout: float = 0.0
    fusion_lr: float | None = None
    text_prefixes: str = "e5"
    max_length: int = 128  # text models: tokens per text (open_clip models use their context length)
    augment: bool = False
    epochs: int = 5
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 20
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    precision: str = "fp32"
    grad_clip: float | None = None
    grad_cache_chunk: int | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int | None = None  # None: half the CPU cores, 1 to 8 (see data_workers)
    checkpoint_every: int = 0
    log_every: int = 0
    eval_every: int = 0
    keep_best: str | None = None
    save_every_epoch: bool = False
    report_to: tuple[str, ...] = ()
    progress_every: float = 10.0

    def __post_init__(self) -> None:
        if (self.arch is None) == (self.text_model is None):
            raise GclError("give exactly one model: an open_clip architecture (--arch) or a text model (--text-model)")
        if self.doc_fields is None:
            object.__setattr__(self, "doc_fields", TEXT_DOC_FIELDS if self.text_model else DEFAULT_DOC_FIELDS)
        object.__setattr__(self, "stw_params", tuple(sorted(dict(self.stw_params).items())))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "report_to", tuple(dict.fromkeys(self.report_to)))
        self._validate()
        self._validate_watching()

    def _validate(self) -> None:
        _choice("loss", self.loss, LOSS_KINDS)
        _choice("score-to-weight function", self.stw, STW_NAMES)
        _choice("normalize_by", self.normalize_by, NORMALIZERS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("text prefixes", self.text_prefixes, TEXT_PREFIXES)
        if self.loss == "sigmoid" and self.normalize_by != "n":
            raise GclError("the sigmoid loss is normalised by N only (normalize_by='n')")
        for name in self.query_fields.active():
            if name not in QUERY_FIELDS:
                raise GclError(f"field {name!r} is not a query field (query fields: {', '.join(QUERY_FIELDS)})")
        for name in self.doc_fields.active():
            if name not in DOC_FIELDS:
                raise GclError(f"field {name!r} is not a document field (document fields: {', '.join(DOC_FIELDS)})")
        if self.text_model and "image" in self.doc_fields.active():
            raise GclError("a text model has no image tower: give document fields without image (e.g. title=1)")
        self._validate_fields()
        _positive_int("epochs", self.epochs)
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps)
        _positive_int("batch size", self.batch_size)
        _positive_int("max_length", self.max_length)
        _non_negative_int("warmup", self.warmup)
        if self.num_workers is not None:
            _non_negative_int("num_workers", self.num_workers)
        _non_negative_int("checkpoint_every", self.checkpoint_every)
        if self.grad_cache_chunk is not None:
            _positive_int("gradient-cache chunk", self.grad_cache_chunk)
        _positive_float("lr", self.lr)
        _positive_float("s_max", self.s_max)
        _positive_float("eps", self.eps)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise GclError(f"weight decay must be a number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None:
            _positive_float("gradient clipping norm", self.grad_clip)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise GclError(f"AdamW betas must be two numbers in [0, 1), got {self.betas!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise GclError(f"seed must be an integer >= 0, got {self.seed!r}")
        # The STW parameters are checked by score_to_weight itself (one place for those rules).
        from trainers.weights import score_to_weight

        score_to_weight(self.stw, [self.s_max], s_max=self.s_max, **dict(self.stw_params))

    def _validate_fields(self) -> None:
        """The field fusion and field dropout need a document side with more than one field."""
        _choice("field fusion", self.fusion, FUSIONS)
        active = self.doc_fields.active()
        if self.fusion == "learned" and len(active) < 2:
            raise GclError(f"a learned field fusion needs at least two document fields, got {self.doc_fields} "
                           "(e.g. --fields image=0.5,title=0.5)")
        if self.fusion_lr is not None:
            if self.fusion != "learned":
                raise GclError("fusion_lr applies to a learned field fusion (fusion = \"learned\")")
            _positive_float("fusion_lr", self.fusion_lr)
        p = self.field_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (math.isfinite(p) and 0 <= p < 1):
            raise GclError(f"field dropout must be a probability in [0, 1), got {p!r}")
        if p > 0 and ("image" not in active or len(active) < 2):
            raise GclError(f"field dropout hides images of documents that have another field: it needs image and "
                           f"another document field, got {self.doc_fields}")

    def _validate_watching(self) -> None:
        _non_negative_int("log_every", self.log_every)
        _non_negative_int("eval_every", self.eval_every)
        for name in self.report_to:
            _choice("report target", name, REPORTERS)
        if isinstance(self.progress_every, bool) or not isinstance(self.progress_every, (int, float)) \
                or not math.isfinite(self.progress_every) or self.progress_every < 0:
            raise GclError(f"progress interval must be a number of seconds >= 0, got {self.progress_every!r}")
        if self.keep_best is not None:
            if not self.eval_every:
                raise GclError("--keep-best needs --eval-every: the best checkpoint is chosen by the evaluations")
            measure, colon, split = self.keep_best.partition(":")
            if not measure.strip() or (colon and not split.strip()):
                raise GclError(f"--keep-best {self.keep_best!r} is not MEASURE or MEASURE:SPLIT (e.g. nDCG@10:in_domain)")

    def data_workers(self) -> int:
        """DataLoader worker processes: ``num_workers``, or half the CPU cores (1..8), so that the workers
        decoding images and torch's compute threads do not fight over the same cores."""
        from gcl_eval.util.threads import default_workers

        return self.num_workers if self.num_workers is not None else default_workers()

    @property
    def model_name(self) -> str:
        return self.arch if self.arch is not None else str(self.text_model)

    @property
    def model_kind(self) -> str:
        return "open_clip" if self.arch is not None else "text"

    def to_dict(self) -> dict:
        """JSON-ready; field weights as {name: weight}, STW parameters as a dict."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, FieldWeights):
                value = value.as_dict()
            elif f.name == "stw_params":
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GclError(f"unknown training option(s): {', '.join(unknown)}")
        kwargs = dict(data)
        for key in ("query_fields", "doc_fields"):
            if isinstance(kwargs.get(key), dict):
                kwargs[key] = FieldWeights.of(**kwargs[key])
        if isinstance(kwargs.get("stw_params"), dict):
            kwargs["stw_params"] = tuple(kwargs["stw_params"].items())
        for key in ("betas", "report_to"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def recipe(self) -> dict:
        """Everything that decides the weights: what a resumed run must share with its checkpoint."""
        d = self.to_dict()
        for key in RUNTIME_FIELDS:
            d.pop(key)
        if d["max_steps"] is None:  # absent when unset, so recipes written before the option keep their keys
            d.pop("max_steps")
        for key, default in (("fusion", "fixed"), ("field_dropout", 0.0), ("fusion_lr", None)):  # likewise
            if d[key] == default:
                d.pop(key)
        return d

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run: ``epochs`` epochs, capped at ``max_steps``."""
        full = self.epochs * steps_per_epoch
        return full if self.max_steps is None else min(full, self.max_steps)

    def recipe_differences(self, other_recipe: dict) -> list[str]:
        """'key: checkpoint X, now Y' for every recipe field that differs from ``other_recipe``."""
        mine = self.recipe()
        first = ("arch", "text_model", "pretrained", "loss")  # the model's identity first
        keys = [k for k in first if k in mine] + sorted((set(mine) | set(other_recipe)) - set(first))
        out = []
        for key in keys:
            if mine.get(key) != other_recipe.get(key):
                out.append(f"{key}: checkpoint {other_recipe.get(key)!r}, now {mine.get(key)!r}")
        return out


def _choice(what: str, value, known) -> None:
    if value not in known:
        raise GclError(f"unknown {what} {value!r}; known: {', '.join(known)}")


def _positive_int(what: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GclError(f"{what} must be a positive integer, got {value!r}")


def _non_negative_int(what: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise GclError(f"{what} must be an integer >= 0, got {value!r}")


def _positive_float(what: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise GclError(f"{what} must be a positive number, got {value!r}")
