"""The GCL training loop: ``train(config, data, out)`` -> TrainResult, with checkpoints and exact resume.

A run: set up (data, seeded model, AdamW, cosine schedule, GradScaler for fp16, the state of a checkpoint
when resuming), then epochs of optimizer steps (:class:`trainers.step.Stepper`) with a checkpoint every
``checkpoint_every`` steps and at each epoch end, then the exported model and train.json.

torchrun/DDP (env RANK/WORLD_SIZE; gcl_eval.util.distributed starts the process group): the global batch
is sharded by rank and GCLLoss all-gathers the embeddings, so the gradients are those of the full batch;
rank 0 writes the files.

Determinism: the model is built from ``seed``; the training RNG streams from seed + rank; the data order
from (seed, epoch); the DataLoader has its own generator. A checkpoint holds all of that state, so a run
killed at any point and resumed from its last checkpoint ends with the same weights as an uninterrupted
run on the same machine (test: a real SIGKILL).
"""

from __future__ import annotations

import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gcl_eval.data.dataset import Dataset
from gcl_eval.util import distributed
from gcl_eval.util.errors import GclError
from gcl_eval.util.threads import budget_cpu_threads
from trainers import checkpoint as ckpt
from trainers.config import TrainConfig
from trainers.data import EpochBatches, PreparedBatches, TrainingPairs, make_loader, move_to, training_pairs
from trainers.optim import CosineSchedule, make_optimizer
from trainers.step import Stepper
from trainers.towers import Towers, build_towers

PROGRESS_EVERY_S = 0.5  # seconds between progress updates (each reads the loss off the device: a sync)


@dataclass
class TrainResult:
    """What a run did. ``final_loss``: mean loss of the last epoch's steps. ``samples_per_s``: training
    throughput of this call (global batch samples per second of the step loop, checkpoint writes
    included). ``steps``: optimizer steps of the whole run, resumed ones included; ``resumed_from_step``:
    where this call picked up (None: fresh).
    """

    final_loss: float
    steps: int
    epochs: int
    samples_per_s: float
    wall_s: float
    train_s: float
    out: str
    resumed_from_step: int | None = None
    already_finished: bool = False
    history: list[dict] = field(default_factory=list)  # per epoch: {"epoch", "loss", "lr"}

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class _TrainingData:
    """The dataset, its training pairs and this rank's batch order."""

    dataset: Dataset
    source: str  # the dataset's folder (or name), as train.json records it
    pairs: TrainingPairs
    fingerprint: str
    sampler: EpochBatches


