"""Watching a run: the metrics log, evaluations during training, snapshots, the best checkpoint, reporters
and progress (docs/training.md, "Watching a run").

- ``metrics.jsonl`` in the run's folder: one JSON record a line, appended and flushed as it is written.
  ``{"kind": "train", ...}`` every ``log_every`` optimizer steps (loss of that step, epoch mean so far,
  learning rate, samples/s, gradient norm, logit scale, the batch's weight statistics) and
  ``{"kind": "eval", ...}`` for every evaluation. A resumed run first drops the records of steps after its
  checkpoint (they are redone, with the same values), so no step is logged twice.
- evaluations (``eval_every`` steps and each epoch end) call an injected function with the live model;
  the training loop does not know how a model is evaluated (the composition layer supplies it). The
  function runs with the training RNG states, torch's thread count and the train mode restored
  afterwards, so a run that evaluates ends with the same weights as one that does not.
- ``epoch-K/`` (``save_every_epoch``) and ``best/`` (``keep_best``): exports like the final one (model.pt,
  train.json, DONE), each written as a whole folder (gcl_eval.util.atomic.atomic_folder).
- reporters: TensorBoard event files (``OUT/tensorboard``) and W&B in offline mode (``OUT/wandb``), both
  optional packages: an absent one is skipped with one warning line.
- progress on stderr (main process only): the rich bar on a terminal; otherwise a plain line every
  ``progress_every`` seconds and at the end, with no terminal escape codes. GCL_EVAL_PROGRESS=0 turns
  both off, =1 forces the bar.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from gcl_eval.util.atomic import atomic_write_text
from gcl_eval.util.errors import GclError
from trainers.config import TrainConfig

METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
BAR_EVERY_S = 0.5  # seconds between redraws of the terminal bar (each reads the loss off the device: a sync)

# evaluate(model, step, epoch) -> {split: {measure: value}}; ``model`` is a trainers.checkpoint.TrainedModel of
# the live weights. Called on every process under torchrun (the evaluation may shard its encoding).
Evaluate = Callable[[object, int, int], Mapping[str, Mapping[str, float]]]


def snapshot_dir(out, epoch: int) -> Path:
    """The folder of the export after epoch ``epoch`` (1-based)."""
    return Path(out) / f"epoch-{epoch}"


def warn(message: str) -> None:
    """One warning line on stderr."""
    sys.stderr.write(f"gcl-eval: warning: {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------ metrics.jsonl


def read_metrics(out) -> list[dict]:
    """The records of ``OUT/metrics.jsonl`` (a line cut short by a kill is left out)."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class MetricsLog:
    """Appends records to OUT/metrics.jsonl, one flushed line each. Opening it for a run that starts at
    ``start_step`` keeps the records of steps up to there and drops the rest (a resumed run redoes them)."""

    def __init__(self, out: Path, start_step: int):
        self.path = Path(out) / METRICS_FILE
        if self.path.exists():
            kept = [r for r in read_metrics(out) if r["step"] <= start_step]
            atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record, sort_keys=True) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


# ------------------------------------------------------------------------------------------ reporters


