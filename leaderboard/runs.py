"""Run folders -> the models the leaderboard shows: one row per model and recipe, its seeds aggregated.

`collect_runs` reads every run folder under RESULTS_DIR with `load_run` (a broken one stops the
build with one line naming it). `group_models` puts the seeds of one model together: the runs a
suite made for one label (result.json's model.suite and model.label) on one dataset form one
`Model`, whose comparison side is the engine's seed group (`Side`: mean of the seeds' means,
per-query scores averaged over the seeds); any other run is a model of its own. `dataset_title`
names a dataset for people: the built-in worlds and the registered datasets by name, anything else
by its recorded name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gcl_eval.data.synth.world import BUILTIN_WORLDS
from gcl_eval.experiments.preset import TRACKS
from gcl_eval.protocol.results import RunResult, display_label, load_run
from gcl_eval.report.engine import COMPARED_PROTOCOL_KEYS, Side
from gcl_eval.util.errors import GclError

WORLD_TITLES = {"default": "built-in world: default", "second": "built-in world: second",
                "heldout": "built-in world: held out (seed 7)", "control": "built-in world: control (quality hidden)"}
REGISTRY_TITLES = {"marqo-gs-10m": "Marqo-GS-10M", "marqo-gs-fashion-5m": "Marqo-GS-10M: fashion (5M)",
                   "marqo-gs-wfash-1m": "Marqo-GS-10M: women's fashion (1M)"}
WORLD_ORDER = ("default", "second", "heldout", "control")  # the main world, other draws, then the control
_BUILTIN_NAME = re.compile(r"synth-(?P<world>[A-Za-z0-9_]+)-[0-9a-f]{12}")


@dataclass
class Entry:
    """One run folder."""

    run: RunResult
    folder: Path
    rel: str  # the folder relative to RESULTS_DIR, "/"-separated
    label: str  # display_label (a suite run's label with its seed), else the folder name

    @property
    def seed(self):
        return self.run.model.get("seed")


@dataclass
class Model:
    """One row of a table: the runs (seeds) of one model and recipe on one dataset."""

    runs: list[Entry]
    rel: str  # the folder holding the seeds (a suite's <suite>/<label>), or the run folder itself
    slug: str  # file name stem of its page under runs/
    label: str  # the suite label, else the preset, else the folder name
    suite: str | None
    family: str
    track: str  # text | image | multi | unknown
    training: str  # trained | zero-shot | unknown
    side: Side = field(init=False, repr=False)  # the seed group in the comparison engine, labelled with rel

    def __post_init__(self):
        self.side = Side(self.rel, tuple(e.run for e in self.runs))

    @property
    def reference(self) -> RunResult:
        return self.runs[0].run

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    @property
    def dataset_name(self) -> str:
        return str(self.reference.dataset.get("name", "unnamed"))

    def has(self, split: str, measure: str) -> bool:
        return self.side.has(split, measure)

    def mean(self, split: str, measure: str) -> float | None:
        return self.side.mean(split, measure) if self.has(split, measure) else None

    def std(self, split: str, measure: str) -> float | None:
        """Sample standard deviation over the seeds (ddof 1, as the suite summaries); None for one seed."""
        if not self.has(split, measure) or self.n_seeds < 2:
            return None
        return float(np.std(self.side.values(split, measure), ddof=1))


def collect_runs(results_dir: Path) -> list[Entry]:
    """Every run folder (a folder with result.json) under results_dir, validated, in path order.

    Hidden folders are skipped: `save_run` builds a run in `.<name>.*` before renaming it, and a
    half-written one must not appear on the site.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise GclError(f"{results_dir}: results folder does not exist or is not a folder")
    files = sorted(p for p in results_dir.rglob("result.json")
                   if not any(part.startswith(".") for part in p.relative_to(results_dir).parts[:-1]))
    if not files:
        raise GclError(f"{results_dir}: no run folders (no result.json at any depth)")
    entries = []
    for path in files:
        folder = path.parent
        run = load_run(folder)  # GclError naming the folder's file when it is not valid
        if not isinstance(run.model, dict):
            raise GclError(f"{path}: \"model\" must be an object")
        rel = folder.relative_to(results_dir).as_posix()
        name = folder.resolve().name if rel == "." else folder.name
        entries.append(Entry(run=run, folder=folder, rel=rel if rel != "." else name,
                             label=display_label(run.model) or name))
    return entries


