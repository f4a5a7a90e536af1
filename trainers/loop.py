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

Watching (trainers.monitor): the metrics log, evaluations through an injected ``evaluate`` function,
epoch snapshots, the best export, reporters and progress lines.
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
from trainers.monitor import Evaluate, Monitor, Progress, StepDone
from trainers.optim import CosineSchedule, make_optimizer
from trainers.step import Stepper
from trainers.towers import OpenClipTowers, Towers, build_towers


@dataclass
class TrainResult:
    """What a run did. ``final_loss``: mean loss of the last epoch's steps. ``samples_per_s``: training
    throughput of this call (global batch samples per second of the step loop, checkpoint writes,
    evaluations and snapshots included). ``steps``: optimizer steps of the whole run, resumed ones included; ``resumed_from_step``:
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
    best: dict | None = None  # keep_best: {"measure", "value", "step", "folder"} of the best export

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
    monitor: Monitor | None = None

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


def train(config: TrainConfig, data, out, *, resume: bool = False, evaluate: Evaluate | None = None) -> TrainResult:
    """Train ``config`` on the in_domain pairs of ``data`` (a dataset folder or a Dataset) into ``out``.

    ``out`` must be new or empty unless ``resume``; with ``resume`` a checkpoint there is continued
    (refused when it is from another run), a finished run is returned as it is, and a folder without a
    checkpoint starts from scratch. Under torchrun every rank calls this; rank 0 writes the files.
    ``evaluate``: how ``config.eval_every`` evaluates the live model (trainers.monitor.Evaluate).
    """
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = distributed.resolve_device(config.device)
    with distributed.process_group(device):
        return _train(config, data, Path(out), resume, device, started, evaluate)


def _train(config: TrainConfig, data, out: Path, resume: bool, device: torch.device, started: float,
           evaluate: Evaluate | None) -> TrainResult:
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
    run.monitor = _monitor(run, position["step"], evaluate)
    progress = Progress(run.schedule.total_steps, position["step"], config.batch_size,
                        enabled=distributed.is_main_process(), every_s=config.progress_every)
    try:
        with progress:
            for epoch in range(position["epoch"], run.epochs):
                position = _train_epoch(run, epoch, position, progress)
    finally:
        run.monitor.close()
    result = TrainResult(
        final_loss=position["history"][-1]["loss"], steps=position["step"], epochs=run.epochs,
        samples_per_s=progress.samples_per_s(), wall_s=0.0, train_s=progress.elapsed(), out=str(out),
        resumed_from_step=resumed_from, history=position["history"], best=run.monitor.best_record(),
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


def _train_epoch(run: _Run, epoch: int, position: dict, progress: Progress) -> dict:
    """The steps of ``epoch`` from ``position`` on, with their checkpoints; returns the position after it."""
    start = position["batch"] if epoch == position["epoch"] else 0
    loss_sum = torch.tensor(position["epoch_loss_sum"] if start else 0.0, dtype=torch.float64, device=run.device)
    epoch_steps = min(run.steps_per_epoch, run.schedule.total_steps - epoch * run.steps_per_epoch)  # less: max_steps
    run.data.sampler.set_position(epoch, start, epoch_steps)
    for b, batch in enumerate(run.loader, start=start):
        step = epoch * run.steps_per_epoch + b
        lr = run.schedule.apply(run.optimizer, step)
        done = step + 1
        loss = distributed.mean_over_ranks(_step(run, batch, measure=run.monitor.measures(done))).double()
        loss_sum += loss
        progress.step_done(done, epoch, loss_sum, b + 1, last_of_epoch=b + 1 == epoch_steps)
        run.monitor.step_done(StepDone(done, epoch + 1, b + 1 == epoch_steps, loss, loss_sum, b + 1, lr, batch[2],
                                       run.stepper.grad_norm))
        if b + 1 == epoch_steps:
            history = [*position["history"], {"epoch": epoch + 1, "loss": loss_sum.item() / epoch_steps, "lr": lr}]
            position = {"epoch": epoch + 1, "batch": 0, "step": done, "epoch_loss_sum": 0.0, "history": history}
            _save_checkpoint(run, position)
        elif run.config.checkpoint_every and done % run.config.checkpoint_every == 0:
            position = {**position, "epoch": epoch, "batch": b + 1, "step": done, "epoch_loss_sum": loss_sum.item()}
            _save_checkpoint(run, position)
    return position


def _step(run: _Run, batch, *, measure: bool) -> torch.Tensor:
    """One optimizer step on a loader batch; the loss of this rank (detached). ``measure``: keep the
    gradient norm for the metrics log."""
    query_batch, doc_batch, weights, doc_masks = batch
    device = run.device
    return run.stepper(move_to(query_batch, device), move_to(doc_batch, device), weights.to(device),
                       None if doc_masks is None else doc_masks.to(device), measure=measure)


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
    info = _train_info(run)
    result.wall_s = time.perf_counter() - started
    info["result"] = result.to_dict()
    info["timings"] = {"setup_s": setup_s, "train_s": result.train_s, "wall_s": result.wall_s}
    ckpt.export_final(run.out, run.towers.export_state_dict(), info, run.towers.fusion)


def _train_info(run: _Run) -> dict:
    """train.json's config, model, data and environment sections."""
    data, config = run.data, run.config
    return {
        "tool": "gcl-eval",
        "version": _version(),
        "config": config.to_dict(),
        "model": run.model_info,
        "data": {"path": data.source, "name": data.dataset.name, "fingerprint": data.fingerprint,
                 "split": "in_domain", "pairs": len(data.pairs), "steps_per_epoch": run.steps_per_epoch},
        "environment": {**_environment(run.device, distributed.world_size()), "data_workers": config.data_workers(),
                        "data_path": "prepared" if isinstance(run.loader, PreparedBatches) else "streaming"},
    }


# ------------------------------------------------------------------------------------------ watching


def _monitor(run: _Run, start_step: int, evaluate: Evaluate | None) -> Monitor:
    """The run's monitor, with the live model and the snapshot export it needs from the loop."""
    return Monitor(run.config, run.out, start_step, towers=run.towers, evaluate=evaluate,
                   live_model=lambda step, epoch: _live_model(run, step, epoch),
                   export=lambda folder, extra: _export_snapshot(run, folder, extra),
                   main=distributed.is_main_process())


def _live_model(run: _Run, step: int, epoch: int) -> ckpt.TrainedModel:
    """The weights being trained, as a TrainedModel an evaluation can encode with (no copy, no file)."""
    label = f"{run.out} at step {step}"
    if isinstance(run.towers, OpenClipTowers):
        from gcl_eval.retrieval.models import LoadedModel

        towers = run.towers
        model = LoadedModel(towers.model, towers.preprocess_train, towers.preprocess_val, towers.tokenizer,
                            run.config.arch, label, f"step-{step}")
    else:
        model = run.towers.encoder
    info = {**_train_info(run), "snapshot": {"step": step, "epoch": epoch}}
    return ckpt.TrainedModel(run.model_info["kind"], model, info, run.out, f"step-{step}", run.towers.fusion)


def _export_snapshot(run: _Run, folder: Path, extra: dict) -> None:
    """An export of the current weights into ``folder`` (epoch-K/, best/), replacing it as a whole."""
    from gcl_eval.util.atomic import atomic_folder

    with atomic_folder(folder) as tmp:
        ckpt.export_final(tmp, run.towers.export_state_dict(), {**_train_info(run), **extra}, run.towers.fusion)


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
