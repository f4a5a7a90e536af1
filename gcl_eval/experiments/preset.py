"""Model presets: declarative TOML files (package data under gcl_eval/experiments/presets/), like open_clip's configs.

A preset says what to build (model source), how to train it (a [train] table of TrainConfig options;
absent for zero-shot models and BM25) and how to evaluate it (document field weights, optionally other
weights on the cold-start splits). It may name the registered dataset it is run on (`dataset`, used
when no --data is given) and the numbers published for it ([reported], gcl_eval.report.reported).
A path to a user's own TOML file works wherever a name does.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcl_eval.report.reported import ReportedNumbers, parse_reported
from gcl_eval.retrieval import EVAL_PRECISIONS
from gcl_eval.retrieval.fields import FieldWeights
from gcl_eval.util.errors import GclError

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "mini-gcl"  # the fastest preset that beats BM25 on every split (README)
FAMILIES = ("gcl", "clip", "siglip", "e5", "zero-shot", "bm25", "released")
TRACKS = ("text", "image", "multi")
KINDS = ("open_clip", "text", "bm25")
NEEDS = ("gpu", "network")
STARTS = ("aligned",)  # model.start: weights a pretraining stage makes per dataset (experiments.aligned_start)
MODEL_KEYS = {"open_clip": {"kind", "arch", "pretrained", "sha256", "start"},
              "text": {"kind", "text_model", "prefixes", "max_length"}, "bm25": {"kind", "backend", "k1", "b"}}
TOP_KEYS = {"description", "family", "track", "needs", "dataset", "model", "train", "eval", "reported"}
EVAL_KEYS = {"doc_fields", "cold_start_fields", "batch_size", "precision"}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    family: str
    track: str
    model: dict[str, Any]
    train: dict[str, Any] | None = None  # TrainConfig options (without the model source)
    doc_fields: FieldWeights | None = None
    cold_start_fields: FieldWeights | None = None
    eval_batch_size: int = 256
    eval_precision: str = "fp32"
    needs: tuple[str, ...] = ()
    dataset: str | None = None  # the registered dataset it runs on without --data (None: the built-in world)
    reported: ReportedNumbers | None = None  # numbers published for the model (released presets)
    path: Path | None = field(default=None, compare=False)

    @property
    def kind(self) -> str:
        return self.model["kind"]

    @property
    def trains(self) -> bool:
        return self.train is not None

    def requirements(self) -> list[str]:
        """What running it takes beyond this CPU: a GPU, the network, packaged or local weights."""
        out = list(self.needs)
        if self.kind == "text" and self.model.get("text_model") == "minilm":
            out.append("text extra (packaged MiniLM weights)")
        if self.kind == "open_clip" and self.model.get("start") == "aligned":
            out += ["text extra (packaged MiniLM weights)", "pretraining stage (once per dataset)"]
        return out

    def train_config(self, overrides: dict | None = None):
        """The trainers.config.TrainConfig it trains with: the model source from [model], the recipe from
        [train], then ``overrides`` (runtime options such as device, or a suite's seed)."""
        from trainers.config import TrainConfig

        options = dict(self.train or {})
        if self.kind == "open_clip":
            options.update(arch=self.model["arch"], pretrained=self.model.get("pretrained") or None)
        else:
            options.update(text_model=self.model["text_model"])
        options.update(overrides or {})
        try:
            return TrainConfig.from_dict(options)
        except TypeError as err:
            raise GclError(f"preset {self.name}: bad [train] table ({err})") from None

    def summary(self) -> dict:
        return {"name": self.name, "family": self.family, "track": self.track, "trains": self.trains,
                "needs": self.requirements(), "kind": self.kind, "dataset": self.dataset,
                "reported": self.reported.to_json() if self.reported else None, "description": self.description}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def list_presets() -> list[Preset]:
    return [load_preset(name) for name in preset_names()]


def load_preset(name_or_path: str | Path) -> Preset:
    """A packaged preset by name, or a user's TOML file by path; a bad one is a one-line GclError."""
    path, data = _read(name_or_path)
    return _parse(path.stem, data, path)


def preset_with_overrides(name_or_path: str | Path, *, train: dict | None = None, evaluation: dict | None = None,
                          where: str = "") -> Preset:
    """A preset with some [train] / [eval] keys replaced, validated exactly like a preset file.

    ``where`` prefixes errors (e.g. the suite and run that asked for the overrides)."""
    path, data = _read(name_or_path)
    data = dict(data)
    if train:
        if data.get("train") is None:
            raise GclError(f"{where}preset {path.stem} does not train; it takes no [train] overrides")
        data["train"] = {**data["train"], **train}
    if evaluation:
        data["eval"] = {**data.get("eval", {}), **evaluation}
    preset = _parse(path.stem, data, path)
    if train:
        try:
            preset.train_config()
        except GclError as err:
            raise GclError(f"{where}preset {path.stem}: bad [train] override ({err})") from None
    return preset


def _read(name_or_path: str | Path) -> tuple[Path, dict]:
    return read_named_toml("preset", name_or_path, PRESET_DIR, preset_names)


def read_named_toml(kind: str, name_or_path: str | Path, packaged: Path, names) -> tuple[Path, dict]:
    """A packaged `kind` file (``packaged/NAME.toml``) by name, or a TOML file by path, parsed; a missing or
    unreadable one is a one-line GclError (`names()` lists the packaged ones)."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.suffix == ".toml" or path.is_file() or "/" in text:
        if not path.is_file():
            raise GclError(f"{kind} file {path} does not exist")
    else:
        path = packaged / f"{text}.toml"
        if not path.is_file():
            raise GclError(f"unknown {kind} {text!r}; known: {', '.join(names())} (or a path to a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise GclError(f"{kind} {path}: not valid TOML ({err})") from None
    return path, data


def _parse(name: str, data: dict, path: Path) -> Preset:
    where = f"preset {path}"
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise GclError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(TOP_KEYS))}")
    for key in ("description", "family", "track", "model"):
        if key not in data:
            raise GclError(f"{where}: missing {key!r}")
    _one_of(where, "family", data["family"], FAMILIES)
    _one_of(where, "track", data["track"], TRACKS)
    needs = data.get("needs", [])
    if not isinstance(needs, list):
        raise GclError(f"{where}: needs must be a list, e.g. [\"gpu\"]")
    needs = tuple(needs)
    for need in needs:
        _one_of(where, "needs", need, NEEDS)
    model = dict(_table(where, "model", data["model"]))
    _one_of(where, "model.kind", model.get("kind"), KINDS)
    extra = sorted(set(model) - MODEL_KEYS[model["kind"]])
    if extra:
        raise GclError(f"{where}: model key(s) {', '.join(extra)} do not apply to kind {model['kind']!r}")
    required = {"open_clip": "arch", "text": "text_model"}.get(model["kind"])
    if required and not model.get(required):
        raise GclError(f"{where}: model.{required} is required for kind {model['kind']!r}")
    if "start" in model:
        _one_of(where, "model.start", model["start"], STARTS)
        if model.get("pretrained"):
            raise GclError(f"{where}: model.start and model.pretrained both name the starting weights; give one")
    train = data.get("train")
    if train is not None:
        _table(where, "train", train)
    if train is not None and model["kind"] == "bm25":
        raise GclError(f"{where}: a bm25 preset does not train")
    evaluation = dict(_table(where, "eval", data.get("eval", {})))
    extra = sorted(set(evaluation) - EVAL_KEYS)
    if extra:
        raise GclError(f"{where}: unknown eval key(s) {', '.join(extra)}; expected {', '.join(sorted(EVAL_KEYS))}")
    doc_fields = _fields(where, "eval.doc_fields", evaluation.get("doc_fields"))
    if model["kind"] != "bm25" and doc_fields is None:
        raise GclError(f"{where}: eval.doc_fields is required (e.g. {{ title = 0.5, image = 0.5 }})")
    if model["kind"] == "text" and doc_fields is not None and "image" in doc_fields.active():
        raise GclError(f"{where}: a text model has no image tower; eval.doc_fields must not weight image")
    if data["track"] == "image" and doc_fields is not None and "title" in doc_fields.active():
        raise GclError(f"{where}: track 'image' evaluates image-only documents; eval.doc_fields weights title")
    batch_size = evaluation.get("batch_size", 256)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GclError(f"{where}: eval.batch_size {batch_size!r} is not a positive integer")
    precision = evaluation.get("precision", "fp32")
    _one_of(where, "eval.precision", precision, EVAL_PRECISIONS)
    dataset = _dataset(where, data.get("dataset"))
    reported = parse_reported(data["reported"], dataset=dataset, where=where) if "reported" in data else None
    return Preset(name=name, description=str(data["description"]), family=data["family"], track=data["track"],
                  model=model, train=dict(train) if train is not None else None, doc_fields=doc_fields,
                  cold_start_fields=_fields(where, "eval.cold_start_fields", evaluation.get("cold_start_fields")),
                  eval_batch_size=batch_size, eval_precision=precision, needs=needs,
                  dataset=dataset, reported=reported, path=path)


def _table(where: str, key: str, value) -> dict:
    if not isinstance(value, dict):
        raise GclError(f"{where}: {key} must be a table, e.g. [{key}]")
    return value


def _dataset(where: str, value) -> str | None:
    """A registered dataset's name (gcl-eval data list), or None."""
    if value is None:
        return None
    from gcl_eval.data.registry import dataset_names

    _one_of(where, "dataset", value, dataset_names())
    return value


def _one_of(where: str, key: str, value, known) -> None:
    if value not in known:
        raise GclError(f"{where}: {key} {value!r} is not one of {', '.join(known)}")


def _fields(where: str, key: str, value) -> FieldWeights | None:
    if value is None or value == {}:  # {}: none (a suite's way to drop a preset's cold_start_fields)
        return None
    if not isinstance(value, dict):
        raise GclError(f"{where}: {key} must be a table of field weights, e.g. {{ title = 1.0 }}")
    try:
        return FieldWeights.of(**{k: float(v) for k, v in value.items()})
    except (GclError, TypeError, ValueError) as err:
        raise GclError(f"{where}: {key}: {err}") from None