def group_models(entries: list[Entry]) -> list[Model]:
    """The seeds of each suite label on each dataset and protocol as one model (seed order); other runs alone."""
    groups: dict[tuple, list[Entry]] = {}
    for entry in entries:
        model = entry.run.model
        if model.get("suite") and model.get("label"):
            protocol = tuple(repr(entry.run.protocol.get(k)) for k in COMPARED_PROTOCOL_KEYS)
            key = ("suite", str(model["suite"]), str(model["label"]), entry.run.dataset.get("fingerprint"), protocol)
        else:
            key = ("run", entry.rel)
        groups.setdefault(key, []).append(entry)
    models, used_slugs, used_labels = [], set(), set()
    for key, runs in groups.items():
        runs = sorted(runs, key=lambda e: (_seed_order(e.seed), e.rel))
        rel = _common_folder([e.rel for e in runs]) if key[0] == "suite" else runs[0].rel
        side_label = rel if rel not in used_labels else f"{rel} #{len(used_labels) + 1}"
        used_labels.add(side_label)
        info = runs[0].run.model
        track, trains = info.get("track"), info.get("trains")
        models.append(Model(
            runs=runs, rel=side_label, slug=_unique_slug(rel, used_slugs),
            label=str(info["label"]) if key[0] == "suite" else runs[0].label,
            suite=str(info["suite"]) if key[0] == "suite" else None,
            family=str(info.get("family") or "unknown"), track=track if track in TRACKS else "unknown",
            training="trained" if trains is True else "zero-shot" if trains is False else "unknown"))
    return models


def _seed_order(seed) -> tuple:
    return (0, seed, "") if isinstance(seed, int) else (1, 0, str(seed))


def _common_folder(rels: list[str]) -> str:
    """The deepest folder holding every run of a group ("suite/label" for suite/label/seed-N)."""
    parts = [rel.split("/") for rel in rels]
    common = []
    for names in zip(*parts):
        if len(set(names)) != 1:
            break
        common.append(names[0])
    if len(rels) == 1 and len(parts[0]) > 1 and re.fullmatch(r"seed-\d+", parts[0][-1]):
        common = parts[0][:-1]  # one seed: still name the label's folder, not the seed's
    return "/".join(common) or rels[0]


def _unique_slug(rel: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", rel.lower().replace("/", "--")).strip(".-") or "run"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


# ---------------------------------------------------------------- dataset names

def builtin_world(dataset_name: str) -> str | None:
    """The built-in world a dataset name stands for (synth-<world>-<key>, as the cache names them)."""
    match = _BUILTIN_NAME.fullmatch(dataset_name)
    return match["world"] if match and match["world"] in BUILTIN_WORLDS else None


def dataset_title(dataset_name: str) -> str:
    """'built-in world: control (quality hidden)', 'Marqo-GS-10M', or the recorded name itself."""
    world = builtin_world(dataset_name)
    if world is not None:
        return WORLD_TITLES.get(world, f"built-in world: {world}")
    return REGISTRY_TITLES.get(dataset_name, dataset_name)


def dataset_order(dataset_name: str) -> tuple:
    """Tables first of the registered (published) datasets, then the main built-in world, the other
    worlds (the control last), then anything else by name."""
    if dataset_name in REGISTRY_TITLES:
        return (0, list(REGISTRY_TITLES).index(dataset_name), dataset_name)
    world = builtin_world(dataset_name)
    if world is not None:
        rank = WORLD_ORDER.index(world) if world in WORLD_ORDER else len(WORLD_ORDER) - 0.5
        return (1, rank, dataset_name)
    return (2, 0, dataset_name)
