"""The GCL training loop: ``train(config, data, out)`` -> TrainResult, with checkpoints and exact resume.

What one step does (open_clip's recipe, SPEC section 6): set the learning rate from a cosine schedule
with linear warm-up, encode the batch's query and document fields, compute the weighted GCL loss
(:class:`trainers.losses.GCLLoss`: single-field, or multi-field with the mean-embedding and pairwise
terms), back-propagate (through a GradScaler for fp16), optionally clip the gradient norm, take an AdamW
step (no weight decay on norms, biases and the logit scale), clamp the logit scale at 100.

Variants, each equal to the plain path (tests): bf16/fp16 autocast; the gradient cache
(``grad_cache_chunk``: the towers run chunk by chunk, the loss sees the full batch); torchrun/DDP
(env RANK/WORLD_SIZE: gloo on CPU, NCCL on GPU; the global batch is sharded by rank and GCLLoss
all-gathers the embeddings, so the gradients are those of the full batch).

Determinism: the model is built from ``seed``; the training RNG streams from seed + rank; the data order
from (seed, epoch); the DataLoader has its own generator. A checkpoint holds all of that state, so a run
killed at any point and resumed from its last checkpoint ends with the same weights as an uninterrupted
run on the same machine (test: a real SIGKILL).
"""

from __future__ import annotations

import math
import os
import platform
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gcl_eval.util.errors import GclError
from trainers import checkpoint as ckpt
from gcl_eval.util import distributed
from trainers.config import TrainConfig
from trainers.data import EpochBatches, PreparedBatches, make_loader, move_to, training_pairs
from trainers.gradcache import GradCache
from trainers.losses import GCLLoss
from trainers.towers import Towers, build_towers

KILL_HOOK_ENV = "GCL_EVAL_TEST_KILL_AFTER_STEP"  # tests: SIGKILL this process right after step k
PROGRESS_EVERY_S = 0.5  # seconds between progress updates (each reads the loss off the device: a sync)


@dataclass
class TrainResult:
    """What a run did. ``final_loss``: mean loss of the last epoch's steps. ``samples_per_s``: training
    throughput of this call (global batch samples per second of the step loop, checkpoint writes included). ``steps``: optimizer steps
    of the whole run, resumed ones included; ``resumed_from_step``: where this call picked up (None: fresh).
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


# ------------------------------------------------------------------------------------------ optimizer


def exclude_from_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """open_clip's rule: gains, biases, norms and the logit scale get no weight decay."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups, as open_clip builds them: [no decay, decay]; frozen parameters left out."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if exclude_from_weight_decay(n, p)]
    decay = [p for n, p in named if not exclude_from_weight_decay(n, p)]
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. The fused kernel where torch has one for the parameters' device:
    on this CPU it steps tiny-clip's 3.3M parameters in 4 ms instead of 32 ms (the default multi-tensor
    path), which was a third of a training step. Same update rule; rounding may differ in the last bit."""
    groups = param_groups(model, config.weight_decay)
    device = next((p.device for g in groups for p in g["params"]), torch.device("cpu"))
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=fused or None)


class CosineSchedule:
    """open_clip's cosine_lr: lr = base (step + 1) / warmup during warm-up, then
    0.5 (1 + cos(pi e / es)) base with e = step - warmup, es = total - warmup. Stateless in the step."""

    def __init__(self, base_lr: float, warmup: int, total_steps: int):
        self.base_lr, self.warmup, self.total_steps = float(base_lr), int(warmup), int(total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        e = step - self.warmup
        es = self.total_steps - self.warmup
        return 0.5 * (1 + math.cos(math.pi * e / es)) * self.base_lr

    def apply(self, optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "warmup": self.warmup, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        if state != self.state_dict():
            raise GclError(f"the checkpoint's learning-rate schedule {state} differs from this run's {self.state_dict()}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------ one step


class Stepper:
    """One optimizer step on one batch: plain (optionally through DDP) or with the gradient cache."""

    def __init__(self, towers: Towers, config: TrainConfig, optimizer, scaler, ddp_model=None):
        self.towers, self.config, self.optimizer, self.scaler = towers, config, optimizer, scaler
        self.model = ddp_model if ddp_model is not None else towers
        q_w = config.query_fields.as_dict()
        d_w = config.doc_fields.as_dict()
        self.loss = GCLLoss(
            config.loss,
            config.normalize_by,
            query_field_weights=[q_w[f] for f in towers.query_fields] if towers.multi_field else None,
            doc_field_weights=[d_w[f] for f in towers.doc_fields] if towers.multi_field else None,
            renormalize_mean=config.renormalize_mean,
            local_loss=distributed.is_distributed(),
        )
        self.params = [p for p in towers.parameters() if p.requires_grad]
        self.cache = None
        if config.grad_cache_chunk is not None:
            self.cache = GradCache(towers.encode_query, towers.encode_doc, self._cache_loss,
                                   config.grad_cache_chunk, scaler=scaler)

    def _loss(self, q, d, weights, doc_masks, scale, bias):
        with self.towers.autocast():
            return self.loss(q, d, weights, scale, bias, doc_field_masks=doc_masks)

    def _cache_loss(self, q, d, weights, doc_masks):
        return self._loss(q, d, weights, doc_masks, *self.towers.logit_params())

    def __call__(self, query_batch, doc_batch, weights, doc_masks) -> torch.Tensor:
        """Gradients of the batch's loss, clipped, one AdamW step; returns the detached loss."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.cache is not None:
            loss = self.cache.step(query_batch, doc_batch, weights, doc_masks)
            distributed.all_reduce_gradients(self.params)
        else:
            q, d, scale, bias = self.model(query_batch, doc_batch)
            loss = self._loss(q, d, weights, doc_masks, scale, bias)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss = loss.detach()
        if self.scaler is not None:
            if self.config.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
            self.optimizer.step()
        self.towers.clamp_logit_scale()
        return loss


