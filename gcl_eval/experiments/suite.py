"""Suites: named sets of preset runs (with overrides) over seeds, for the paper's tables in miniature.

A suite is a TOML file (package data under gcl_eval/experiments/suites/, or a user's path) with a built-in world,
a list of runs and the comparisons to report:

    description = "..."
    paper = "Table 1"              # what it reproduces (free text)
    world = "default"              # a built-in synthetic world (gcl_eval.data.synth.world.BUILTIN_WORLDS)

    [[runs]]
    label = "minilm-ce"            # unique in the suite; the run folder's name
    preset = "minilm-ce"
    train = { max_steps = 150 }    # optional: [train] keys of the preset replaced (trained presets only)
    eval = { precision = "bf16" }  # optional: [eval] keys replaced

    [[comparisons]]
    run = "minilm-gcl"
    baseline = "minilm-ce"
    targets = true                 # check the GCL-vs-CLIP targets of docs/reproducing.md ("gcl");
                                   # "above": the run's nDCG@10 is higher on every split

A run of a preset that trains is repeated once per seed (training seeds 0..N-1; the evaluation's query
sample is the same for every seed, so per-query scores pair across seeds and models); a zero-shot run
is deterministic and runs once. This module only reads definitions and expands them into run specs;
running them is gcl_eval.experiments.suite_run, summarising them gcl_eval.report.suite_summary.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from gcl_eval.util.errors import GclError
from gcl_eval.experiments.preset import Preset, preset_with_overrides, read_named_toml

SUITE_DIR = Path(__file__).parent / "suites"
TOP_KEYS = {"description", "paper", "world", "runs", "comparisons"}
RUN_KEYS = {"label", "preset", "train", "eval"}
COMPARISON_KEYS = {"run", "baseline", "targets"}
TARGET_KINDS = {True: "gcl", False: "", "gcl": "gcl", "above": "above"}  # a comparison's targets value -> kind
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SuiteRun:
    label: str
    preset: Preset
    train: dict
    evaluation: dict


@dataclass(frozen=True)
class Comparison:
    run: str
    baseline: str
    targets: str = ""  # "", "gcl" or "above" (gcl_eval.report.suite_summary.TARGET_CHECKS)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    paper: str
    world: str
    runs: tuple[SuiteRun, ...]
    comparisons: tuple[Comparison, ...]
    path: Path

    def run(self, label: str) -> SuiteRun:
        return next(r for r in self.runs if r.label == label)


@dataclass(frozen=True)
class RunSpec:
    """One run folder of a suite: a suite run at one seed (None: not trained, runs once)."""

    suite: str
    label: str
    preset: Preset
    seed: int | None
    world: str
    folder: str  # relative to the suite's output folder
    key: str  # identifies what the folder must hold: a finished folder with this key is reused
    data: str | None = None  # a dataset folder replacing the built-in world

    @property
    def title(self) -> str:
        return self.label if self.seed is None else f"{self.label} seed {self.seed}"


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.toml"))


def packaged_suites() -> list[Suite]:
    return [load_suite(name) for name in suite_names()]


def load_suite(name_or_path: str | Path) -> Suite:
    """A packaged suite by name, or a TOML file by path; a bad one is a one-line GclError."""
    path, data = read_named_toml("suite", name_or_path, SUITE_DIR, suite_names)
    return _parse(path.stem, data, path)


def _parse(name: str, data: dict, path: Path) -> Suite:
    from gcl_eval.data.synth.world import BUILTIN_WORLDS as WORLDS

    where = f"suite {path}"
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise GclError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(TOP_KEYS))}")
    world = data.get("world", "default")
    if world not in WORLDS:
        raise GclError(f"{where}: world {world!r} is not one of {', '.join(WORLDS)}")
    raw_runs = data.get("runs") or []
    if not isinstance(raw_runs, list) or not raw_runs:
        raise GclError(f"{where}: needs at least one [[runs]] entry")
    runs, labels = [], set()
    for i, raw in enumerate(raw_runs):
        if not isinstance(raw, dict):
            raise GclError(f"{where}: runs[{i}] must be a table")
        extra = sorted(set(raw) - RUN_KEYS)
        if extra:
            raise GclError(f"{where}: runs[{i}] has unknown key(s) {', '.join(extra)}; expected "
                           f"{', '.join(sorted(RUN_KEYS))}")
        label = str(raw.get("label") or raw.get("preset") or "")
        if not raw.get("preset"):
            raise GclError(f"{where}: runs[{i}] needs a preset")
        if not LABEL.match(label):
            raise GclError(f"{where}: runs[{i}] label {label!r} must be letters, digits, '.', '_' or '-'")
        if label in labels:
            raise GclError(f"{where}: two runs are labelled {label!r}")
        labels.add(label)
        train, evaluation = raw.get("train") or {}, raw.get("eval") or {}
        if not isinstance(train, dict) or not isinstance(evaluation, dict):
            raise GclError(f"{where}: runs[{i}] train and eval must be tables, e.g. train = {{ max_steps = 150 }}")
        train, evaluation = dict(train), dict(evaluation)
        preset = preset_with_overrides(raw["preset"], train=train, evaluation=evaluation,
                                       where=f"{where}, run {label}: ")
        runs.append(SuiteRun(label, preset, train, evaluation))
    comparisons = []
    for i, raw in enumerate(data.get("comparisons") or []):
        extra = sorted(set(raw) - COMPARISON_KEYS) if isinstance(raw, dict) else ["(not a table)"]
        if extra:
            raise GclError(f"{where}: comparisons[{i}] has unknown key(s) {', '.join(extra)}")
        for key in ("run", "baseline"):
            if not isinstance(raw.get(key), str) or raw.get(key) not in labels:
                raise GclError(f"{where}: comparisons[{i}].{key} {raw.get(key)!r} is not a run label of the suite")
        targets = raw.get("targets", False)
        if isinstance(targets, (int, float)) and not isinstance(targets, bool) or targets not in TARGET_KINDS:
            raise GclError(f"{where}: comparisons[{i}].targets {targets!r} is not true, false, \"gcl\" or \"above\"")
        comparisons.append(Comparison(raw["run"], raw["baseline"], TARGET_KINDS[targets]))
    return Suite(name=name, description=str(data.get("description", "")), paper=str(data.get("paper", "")),
                 world=world, runs=tuple(runs), comparisons=tuple(comparisons), path=path)


def expand(suite: Suite, seeds: int, protocol: dict, *, data: str | None = None) -> list[RunSpec]:
    """The suite's run folders in order: each trained run once per seed 0..seeds-1, others once.
    ``data``: a dataset folder to use instead of the suite's built-in world."""
    if seeds < 1:
        raise GclError(f"--seeds must be at least 1 (got {seeds})")
    specs = []
    for run in suite.runs:
        for seed in (range(seeds) if run.preset.trains else [None]):
            identity = {"preset": run.preset.name, "train": run.train, "eval": run.evaluation, "seed": seed,
                        "world": suite.world, "protocol": protocol}
            if data is not None:
                identity.update(world=None, data=data)
            key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
            folder = run.label if seed is None else f"{run.label}/seed-{seed}"
            specs.append(RunSpec(suite.name, run.label, run.preset, seed, suite.world, folder, key, data))
    return specs
