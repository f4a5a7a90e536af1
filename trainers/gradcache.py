"""Gradient caching: contrastive batches larger than what fits through the towers at once.

A contrastive loss couples every row with every other, so the batch cannot simply be split into
independent micro-batches. Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch
Size under Memory Limited Setup") gets the exact full-batch gradient in three passes:

1. embed every chunk without grad, recording the RNG state before each chunk's forward;
2. compute the loss on the full embedding matrices (leaves that require grad) and backward it: this
   gives d loss / d embeddings, and the gradients of parameters used directly in the loss (logit
   scale, bias) land in their ``.grad`` at once;
3. re-run each chunk with grad, replaying its RNG state so dropout draws the same masks, and
   back-propagate its slice of the embedding gradient into the towers.

Peak activation memory is one chunk's, plus the N x N loss. The result equals the gradient of the
full-batch loss when each chunk's forward is a function of its own rows and the RNG (true for
transformers with LayerNorm; not for BatchNorm in training mode, whose statistics depend on the chunk).
With dropout, "the same gradient" means: for the same dropout masks. :func:`plain_step` with the same
``chunk_size`` runs the towers chunk by chunk with grad, so it draws exactly the masks the cache
replays, and is the reference the tests compare against.

Batches: a tensor or numpy array (rows on dim 0), a list of records, or dicts / tuples / lists of those
(fields of one batch), split recursively; pass ``split`` for anything else. Encoders return a tensor or
a sequence of tensors (one per field); ``loss_fn(query_emb, doc_emb, *loss_args)`` receives the full
batch in the same structure, e.g. ``GCLLoss`` or a lambda over :mod:`trainers.losses`.

Under torch.distributed: do not wrap the model in DistributedDataParallel (it expects one backward per
forward); use a loss that gathers (``GCLLoss``) and call
:func:`gcl_eval.util.distributed.all_reduce_gradients` after :meth:`GradCache.step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gcl_eval.util.distributed import initialized_cuda_devices
from gcl_eval.util.errors import GclError

Encoder = Callable[[Any], "torch.Tensor | Sequence[torch.Tensor]"]


class GradCache:
    """``step(query_batch, doc_batch, *loss_args)`` -> detached loss, with ``.grad`` populated.

    Gradients accumulate into ``.grad`` like ``loss.backward()`` does: zero them before a step.
    ``scaler`` (a torch GradScaler, for fp16) scales the loss before the backward, as usual.
    ``replay_rng=False`` exists only to show that the replay matters (the gradients then differ
    whenever the towers use dropout).
    """

    def __init__(
        self,
        encode_query: Encoder,
        encode_doc: Encoder,
        loss_fn: Callable[..., torch.Tensor],
        chunk_size: int,
        *,
        split: Callable[[Any, int], list] | None = None,
        scaler=None,
        replay_rng: bool = True,
    ):
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise GclError(f"gradient-cache chunk size must be a positive integer, got {chunk_size!r}")
        self.encode_query = encode_query
        self.encode_doc = encode_doc
        self.loss_fn = loss_fn
        self.chunk_size = chunk_size
        self.split = split or split_batch
        self.scaler = scaler
        self.replay_rng = replay_rng

    def step(self, query_batch, doc_batch, *loss_args) -> torch.Tensor:
        q_chunks = self.split(query_batch, self.chunk_size)
        d_chunks = self.split(doc_batch, self.chunk_size)
        if len(q_chunks) != len(d_chunks):
            raise GclError(f"query and document batches split into {len(q_chunks)} and {len(d_chunks)} chunks")

        # 1. embeddings without grad, RNG state recorded before each chunk
        states, q_parts, d_parts = [], [], []
        with torch.no_grad():
            for qc, dc in zip(q_chunks, d_chunks):
                states.append(_get_rng_state())
                q_parts.append(_as_fields(self.encode_query(qc)))
                d_parts.append(_as_fields(self.encode_doc(dc)))
        q_leaves, q_is_tensor = _concat_leaves(q_parts)
        d_leaves, d_is_tensor = _concat_leaves(d_parts)

        # 2. loss on the full matrices; d loss / d embeddings lands in the leaves' .grad
        loss = self.loss_fn(
            q_leaves[0] if q_is_tensor else q_leaves, d_leaves[0] if d_is_tensor else d_leaves, *loss_args
        )
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

        # 3. each chunk again with grad, same RNG, its slice of the embedding gradient into the towers
        q_offsets = _offsets(q_parts)
        d_offsets = _offsets(d_parts)
        fork = torch.random.fork_rng(devices=initialized_cuda_devices()) if self.replay_rng else nullcontext()
        with fork:
            for i, (qc, dc) in enumerate(zip(q_chunks, d_chunks)):
                if self.replay_rng:
                    _set_rng_state(states[i])
                outputs, grads = [], []
                for leaves, fields, offsets in (
                    (q_leaves, _as_fields(self.encode_query(qc))[0], q_offsets),
                    (d_leaves, _as_fields(self.encode_doc(dc))[0], d_offsets),
                ):
                    for leaf, out in zip(leaves, fields):
                        if leaf.grad is not None and out.requires_grad:
                            outputs.append(out)
                            grads.append(leaf.grad[offsets[i] : offsets[i + 1]])
                if outputs:
                    torch.autograd.backward(outputs, grads)
        return loss.detach()


def plain_step(
    encode_query: Encoder,
    encode_doc: Encoder,
    loss_fn: Callable[..., torch.Tensor],
    query_batch,
    doc_batch,
    *loss_args,
    chunk_size: int | None = None,
    split: Callable[[Any, int], list] | None = None,
    scaler=None,
) -> torch.Tensor:
    """The reference: forward with grad, loss, one backward. Returns the detached loss.

    ``chunk_size=None`` runs each tower once on the whole batch; a chunk size runs the towers chunk by
    chunk (still one graph, one backward), consuming the RNG exactly as :class:`GradCache` does.
    """
    if chunk_size is None:
        q_parts = [_as_fields(encode_query(query_batch))]
        d_parts = [_as_fields(encode_doc(doc_batch))]
    else:
        split = split or split_batch
        q_parts, d_parts = [], []
        for qc, dc in zip(split(query_batch, chunk_size), split(doc_batch, chunk_size), strict=True):
            q_parts.append(_as_fields(encode_query(qc)))
            d_parts.append(_as_fields(encode_doc(dc)))
    q_fields, q_is_tensor = _concat(q_parts)
    d_fields, d_is_tensor = _concat(d_parts)
    loss = loss_fn(q_fields[0] if q_is_tensor else q_fields, d_fields[0] if d_is_tensor else d_fields, *loss_args)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach()


def split_batch(batch, chunk_size: int) -> list:
    """Split a batch into chunks of ``chunk_size`` rows (the last may be shorter), recursively."""
    n = batch_len(batch)
    starts = range(0, n, chunk_size)
    return [_take(batch, slice(s, min(s + chunk_size, n))) for s in starts]


def batch_len(batch) -> int:
    """Number of rows of a batch (see the module docstring for what a batch may be)."""
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        lengths = {batch_len(v) for v in batch.values()}
    elif isinstance(batch, (list, tuple)) and _is_container(batch):
        lengths = {batch_len(v) for v in batch}
    elif isinstance(batch, (list, tuple)):
        return len(batch)
    else:
        raise GclError(f"cannot split a batch of type {type(batch).__name__}; pass split=")
    if len(lengths) != 1:
        raise GclError(f"the fields of a batch have different numbers of rows: {sorted(lengths)}")
    return lengths.pop()


def _is_container(seq) -> bool:
    """A list/tuple of fields (tensors, dicts, nested lists) rather than a list of records."""
    return len(seq) > 0 and all(isinstance(v, (torch.Tensor, np.ndarray, Mapping, list, tuple)) for v in seq)


def _take(batch, rows: slice):
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return batch[rows]
    if isinstance(batch, Mapping):
        return type(batch)((k, _take(v, rows)) for k, v in batch.items())
    if _is_container(batch):
        return type(batch)(_take(v, rows) for v in batch)
    return batch[rows]


def _as_fields(out) -> tuple[list[torch.Tensor], bool]:
    if isinstance(out, torch.Tensor):
        return [out], True
    if isinstance(out, (list, tuple)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return list(out), False
    raise GclError("an encoder must return a tensor or a sequence of tensors (one per field)")


def _concat(parts) -> tuple[list[torch.Tensor], bool]:
    is_tensor = parts[0][1]
    n_fields = len(parts[0][0])
    if any(len(p[0]) != n_fields or p[1] != is_tensor for p in parts):
        raise GclError("an encoder returned a different number of fields for different chunks")
    fields = [torch.cat([p[0][f] for p in parts]) if len(parts) > 1 else parts[0][0][f] for f in range(n_fields)]
    return fields, is_tensor


def _concat_leaves(parts) -> tuple[list[torch.Tensor], bool]:
    fields, is_tensor = _concat(parts)
    return [f.detach().requires_grad_() for f in fields], is_tensor


def _offsets(parts) -> list[int]:
    offsets = [0]
    for fields, _ in parts:
        offsets.append(offsets[-1] + fields[0].shape[0])
    return offsets


def _get_rng_state():
    cuda = [torch.cuda.get_rng_state(d) for d in initialized_cuda_devices()]
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for d, s in zip(initialized_cuda_devices(), cuda):
        torch.cuda.set_rng_state(s, d)