class TensorBoardReporter:
    """Scalars into TensorBoard event files under OUT/tensorboard (torch.utils.tensorboard)."""

    def __init__(self, out: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run hides the events its lost steps wrote after the checkpoint
        self.writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbReporter:
    """Scalars into a Weights & Biases run in offline mode under OUT/wandb (``wandb sync`` uploads it)."""

    def __init__(self, out: Path, config: TrainConfig):
        import wandb

        # console="off": W&B leaves stdout and stderr alone (the progress lines, --json output)
        self.run = wandb.init(mode="offline", dir=str(out), project="gcl-eval", name=out.name,
                              config=config.to_dict(), settings=wandb.Settings(console="off"))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        self.run.finish()


_REPORTER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def open_reporters(config: TrainConfig, out: Path, start_step: int) -> list:
    """The reporters ``config.report_to`` names whose package is installed; one warning line per absent one."""
    import importlib.util

    reporters = []
    for name in config.report_to:
        package = _REPORTER_PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            warn(f"--report-to {name}: the {package} package is not installed (pip install 'gcl-eval[{name}]'); "
                 "not reporting there")
            continue
        reporters.append(TensorBoardReporter(out, start_step) if name == "tensorboard" else WandbReporter(out, config))
    return reporters


def scalars_of(record: dict) -> dict[str, float]:
    """A record as reporter scalars: "train/loss", ..., "eval/<split>/<measure>"."""
    if record["kind"] == "eval":
        return {f"eval/{split}/{measure}": value for split, values in record["splits"].items()
                for measure, value in values.items() if isinstance(value, (int, float))}
    skip = {"kind", "step", "time"}
    return {f"train/{k}": v for k, v in record.items() if k not in skip and isinstance(v, (int, float))}


# ------------------------------------------------------------------------------------------ best checkpoint


@dataclass(frozen=True)
class BestMeasure:
    """``MEASURE`` (the mean over the evaluated splits) or ``MEASURE:SPLIT``; higher is better."""

    measure: str
    split: str | None

    @classmethod
    def parse(cls, text: str) -> "BestMeasure":
        measure, _, split = text.partition(":")
        return cls(measure.strip(), split.strip() or None)

    def value(self, splits: Mapping[str, Mapping[str, float]]) -> float:
        chosen = [self.split] if self.split else list(splits)
        missing = [s for s in chosen if s not in splits or self.measure not in splits[s]]
        if missing:
            raise GclError(f"--keep-best {self}: the evaluation has no {self.measure} on split {missing[0]}")
        return sum(float(splits[s][self.measure]) for s in chosen) / len(chosen)

    def __str__(self) -> str:
        return self.measure + (f":{self.split}" if self.split else "")


def best_so_far(records: list[dict], best: BestMeasure) -> tuple[float, int] | None:
    """(value, step) of the best evaluation among logged records (the earliest on ties), or None."""
    found = None
    for record in records:
        if record.get("kind") != "eval":
            continue
        try:
            value = best.value(record["splits"])
        except GclError:
            continue
        if found is None or value > found[0]:
            found = (value, record["step"])
    return found


# ------------------------------------------------------------------------------------------ the monitor


@dataclass
class StepDone:
    """One optimizer step as the monitor sees it. ``epoch`` is 1-based; ``epoch_loss_sum`` / ``batches``
    is the epoch's mean loss so far; tensors stay on the device until a record needs them."""

    step: int
    epoch: int
    epoch_end: bool
    loss: torch.Tensor
    epoch_loss_sum: torch.Tensor
    batches: int
    lr: float
    weights: torch.Tensor
    grad_norm: torch.Tensor | None


class Monitor:
    """Records, evaluations, snapshots and the best export of one training call.

    ``live_model(step, epoch)``: the model as it is now, for ``evaluate``; ``export(folder, extra)``: write
    an export (model.pt, train.json with ``extra``, DONE) into ``folder``. Only the main process writes;
    every process evaluates (the evaluation may shard its work).
    """

    def __init__(self, config: TrainConfig, out: Path, start_step: int, *, towers, evaluate: Evaluate | None,
                 live_model: Callable, export: Callable, main: bool):
        if config.eval_every and evaluate is None:
            raise GclError("--eval-every needs an evaluation: train through gcl-eval train, or pass evaluate=")
        self.config, self.out, self.towers, self.evaluate = config, out, towers, evaluate
        self.live_model, self.export, self.main = live_model, export, main
        self.best = BestMeasure.parse(config.keep_best) if config.keep_best else None
        self.best_value: tuple[float, int] | None = None
        self.log = None
        self.reporters: list = []
        if main and (config.log_every or config.eval_every):
            out.mkdir(parents=True, exist_ok=True)
            self.log = MetricsLog(out, start_step)
            if self.best is not None:
                self.best_value = best_so_far(read_metrics(out), self.best)
            self.reporters = open_reporters(config, out, start_step)
        self.window_start = (start_step, time.perf_counter())

    def measures(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1-based) gets a train record (the stepper then measures it)."""
        return bool(self.config.log_every) and step % self.config.log_every == 0

    def step_done(self, done: StepDone) -> None:
        """The record, evaluation, snapshot and best export due after this step (before its checkpoint,
        so that a run killed in between redoes them)."""
        if self.main and self.measures(done.step):
            self._record(self._train_record(done))
        evaluation = None
        if self.config.eval_every and (done.epoch_end or done.step % self.config.eval_every == 0):
            evaluation = self._evaluate(done)
        if self.config.save_every_epoch and done.epoch_end and self.main:
            self.export(snapshot_dir(self.out, done.epoch), self._snapshot(done, evaluation))
        if evaluation is not None and self.best is not None and self.main:
            value = self.best.value(evaluation["splits"])
            if self.best_value is None or value > self.best_value[0]:
                self.best_value = (value, done.step)
                self.export(self.out / BEST_DIR, self._snapshot(done, evaluation))

    def _train_record(self, done: StepDone) -> dict:
        start_step, start_time = self.window_start
        now = time.perf_counter()
        self.window_start = (done.step, now)
        batch = self.config.batch_size
        scale, _ = self.towers.logit_params()
        weights = done.weights.double()
        norm = done.grad_norm if done.grad_norm is not None else torch.tensor(float("nan"))
        values = [done.loss, done.epoch_loss_sum / done.batches, norm, scale, weights.mean(), weights.min(),
                  weights.max()]
        device = done.loss.device  # one copy off the device for all of them
        loss, epoch_loss, grad_norm, scale, w_mean, w_min, w_max = torch.stack(
            [v.detach().to(device, torch.float64).reshape(()) for v in values]).tolist()
        return {
            "kind": "train", "step": done.step, "epoch": done.epoch, "time": round(time.time(), 3),
            "loss": loss, "epoch_loss": epoch_loss, "lr": done.lr,
            "samples_per_s": round((done.step - start_step) * batch / max(now - start_time, 1e-9), 3),
            "grad_norm": None if done.grad_norm is None else grad_norm, "logit_scale": scale,
            "weight_mean": w_mean, "weight_min": w_min, "weight_max": w_max,
        }

    def _evaluate(self, done: StepDone) -> dict:
        """Evaluate the live model with the training state (RNGs, threads, train mode) put back after."""
        from trainers.checkpoint import rng_state, set_rng_state

        state, threads, started = rng_state(), torch.get_num_threads(), time.perf_counter()
        try:
            with torch.no_grad():
                splits = self.evaluate(self.live_model(done.step, done.epoch), done.step, done.epoch)
        finally:
            set_rng_state(state)
            torch.set_num_threads(threads)
            self.towers.train()
        record = {"kind": "eval", "step": done.step, "epoch": done.epoch, "time": round(time.time(), 3),
                  "eval_s": round(time.perf_counter() - started, 3),
                  "splits": {s: {m: float(v) for m, v in values.items()} for s, values in splits.items()}}
        if self.main:
            self._record(record)
        self.window_start = (self.window_start[0], self.window_start[1] + time.perf_counter() - started)
        return record

    def _snapshot(self, done: StepDone, evaluation: dict | None) -> dict:
        return {"snapshot": {"step": done.step, "epoch": done.epoch,
                             "evaluation": evaluation["splits"] if evaluation else None,
                             "keep_best": str(self.best) if self.best else None}}

    def _record(self, record: dict) -> None:
        self.log.write(record)
        values = scalars_of(record)
        for reporter in self.reporters:
            reporter.scalars(record["step"], values)

    def best_record(self) -> dict | None:
        """{"measure", "value", "step"} of the best export, for the run's result (None: not kept)."""
        if self.best is None or self.best_value is None:
            return None
        return {"measure": str(self.best), "value": self.best_value[0], "step": self.best_value[1],
                "folder": BEST_DIR}

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        for reporter in self.reporters:
            reporter.close()


# ------------------------------------------------------------------------------------------ progress


def _progress_mode() -> str | None:
    """"bar" on a terminal (or GCL_EVAL_PROGRESS=1), "lines" when stderr is not one, None when turned off."""
    from gcl_eval.util.console import progress_enabled

    if progress_enabled():
        return "bar"
    return None if os.environ.get("GCL_EVAL_PROGRESS") is not None else "lines"


class Progress:
    """The steps this call takes and their throughput, shown on stderr (main process only): a rich bar
    (steps, loss: the epoch mean so far, samples/s) on a terminal, plain lines otherwise."""

    def __init__(self, total: int, completed: int, batch_size: int, *, enabled: bool, every_s: float):
        self.mode = _progress_mode() if enabled else None
        self.total, self.completed, self.batch_size, self.every_s = total, completed, batch_size, every_s
        self.bar = None
        self.steps = 0  # taken by this call
        self.started = self.last = time.perf_counter()
        self.ended: float | None = None

    def __enter__(self):
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Bar(
                TextColumn("train epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[sps]:.0f} samples/s"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.total, completed=self.completed, loss=float("nan"),
                                          sps=0.0, epoch=1)
        return self

    def step_done(self, completed: int, epoch: int, loss_sum: torch.Tensor, batches: int, *,
                  last_of_epoch: bool) -> None:
        """Count a step; show it every BAR_EVERY_S (bar) or ``every_s`` (lines), at epoch ends (bar) and
        at the last step (lines). Only then is the loss read off the device, which waits for the step."""
        self.steps += 1
        if self.mode is None:
            return
        now = time.perf_counter()
        if self.mode == "bar":
            if not (last_of_epoch or now - self.last >= BAR_EVERY_S):
                return
            self.last = now
            self.bar.update(self.task, completed=completed, loss=loss_sum.item() / batches,
                            sps=self._sps(now), epoch=epoch + 1)
        elif completed == self.total or now - self.last >= self.every_s:
            self.last = now
            self._line(completed, epoch + 1, loss_sum.item() / batches, now)

    def _sps(self, now: float) -> float:
        return self.steps * self.batch_size / max(now - self.started, 1e-9)

    def _line(self, completed: int, epoch: int, loss: float, now: float) -> None:
        steps_per_s = self.steps / max(now - self.started, 1e-9)
        eta = (self.total - completed) / steps_per_s if steps_per_s > 0 else math.inf
        sys.stderr.write(f"train step {completed}/{self.total} ({100 * completed / self.total:.0f}%) epoch {epoch}, "
                         f"loss {loss:.4f}, {self._sps(now):.0f} samples/s, ETA {_duration(eta)}\n")
        sys.stderr.flush()

    def elapsed(self) -> float:
        """Seconds of the step loop (until the block ended)."""
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def samples_per_s(self) -> float:
        return self.steps * self.batch_size / self.elapsed() if self.steps else 0.0

    def __exit__(self, *exc):
        self.ended = time.perf_counter()
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