@dataclass
class _Run:
    """A set-up run: everything the epochs, the checkpoints and the final export use."""

    config: TrainConfig
    out: Path
    device: torch.device
    data: _TrainingData
    towers: Towers
    model_info: dict
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    scaler: torch.amp.GradScaler | None
    stepper: Stepper
    loader: object  # PreparedBatches or a DataLoader

    @property
    def steps_per_epoch(self) -> int:
        return self.data.sampler.batches_per_epoch

    @property
    def epochs(self) -> int:
        """Epochs the run spans; the last one is partial under max_steps."""
        return -(-self.schedule.total_steps // self.steps_per_epoch)


def _start_position() -> dict:
    """A data position, as checkpoints store it: the next (epoch, batch), optimizer steps done, the summed
    loss of the current epoch so far, and one {"epoch", "loss", "lr"} per finished epoch."""
    return {"epoch": 0, "batch": 0, "step": 0, "epoch_loss_sum": 0.0, "history": []}


# ------------------------------------------------------------------------------------------ the run


def train(config: TrainConfig, data, out, *, resume: bool = False) -> TrainResult:
    """Train ``config`` on the in_domain pairs of ``data`` (a dataset folder or a Dataset) into ``out``.

    ``out`` must be new or empty unless ``resume``; with ``resume`` a checkpoint there is continued
    (refused when it is from another run), a finished run is returned as it is, and a folder without a
    checkpoint starts from scratch. Under torchrun every rank calls this; rank 0 writes the files.
    """
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = distributed.resolve_device(config.device)
    with distributed.process_group(device):
        return _train(config, data, Path(out), resume, device, started)


def _train(config: TrainConfig, data, out: Path, resume: bool, device: torch.device, started: float) -> TrainResult:
    state = _existing_run(out, resume)
    training_data = _training_data(config, data, device)
    if resume and ckpt.is_finished(out):
        return _finished_run(config, training_data, out, started)
    if state is not None:
        ckpt.check_same_run(config, state["recipe"], state["data_fingerprint"], training_data.fingerprint, out)
    run, position = _set_up(config, training_data, out, device, state)
    resumed_from = position["step"] if state is not None else None
    del state  # its tensors now live in the model and optimizer
    if distributed.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    progress = _Progress(run.schedule.total_steps, position["step"], config.batch_size,
                         enabled=distributed.is_main_process())
    with progress:
        for epoch in range(position["epoch"], run.epochs):
            position = _train_epoch(run, epoch, position, progress)
    result = TrainResult(
        final_loss=position["history"][-1]["loss"], steps=position["step"], epochs=run.epochs,
        samples_per_s=progress.samples_per_s(), wall_s=0.0, train_s=progress.elapsed(), out=str(out),
        resumed_from_step=resumed_from, history=position["history"],
    )
    _export(run, result, setup_s=progress.started - started, started=started)
    distributed.barrier()
    result.wall_s = time.perf_counter() - started
    return result


def _existing_run(out: Path, resume: bool) -> dict | None:
    """The checkpoint to resume (None: start fresh); refuses folders that hold something else."""
    if out.exists() and not out.is_dir():
        raise GclError(f"--out {out} is a file; expected a checkpoint folder")
    state = ckpt.read_checkpoint(out) if out.is_dir() else None
    if resume:
        return state
    if ckpt.is_finished(out):
        raise GclError(f"{out} already holds a finished training run; choose another --out")
    if state is not None:
        raise GclError(f"{out} holds the checkpoint of an interrupted run: pass --resume to continue it, "
                       "or choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise GclError(f"--out {out} is not empty; give a new or empty folder")
    return None


def _training_data(config: TrainConfig, data, device: torch.device) -> _TrainingData:
    """Read the dataset (unless given one), give torch the cores the data workers leave, build the pairs."""
    if isinstance(data, Dataset):
        dataset, source = data, str(data.root or data.name)
    else:
        from gcl_eval.data.io import read_dataset

        dataset, source = read_dataset(data), str(Path(data).resolve())
    budget_cpu_threads(config.data_workers(), device.type)
    pairs = training_pairs(dataset, config, source=source)
    fingerprint = dataset.fingerprint()
    sampler = EpochBatches(len(pairs), config.batch_size, config.seed, rank=distributed.rank(),
                           world_size=distributed.world_size())
    return _TrainingData(dataset, source, pairs, fingerprint, sampler)


def _finished_run(config: TrainConfig, data: _TrainingData, out: Path, started: float) -> TrainResult:
    """A resume of a finished run: the recorded result, once the run is known to be this one."""
    info = ckpt.read_train_info(out)
    recipe = TrainConfig.from_dict(info["config"]).recipe()
    ckpt.check_same_run(config, recipe, info["data"]["fingerprint"], data.fingerprint, out)
    result = TrainResult(**{**info["result"], "already_finished": True})
    result.wall_s = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------ set-up


def _set_up(config: TrainConfig, data: _TrainingData, out: Path, device: torch.device,
            state: dict | None) -> tuple[_Run, dict]:
    """The seeded model, optimizer, schedule and scaler (restored from ``state`` when resuming), the
    stepper and the loader; returns the run and the data position it starts at."""
    seed_everything(config.seed)
    towers, model_info = build_towers(config, device)
    towers.train()
    seed_everything(config.seed + distributed.rank())  # training RNG streams (dropout), one per rank, as open_clip
    total_steps = config.total_steps(data.sampler.batches_per_epoch)
    optimizer = make_optimizer(towers, config)
    schedule = CosineSchedule(config.lr, config.warmup, total_steps)
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    position = _start_position()
    if state is not None:
        position = _restore(state, config, towers, optimizer, schedule, scaler)
    ddp_model = None
    if distributed.is_distributed() and config.grad_cache_chunk is None:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(towers, device_ids=[device.index] if device.type == "cuda" else None)
    stepper = Stepper(towers, config, optimizer, scaler, ddp_model)
    loader = make_loader(data.pairs, towers, config, data.sampler)
    if isinstance(loader, PreparedBatches):  # no workers run during the steps: torch gets every core
        budget_cpu_threads(0, device.type)
    run = _Run(config, out, device, data, towers, model_info, optimizer, schedule, scaler, stepper, loader)
    return run, position


def _restore(state: dict, config: TrainConfig, towers: Towers, optimizer, schedule: CosineSchedule,
             scaler) -> dict:
    """Load a checkpoint's model, optimizer, schedule, scaler and RNG states; returns its data position."""
    towers.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    if len(rngs) == distributed.world_size():
        ckpt.set_rng_state(rngs[distributed.rank()])
    else:  # another world size: the run goes on, reproducibly, but not bit for bit
        seed_everything(config.seed + distributed.rank() + 1000003 * state["position"]["step"])
    return dict(state["position"])


# ------------------------------------------------------------------------------------------ epochs and steps


def _train_epoch(run: _Run, epoch: int, position: dict, progress: _Progress) -> dict:
    """The steps of ``epoch`` from ``position`` on, with their checkpoints; returns the position after it."""
    start = position["batch"] if epoch == position["epoch"] else 0
    loss_sum = torch.tensor(position["epoch_loss_sum"] if start else 0.0, dtype=torch.float64, device=run.device)
    epoch_steps = min(run.steps_per_epoch, run.schedule.total_steps - epoch * run.steps_per_epoch)  # less: max_steps
    run.data.sampler.set_position(epoch, start, epoch_steps)
    for b, batch in enumerate(run.loader, start=start):
        step = epoch * run.steps_per_epoch + b
        lr = run.schedule.apply(run.optimizer, step)
        loss_sum += distributed.mean_over_ranks(_step(run, batch)).double()
        done = step + 1
        progress.step_done(done, epoch, loss_sum, b + 1, last_of_epoch=b + 1 == epoch_steps)
        if b + 1 == epoch_steps:
            history = [*position["history"], {"epoch": epoch + 1, "loss": loss_sum.item() / epoch_steps, "lr": lr}]
            position = {"epoch": epoch + 1, "batch": 0, "step": done, "epoch_loss_sum": 0.0, "history": history}
            _save_checkpoint(run, position)
        elif run.config.checkpoint_every and done % run.config.checkpoint_every == 0:
            position = {**position, "epoch": epoch, "batch": b + 1, "step": done, "epoch_loss_sum": loss_sum.item()}
            _save_checkpoint(run, position)
    return position


def _step(run: _Run, batch) -> torch.Tensor:
    """One optimizer step on a loader batch; the loss of this rank (detached)."""
    query_batch, doc_batch, weights, doc_masks = batch
    device = run.device
    return run.stepper(move_to(query_batch, device), move_to(doc_batch, device), weights.to(device),
                       None if doc_masks is None else doc_masks.to(device))


# ------------------------------------------------------------------------------------------ files


def _save_checkpoint(run: _Run, position: dict) -> None:
    """Every rank's RNG state, and rank 0 writes checkpoint.pt; all ranks wait for the write."""
    rngs = distributed.gather_objects(ckpt.rng_state())
    if distributed.is_main_process():
        ckpt.save_checkpoint(run.out, {
            "model": run.towers.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "schedule": run.schedule.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "rng": rngs,
            "position": position,
            "recipe": run.config.recipe(),
            "config": run.config.to_dict(),
            "data_fingerprint": run.data.fingerprint,
        })
    distributed.barrier()


def _export(run: _Run, result: TrainResult, *, setup_s: float, started: float) -> None:
    """Rank 0: model.pt, train.json (config, model, data, environment, result, timings) and DONE."""
    if not distributed.is_main_process():
        return
    data, config = run.data, run.config
    info = {
        "tool": "gcl-eval",
        "version": _version(),
        "config": config.to_dict(),
        "model": run.model_info,
        "data": {"path": data.source, "name": data.dataset.name, "fingerprint": data.fingerprint,
                 "split": "in_domain", "pairs": len(data.pairs), "steps_per_epoch": run.steps_per_epoch},
        "environment": {**_environment(run.device, distributed.world_size()), "data_workers": config.data_workers(),
                        "data_path": "prepared" if isinstance(run.loader, PreparedBatches) else "streaming"},
    }
    result.wall_s = time.perf_counter() - started
    info["result"] = result.to_dict()
    info["timings"] = {"setup_s": setup_s, "train_s": result.train_s, "wall_s": result.wall_s}
    ckpt.export_final(run.out, run.towers.export_state_dict(), info)


def _version() -> str:
    from gcl_eval import __version__

    return __version__


def _environment(device: torch.device, world: int) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "world_size": world, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    for module in ("open_clip", "transformers"):
        try:
            env[module] = __import__(module).__version__
        except Exception:  # not installed, or not importable here
            pass
    return env


# ------------------------------------------------------------------------------------------ progress


class _Progress:
    """The steps this call takes and their throughput; a rich bar on stderr (terminals only, rank 0):
    steps, loss (epoch mean so far), samples/s."""

    def __init__(self, total: int, completed: int, batch_size: int, enabled: bool):
        from gcl_eval.util.console import progress_enabled

        self.enabled = enabled and progress_enabled()
        self.total, self.completed, self.batch_size = total, completed, batch_size
        self.bar = None
        self.steps = 0  # taken by this call
        self.started = self.last = time.perf_counter()
        self.ended: float | None = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(
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
        """Count a step; redraw the bar (epoch mean loss: loss_sum / batches) every PROGRESS_EVERY_S and at
        epoch ends. Only then is the loss read off the device, which waits for the step to finish."""
        self.steps += 1
        if self.bar is None or not (last_of_epoch or time.perf_counter() - self.last >= PROGRESS_EVERY_S):
            return
        self.last = time.perf_counter()
        sps = self.steps * self.batch_size / max(self.last - self.started, 1e-9)
        self.bar.update(self.task, completed=completed, loss=loss_sum.item() / batches, sps=sps, epoch=epoch + 1)

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
