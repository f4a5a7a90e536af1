"""All-gather across ranks with gradients, for contrastive losses whose negatives span the global batch.

Semantics are open_clip's ``gather_features(local_loss=False, gather_with_grad=True)``: the forward
concatenates every rank's rows (rank order); the backward gives each rank the SUM over ranks of the
gradient that reached its own rows. When every rank computes the same full-batch loss L (or, with
``local_loss``, world_size times its share of L), each rank's local parameter gradient is
world_size * dL/dparam restricted to its rows, and DDP's gradient averaging turns that into exactly
dL/dparam of the full batch. (open_clip's non-grad gather with the local shard re-inserted would give
the towers only 1/world_size of it while the logit scale gets all of it, so it is not used.)

Ranks may hold different numbers of rows (e.g. a short last batch): sizes are exchanged first and
shorter shards are padded for the collective, then trimmed. Without an initialised process group (or
with world size 1) every function is the identity.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gathered_sizes(n_local: int, device=None) -> list[int]:
    """Every rank's row count, in rank order (one small collective)."""
    if not is_distributed():
        return [int(n_local)]
    mine = torch.tensor([int(n_local)], dtype=torch.long, device=_collective_device(device))
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


def _collective_device(device) -> torch.device:
    """NCCL needs CUDA tensors; gloo works with CPU tensors."""
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