# ------------------------------------------------------------------------------------------ the run


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GclError(f"device {name!r} was asked for, but torch sees no CUDA GPU (use --device cpu)")
        if distributed.is_distributed() or "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        elif device.index is None:
            device = torch.device("cuda", 0)
    elif device.type not in ("cpu", "mps"):
        raise GclError(f"unsupported device {name!r} (cpu, cuda, cuda:N, mps or auto)")
    return device


def _init_distributed(device: torch.device) -> bool:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); True if this call started it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def train(config: TrainConfig, data, out, *, resume: bool = False) -> TrainResult:
    """Train ``config`` on the in_domain pairs of ``data`` (a dataset folder or a Dataset) into ``out``.

    ``out`` must be new or empty unless ``resume``; with ``resume`` a checkpoint there is continued
    (refused when it is from another run), a finished run is returned as it is, and a folder without a
    checkpoint starts from scratch. Under torchrun every rank calls this; rank 0 writes the files.
    """
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = resolve_device(config.device)
    owns_group = _init_distributed(device)
    try:
        return _train(config, data, Path(out), resume, device, started)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, data, out: Path, resume: bool, device, started: float) -> TrainResult:
    rank, world = distributed.rank(), distributed.world_size()
    state = _existing_run(out, resume)

    from gcl_eval.data.dataset import Dataset

    if isinstance(data, Dataset):
        dataset, data_source = data, str(data.root or data.name)
    else:
        from gcl_eval.data.io import read_dataset

        dataset, data_source = read_dataset(data), str(Path(data).resolve())
    from gcl_eval.util.threads import budget_cpu_threads

    budget_cpu_threads(config.data_workers(), device.type)
    pairs = training_pairs(dataset, config, source=data_source)
    fingerprint = dataset.fingerprint()
    sampler = EpochBatches(len(pairs), config.batch_size, config.seed, rank=rank, world_size=world)
    if resume and ckpt.is_finished(out):
        info = ckpt.read_train_info(out)
        recipe = TrainConfig.from_dict(info["config"]).recipe()
        ckpt.check_same_run(config, recipe, info["data"]["fingerprint"], fingerprint, out)
        return _finished_result(info, started)
    if state is not None:
        ckpt.check_same_run(config, state["recipe"], state["data_fingerprint"], fingerprint, out)

    seed_everything(config.seed)
    towers, model_info = build_towers(config, device)
    towers.train()
    seed_everything(config.seed + rank)  # training RNG streams (dropout), one per rank, as open_clip does
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = config.total_steps(steps_per_epoch)
    epochs_to_run = -(-total_steps // steps_per_epoch)  # the last one is partial under max_steps
    optimizer = make_optimizer(towers, config)
    schedule = CosineSchedule(config.lr, config.warmup, total_steps)
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    position = {"epoch": 0, "batch": 0, "step": 0, "epoch_loss_sum": 0.0, "history": []}
    resumed_from = None
    if state is not None:
        towers.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) == world:
            ckpt.set_rng_state(rngs[rank])
        else:  # another world size: the run goes on, reproducibly, but not bit for bit
            seed_everything(config.seed + rank + 1000003 * state["position"]["step"])
        position = dict(state["position"])
        resumed_from = position["step"]
        del state

    ddp_model = None
    if distributed.is_distributed() and config.grad_cache_chunk is None:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(towers, device_ids=[device.index] if device.type == "cuda" else None)
    step_fn = Stepper(towers, config, optimizer, scaler, ddp_model)
    loader = make_loader(pairs, towers, config, sampler)
    if isinstance(loader, PreparedBatches):  # no workers run during the steps: torch gets every core
        budget_cpu_threads(0, device.type)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    kill_after = int(os.environ[KILL_HOOK_ENV]) if os.environ.get(KILL_HOOK_ENV) else None

    def save(pos: dict) -> None:
        rngs = [ckpt.rng_state()]
        if distributed.is_distributed():
            rngs = [None] * world
            dist.all_gather_object(rngs, ckpt.rng_state())
        if rank == 0:
            ckpt.save_checkpoint(out, {
                "model": towers.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rngs,
                "position": pos,
                "recipe": config.recipe(),
                "config": config.to_dict(),
                "data_fingerprint": fingerprint,
            })
        if distributed.is_distributed():
            dist.barrier()

    loop_started = time.perf_counter()
    steps_here = 0
    with _Progress(total_steps, position["step"], enabled=rank == 0) as bar:
        for epoch in range(position["epoch"], epochs_to_run):
            start = position["batch"] if epoch == position["epoch"] else 0
            loss_sum = torch.tensor(position["epoch_loss_sum"] if start else 0.0, dtype=torch.float64, device=device)
            epoch_steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)  # less: max_steps
            sampler.set_position(epoch, start, epoch_steps)
            for b, (query_batch, doc_batch, weights, doc_masks) in enumerate(loader, start=start):
                step = epoch * steps_per_epoch + b
                lr = schedule.apply(optimizer, step)
                loss = step_fn(move_to(query_batch, device), move_to(doc_batch, device), weights.to(device),
                               None if doc_masks is None else doc_masks.to(device))
                loss_sum += _global_mean(loss).double()
                steps_here += 1
                done = step + 1
                if bar.due() or b + 1 == epoch_steps:
                    bar.update(done, loss_sum.item() / (b + 1), steps_here * config.batch_size
                               / max(time.perf_counter() - loop_started, 1e-9), epoch)
                epoch_end = b + 1 == epoch_steps
                if epoch_end:
                    mean = loss_sum.item() / epoch_steps
                    history = [*position["history"], {"epoch": epoch + 1, "loss": mean, "lr": lr}]
                    position = {"epoch": epoch + 1, "batch": 0, "step": done, "epoch_loss_sum": 0.0,
                                "history": history}
                    save(position)
                elif config.checkpoint_every and done % config.checkpoint_every == 0:
                    position = {**position, "epoch": epoch, "batch": b + 1, "step": done,
                                "epoch_loss_sum": loss_sum.item()}
                    save(position)
                if kill_after is not None and done == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
    train_s = time.perf_counter() - loop_started

    history = position["history"]
    result = TrainResult(
        final_loss=history[-1]["loss"],
        steps=position["step"],
        epochs=epochs_to_run,
        samples_per_s=steps_here * config.batch_size / train_s if steps_here else 0.0,
        wall_s=0.0,
        train_s=train_s,
        out=str(out),
        resumed_from_step=resumed_from,
        history=history,
    )
    if rank == 0:
        info = {
            "tool": "gcl-eval",
            "version": _version(),
            "config": config.to_dict(),
            "model": model_info,
            "data": {"path": data_source, "name": dataset.name, "fingerprint": fingerprint, "split": "in_domain",
                     "pairs": len(pairs), "steps_per_epoch": steps_per_epoch},
            "environment": {**_environment(device, world), "data_workers": config.data_workers(),
                            "data_path": "prepared" if isinstance(loader, PreparedBatches) else "streaming"},
        }
        result.wall_s = time.perf_counter() - started
        info["result"] = result.to_dict()
        info["timings"] = {"setup_s": loop_started - started, "train_s": train_s, "wall_s": result.wall_s}
        ckpt.export_final(out, towers.export_state_dict(), info)
    if distributed.is_distributed():
        dist.barrier()
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


def _finished_result(info: dict, started: float) -> TrainResult:
    result = TrainResult(**{**info["result"], "already_finished": True})
    result.wall_s = time.perf_counter() - started
    return result


def _global_mean(loss: torch.Tensor) -> torch.Tensor:
    """The loss of the full batch for logging: with GCLLoss(local_loss=True) ranks hold shares of it."""
    if not distributed.is_distributed():
        return loss
    t = loss.detach().float().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / distributed.world_size()


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


class _Progress:
    """A rich bar on stderr (terminals only, rank 0): steps, loss (epoch mean so far), samples/s."""

    def __init__(self, total: int, completed: int, enabled: bool):
        from gcl_eval.util.console import progress_enabled

        self.enabled = enabled and progress_enabled()
        self.total, self.completed = total, completed
        self.bar = None
        self.last = time.perf_counter()

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

    def due(self) -> bool:
        return self.bar is not None and time.perf_counter() - self.last >= PROGRESS_EVERY_S

    def update(self, completed: int, loss: float, samples_per_s: float, epoch: int) -> None:
        self.last = time.perf_counter()
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, loss=loss, sps=samples_per_s, epoch=epoch + 1)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
