"""Devices and torchrun: which device a process uses, which rank it is, the process group, and the
collectives the training loss and sharded evaluation need. The one place for all of it.

Two views of the world, deliberately distinct:

- the launch (:func:`world_info`, :func:`is_main_process`): the process group's rank and size once one is
  running, otherwise what torchrun put into the environment (RANK, LOCAL_RANK, WORLD_SIZE), so a rank
  knows whether it is the main process before the group starts and after it ends;
- the process group (:func:`is_distributed`, :func:`rank`, :func:`world_size`): what collectives act on;
  without an initialised group (or with one rank) every collective below is the identity.

Gathers: semantics are open_clip's ``gather_features(local_loss=False, gather_with_grad=True)``: the
forward concatenates every rank's rows (rank order); the backward gives each rank the SUM over ranks of
the gradient that reached its own rows. When every rank computes the same full-batch loss L (or, with
``local_loss``, world_size times its share of L), each rank's local parameter gradient is
world_size * dL/dparam restricted to its rows, and DDP's gradient averaging turns that into exactly
dL/dparam of the full batch. (open_clip's non-grad gather with the local shard re-inserted would give
the towers only 1/world_size of it while the logit scale gets all of it, so it is not used.)

Ranks may hold different numbers of rows (e.g. a short last batch): sizes are exchanged first and
shorter shards are padded for the collective, then trimmed.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from gcl_eval.util.errors import GclError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ the launch


@dataclass(frozen=True)
class WorldInfo:
    """This process's place in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_info() -> WorldInfo:
    """The process group's rank and size when one is running, else torchrun's environment variables."""
    local_rank = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return WorldInfo(dist.get_rank(), local_rank, dist.get_world_size())
    return WorldInfo(_env_int("RANK", 0), local_rank, _env_int("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True on rank 0 (and in a process not launched by torchrun): the one that writes and prints."""
    return world_info().is_main


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise GclError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


# ------------------------------------------------------------------------------------------ devices


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device for a device option: None or "auto" (CUDA, else MPS, else CPU), "cpu", "cuda",
    "cuda:N" or "mps". Under torchrun every rank takes its own GPU, cuda:LOCAL_RANK. A device that is
    unknown or not available here raises GclError."""
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise GclError(f"unknown device {str(name)!r}; expected {DEVICE_NAMES}") from None
    if device.type == "cuda":
        return _cuda_device(name, device)
    if device.type == "mps" and not _mps_available():
        raise GclError(f"device {str(name)!r} requested but MPS (Apple GPU) is not available to torch")
    if device.type not in ("cpu", "mps"):
        raise GclError(f"unsupported device {str(name)!r}; expected {DEVICE_NAMES}")
    return device


def _cuda_device(name, device: torch.device) -> torch.device:
    if not torch.cuda.is_available():
        raise GclError(f"device {str(name)!r} requested but CUDA is not available to torch")
    if is_distributed() or "LOCAL_RANK" in os.environ:
        return torch.device("cuda", world_info().local_rank)
    if device.index is None:
        return torch.device("cuda", 0)
    if device.index >= torch.cuda.device_count():
        raise GclError(f"device {str(name)!r} requested but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def initialized_cuda_devices() -> list[int]:
    """The CUDA devices whose state (e.g. RNG) exists: none until this process has used CUDA, so CPU runs
    never initialise it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


# ------------------------------------------------------------------------------------------ the process group


def init_distributed(device: str | torch.device) -> bool:
    """Start the process group when launched by torchrun with more than one process: NCCL for a CUDA
    device, gloo otherwise. Idempotent; True only when this call started the group."""
    if world_info().world_size <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device if device.index is not None else world_info().local_rank)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


@contextmanager
def process_group(device: str | torch.device) -> Iterator[None]:
    """The process group for the duration of the block (under torchrun); ended only if this block started it."""
    started = init_distributed(device)
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The process group's size (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def main_first(build: Callable[[], T]) -> T:
    """Run ``build`` (fetch or generate a cache entry, under its own file lock) on rank 0, then, once it is
    done, on every other rank: with a cache folder shared by all nodes they find the entry built; with a
    folder per node, the first rank of each node to take the entry's lock builds that node's copy.
    Without a process group: ``build()``. Every rank must call it (it holds a barrier)."""
    if not is_distributed():
        return build()
    if rank() == 0:
        result = build()
    barrier()
    if rank() != 0:
        result = build()
    return result


# ------------------------------------------------------------------------------------------ collectives


def gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order ([obj] without a process group)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a detached tensor (in float32); ``tensor`` itself without a process group."""
    if not is_distributed():
        return tensor
    total = tensor.detach().float().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def gathered_sizes(n_local: int, device=None) -> list[int]:
    """Every rank's row count, in rank order (one small collective)."""
    if not is_distributed():
        return [int(n_local)]
    mine = torch.tensor([int(n_local)], dtype=torch.long, device=collective_device(device))
    out = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return [int(t.item()) for t in out]


def local_slice(sizes: Sequence[int]) -> slice:
    """This rank's rows in the gathered batch."""
    r = rank()
    start = sum(sizes[:r])
    return slice(start, start + sizes[r])


def all_gather_with_grad(tensor: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` (rows on dim 0) from every rank; gradients flow back to each rank's rows."""
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gathered_sizes(tensor.shape[0], tensor.device)
    return _AllGatherWithGrad.apply(tensor, tuple(sizes))


def all_gather_no_grad(tensor: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank, detached (weights, masks)."""
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gathered_sizes(tensor.shape[0], tensor.device)
    with torch.no_grad():
        return _gather(tensor.detach(), tuple(sizes))


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter], average: bool = True) -> None:
    """DDP's gradient step done by hand (sum, then divide by world size): for models not wrapped in
    DistributedDataParallel, e.g. after a gradient-cache step that ran several backwards."""
    if not is_distributed():
        return
    w = dist.get_world_size()
    for p in parameters:
        if p.grad is None:
            continue
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        if average:
            p.grad.div_(w)


def collective_device(device=None) -> torch.device:
    """Where tensors for a collective live: ``device`` if given, else the GPU for NCCL, the CPU for gloo."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _gather(tensor: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    is_bool = tensor.dtype == torch.bool  # not every backend gathers bool: send uint8
    tensor = tensor.to(torch.uint8) if is_bool else tensor.contiguous()
    largest = max(sizes)
    if tensor.shape[0] < largest:
        pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    out = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(out, tensor)
    gathered = torch.cat([t[:n] for t, n in zip(out, sizes)])
    return gathered.bool() if is_bool else gathered


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: all-gather. Backward: all-reduce (sum) of the full gradient, then this rank's rows.

    (Equivalent to a reduce-scatter; all-reduce works on every backend, gloo included, and handles
    uneven shards. The embedding gradient is small next to the model's, so the extra traffic is noise.)
    """

    @staticmethod
    def forward(ctx, tensor, sizes):
        ctx.sizes = sizes
        return _gather(tensor, sizes)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[local_slice(ctx.sizes)], None
