"""Weighted contrastive losses of GCL (formulas in docs/training.md).

All functions take L2-normalised embeddings (N x D), per-pair weights w (N,) and ``logit_scale``, the
multiplier t (already exp'ed and clamped, as open_clip's models return it), never its log.

``rows`` (keyword-only, default all rows) restricts a loss to the terms of some rows of the batch while
keeping every row as a negative and the normaliser of the whole batch. The row subsets of a partition of
the batch therefore sum to the full loss; this is what lets each rank of a distributed run compute only
its share of the gathered batch (see :class:`GCLLoss`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gcl_eval.util.errors import GclError
from gcl_eval.util import distributed

NORMALIZERS = ("n", "sum_w")
LOSS_KINDS = ("ce", "sigmoid")


def weighted_contrastive_loss(query_emb, doc_emb, weights, logit_scale, normalize_by="n", *, rows=None):
    """L = 1/(2N) sum_i w_i (CE of row i + CE of column i) of the logits t q_i . d_j.

    Only the positive of each row/column is weighted; negatives act through the softmax denominator.
    ``normalize_by="n"`` divides by 2N (w = 1 then equals open_clip's ClipLoss), ``"sum_w"`` by 2 sum(w).

    CE_row_i = logsumexp_j S_ij - S_ii and CE_col_i = logsumexp_j S_ji - S_ii, computed from ONE logits
    matrix S (ClipLoss builds two), which makes the weighted loss faster than ClipLoss, not slower.
    """
    n = _check_pair(query_emb, doc_emb)
    w = _as_weights(weights, n, query_emb)
    denom = 2 * _normaliser(normalize_by, n, w)
    idx = _row_index(rows, n, query_emb.device)
    if idx is None:
        logits = logit_scale * query_emb @ doc_emb.T
        row_lse = torch.logsumexp(logits, dim=1)
        col_lse = torch.logsumexp(logits, dim=0)
        positives = logits.diagonal()
        w_rows = w
    else:  # rows idx of S (queries idx vs all docs) and columns idx of S (docs idx vs all queries)
        logits_rows = logit_scale * query_emb[idx] @ doc_emb.T
        logits_cols = logit_scale * query_emb @ doc_emb[idx].T
        row_lse = torch.logsumexp(logits_rows, dim=1)
        col_lse = torch.logsumexp(logits_cols, dim=0)
        positives = logits_rows[torch.arange(idx.numel(), device=idx.device), idx]
        w_rows = w[idx]
    per_row = row_lse + col_lse - 2 * positives
    return (w_rows * per_row.to(w_rows.dtype)).sum() / denom


def weighted_sigmoid_loss(query_emb, doc_emb, weights, logit_scale, logit_bias, *, rows=None):
    """L = -1/N sum_ij log sigmoid(Z_ij (t q_i . d_j + b)), Z_ii = w_i, Z_ij = -1 (weighted SigLIP).

    With w = 1 this is open_clip's SigLipLoss (which also divides by the number of rows N).
    """
    n = _check_pair(query_emb, doc_emb)
    w = _as_weights(weights, n, query_emb)
    idx = _row_index(rows, n, query_emb.device)
    q_rows = query_emb if idx is None else query_emb[idx]
    cols = torch.arange(n, device=query_emb.device) if idx is None else idx
    logits = logit_scale * q_rows @ doc_emb.T + logit_bias
    labels = torch.full_like(logits, -1.0)
    labels[torch.arange(q_rows.shape[0], device=logits.device), cols] = w[cols].to(logits.dtype)
    return -F.logsigmoid(labels * logits).sum() / n


def multi_field_loss(
    query_fields: Sequence[torch.Tensor],
    doc_fields: Sequence[torch.Tensor],
    weights,
    logit_scale,
    query_field_weights: Sequence[float],
    doc_field_weights: Sequence[float],
    *,
    logit_bias=None,
    loss: str = "ce",
    normalize_by: str = "n",
    renormalize_mean: bool = False,
    query_field_masks: torch.Tensor | None = None,
    doc_field_masks: torch.Tensor | None = None,
    rows=None,
    fusion: Callable | None = None,
):
    """L = L_w(qbar, dbar) + sum_k sum_m L_w(q^k, d^m) (multi-field GCL).

    ``query_fields`` / ``doc_fields``: one normalised (N x D) matrix per field. ``loss`` is the pair loss
    L_w: "ce" (:func:`weighted_contrastive_loss`, uses ``normalize_by``) or "sigmoid"
    (:func:`weighted_sigmoid_loss`, needs ``logit_bias``).

    Mean embeddings: qbar_i = sum_k a_ik q^k_i with a_ik = a_k * present_ik / sum_k' a_k' * present_ik'
    (field weights are renormalised per row over the present fields, so (1, 1) means (0.5, 0.5));
    ``renormalize_mean`` L2-normalises qbar and dbar. A record without a present field of positive
    weight is an input error.

    Missing fields: ``query_field_masks`` (N x K) / ``doc_field_masks`` (N x M) bool, True = present
    (default: all present). A missing field's embedding is never read (it may hold anything, even NaN).
    The pairwise term of fields (k, m) is the pair loss over the sub-batch of rows where both q^k and
    d^m are present: those rows are its positives and its only negatives, and its normaliser is that
    sub-batch's (N_km or the sum of its weights). An empty sub-batch contributes 0.

    ``fusion`` (a learned field fusion, gcl_eval.retrieval.fusion.FieldFusion, or any callable
    ``fusion(qbar, doc_fields, doc_masks) -> (q', d')``): the pooled term becomes L_w(q', d') on the fused
    vectors (the document field weights then play no part); the pairwise terms stay.
    """
    k_fields, m_fields = len(query_fields), len(doc_fields)
    if k_fields == 0 or m_fields == 0:
        raise GclError("multi_field_loss needs at least one query field and one document field")
    n = _check_pair(query_fields[0], doc_fields[0])
    for f in (*query_fields, *doc_fields):
        _check_pair(query_fields[0], f)
    pair_loss = _pair_loss(loss, logit_scale, logit_bias, normalize_by)
    w = _as_weights(weights, n, query_fields[0])
    q_masks = _field_masks(query_field_masks, n, k_fields, "query", query_fields[0].device)
    d_masks = _field_masks(doc_field_masks, n, m_fields, "document", query_fields[0].device)
    q_bar = _mean_embedding(query_fields, query_field_weights, q_masks, renormalize_mean, "query")
    if fusion is None:
        d_bar = _mean_embedding(doc_fields, doc_field_weights, d_masks, renormalize_mean, "document")
    else:
        q_bar, d_bar = fusion(q_bar, list(doc_fields), d_masks)
    row_mask = _row_mask(rows, n, query_fields[0].device)

    total = pair_loss(q_bar, d_bar, w, rows=None if row_mask is None else row_mask.nonzero().squeeze(1))
    for k in range(k_fields):
        for m in range(m_fields):
            total = total + _masked_pair_term(
                pair_loss, query_fields[k], doc_fields[m], w, _both(q_masks, d_masks, k, m), row_mask
            )
    return total


class GCLLoss(nn.Module):
    """The training loop's loss: single- or multi-field, CE or sigmoid, with the distributed gather.

    ``forward(query_emb, doc_emb, weights, logit_scale, logit_bias=None, *, query_field_masks=None,
    doc_field_masks=None)``; ``query_emb`` / ``doc_emb`` are a tensor (one field) or a sequence of tensors
    (fields; multi-field is used when either side has a sequence or field weights were given).
    ``fusion``: a learned field fusion for the pooled term (see :func:`multi_field_loss`), applied to the
    gathered fields; its parameters are replicated like the logit scale's, so the same gradient rule holds.

    Under torch.distributed (world size > 1) embeddings are all-gathered with gradients and weights/masks
    without (:mod:`gcl_eval.util.distributed`). ``local_loss=False``: every rank computes the full-batch loss
    L (open_clip's local_loss=False, gather_with_grad=True). ``local_loss=True``: each rank computes only
    the terms of its own rows (N_local x N logits instead of N x N) and returns world_size times that
    share, so the mean over ranks is L. Either way, after the usual DDP gradient averaging (or
    :func:`gcl_eval.util.distributed.all_reduce_gradients`) every parameter's gradient is dL/dparam of the
    full gathered batch: exactly what one process computing L on the full batch gets.
    """

    def __init__(
        self,
        kind: str = "ce",
        normalize_by: str = "n",
        *,
        query_field_weights: Sequence[float] | None = None,
        doc_field_weights: Sequence[float] | None = None,
        renormalize_mean: bool = False,
        local_loss: bool = False,
        fusion: Callable | None = None,
    ):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise GclError(f"unknown loss {kind!r}; known: {', '.join(LOSS_KINDS)}")
        if normalize_by not in NORMALIZERS:
            raise GclError(f"unknown normalize_by {normalize_by!r}; known: {', '.join(NORMALIZERS)}")
        if kind == "sigmoid" and normalize_by != "n":
            raise GclError("the sigmoid loss is normalised by N only (normalize_by='n')")
        self.kind = kind
        self.normalize_by = normalize_by
        self.query_field_weights = None if query_field_weights is None else tuple(query_field_weights)
        self.doc_field_weights = None if doc_field_weights is None else tuple(doc_field_weights)
        self.renormalize_mean = renormalize_mean
        self.local_loss = local_loss
        self.fusion = fusion  # applied after the gather: it works row by row, so this is the same math

    def forward(
        self,
        query_emb,
        doc_emb,
        weights,
        logit_scale,
        logit_bias=None,
        *,
        query_field_masks=None,
        doc_field_masks=None,
    ):
        multi = (
            not isinstance(query_emb, torch.Tensor)
            or not isinstance(doc_emb, torch.Tensor)
            or self.query_field_weights is not None
            or self.doc_field_weights is not None
        )
        if not multi and (query_field_masks is not None or doc_field_masks is not None):
            raise GclError("field masks need multi-field embeddings (a sequence of fields or field weights)")
        if not multi and self.fusion is not None:
            raise GclError("a field fusion needs multi-field document embeddings (a sequence of fields)")
        q_fields = [query_emb] if isinstance(query_emb, torch.Tensor) else list(query_emb)
        d_fields = [doc_emb] if isinstance(doc_emb, torch.Tensor) else list(doc_emb)
        weights = _as_weights(weights, q_fields[0].shape[0], q_fields[0])

        rows, scale = None, 1
        if distributed.is_distributed():
            sizes = distributed.gathered_sizes(q_fields[0].shape[0], q_fields[0].device)
            q_fields = [distributed.all_gather_with_grad(f, sizes) for f in q_fields]
            d_fields = [distributed.all_gather_with_grad(f, sizes) for f in d_fields]
            weights = distributed.all_gather_no_grad(weights, sizes)
            if query_field_masks is not None:
                query_field_masks = distributed.all_gather_no_grad(torch.as_tensor(query_field_masks), sizes)
            if doc_field_masks is not None:
                doc_field_masks = distributed.all_gather_no_grad(torch.as_tensor(doc_field_masks), sizes)
            if self.local_loss:
                rows = distributed.local_slice(sizes)
                scale = len(sizes)

        if multi:
            loss = multi_field_loss(
                q_fields,
                d_fields,
                weights,
                logit_scale,
                self.query_field_weights or _uniform(len(q_fields)),
                self.doc_field_weights or _uniform(len(d_fields)),
                logit_bias=logit_bias,
                loss=self.kind,
                normalize_by=self.normalize_by,
                renormalize_mean=self.renormalize_mean,
                query_field_masks=query_field_masks,
                doc_field_masks=doc_field_masks,
                rows=rows,
                fusion=self.fusion,
            )
        elif self.kind == "ce":
            loss = weighted_contrastive_loss(
                q_fields[0], d_fields[0], weights, logit_scale, self.normalize_by, rows=rows
            )
        else:
            if logit_bias is None:
                raise GclError("the sigmoid loss needs a logit_bias")
            loss = weighted_sigmoid_loss(q_fields[0], d_fields[0], weights, logit_scale, logit_bias, rows=rows)
        return loss * scale if scale != 1 else loss


# ----------------------------------------------------------------------------------------------------
# helpers


def _uniform(k: int) -> tuple[float, ...]:
    return tuple(1.0 / k for _ in range(k))


def _check_pair(query_emb, doc_emb) -> int:
    if not isinstance(query_emb, torch.Tensor) or not isinstance(doc_emb, torch.Tensor):
        raise GclError("embeddings must be torch tensors")
    if query_emb.dim() != 2 or query_emb.shape != doc_emb.shape:
        raise GclError(
            f"query and document embeddings must both be N x D, got {tuple(query_emb.shape)} "
            f"and {tuple(doc_emb.shape)}"
        )
    if query_emb.shape[0] == 0:
        raise GclError("empty batch")
    return query_emb.shape[0]


def _as_weights(weights, n: int, like: torch.Tensor) -> torch.Tensor:
    # Weights stay at least float32 even when the embeddings are half precision (bf16 would round 1/p).
    dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    w = torch.as_tensor(weights, device=like.device)
    if w.dtype != dtype:
        w = w.to(dtype)
    if w.shape != (n,):
        raise GclError(f"weights must have shape ({n},), got {tuple(w.shape)}")
    return w


def _normaliser(normalize_by: str, n: int, w: torch.Tensor):
    if normalize_by == "n":
        return n
    if normalize_by == "sum_w":
        return w.sum()
    raise GclError(f"unknown normalize_by {normalize_by!r}; known: {', '.join(NORMALIZERS)}")


def _row_index(rows, n: int, device) -> torch.Tensor | None:
    """None (all rows) or a long index tensor of the rows whose terms are computed."""
    if rows is None:
        return None
    if isinstance(rows, slice):
        return torch.arange(n, device=device)[rows]
    rows = torch.as_tensor(rows, device=device)
    if rows.dtype == torch.bool:
        if rows.shape != (n,):
            raise GclError(f"rows mask must have shape ({n},), got {tuple(rows.shape)}")
        return rows.nonzero().squeeze(1)
    return rows.long()


def _row_mask(rows, n: int, device) -> torch.Tensor | None:
    idx = _row_index(rows, n, device)
    if idx is None:
        return None
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[idx] = True
    return mask


def _pair_loss(loss, logit_scale, logit_bias, normalize_by) -> Callable:
    if normalize_by not in NORMALIZERS:
        raise GclError(f"unknown normalize_by {normalize_by!r}; known: {', '.join(NORMALIZERS)}")
    if loss == "ce":
        return lambda q, d, w, rows: weighted_contrastive_loss(q, d, w, logit_scale, normalize_by, rows=rows)
    if loss == "sigmoid":
        if logit_bias is None:
            raise GclError("the sigmoid loss needs a logit_bias")
        if normalize_by != "n":
            raise GclError("the sigmoid loss is normalised by N only (normalize_by='n')")
        return lambda q, d, w, rows: weighted_sigmoid_loss(q, d, w, logit_scale, logit_bias, rows=rows)
    raise GclError(f"unknown loss {loss!r}; known: {', '.join(LOSS_KINDS)}")


def _field_masks(masks, n: int, n_fields: int, side: str, device) -> torch.Tensor | None:
    if masks is None:
        return None
    masks = torch.as_tensor(masks, device=device)
    if masks.dtype != torch.bool or masks.shape != (n, n_fields):
        raise GclError(
            f"{side} field masks must be a bool tensor of shape ({n}, {n_fields}), "
            f"got {masks.dtype} {tuple(masks.shape)}"
        )
    return masks


def _mean_embedding(fields, field_weights, masks, renormalize: bool, side: str) -> torch.Tensor:
    if len(field_weights) != len(fields):
        raise GclError(f"{len(field_weights)} {side} field weights for {len(fields)} {side} fields")
    first = fields[0]
    a = torch.as_tensor(field_weights, dtype=first.dtype, device=first.device)
    if torch.isnan(a).any() or (a < 0).any() or a.sum() <= 0:
        raise GclError(f"{side} field weights must be >= 0 with a positive sum, got {tuple(field_weights)}")
    if masks is None:
        a_rows = (a / a.sum()).expand(first.shape[0], -1)
    else:
        a_rows = a * masks
        total = a_rows.sum(dim=1, keepdim=True)
        empty = (total <= 0).squeeze(1)
        if empty.any():
            i = int(empty.nonzero()[0])
            raise GclError(f"{side} record {i} has no present field with positive weight")
        a_rows = a_rows / total
    mean = torch.zeros_like(first)
    for k, f in enumerate(fields):
        f = f if masks is None else torch.where(masks[:, k : k + 1], f, torch.zeros_like(f))
        mean = mean + a_rows[:, k : k + 1] * f
    return F.normalize(mean, dim=-1) if renormalize else mean


def _both(q_masks, d_masks, k: int, m: int) -> torch.Tensor | None:
    if q_masks is None and d_masks is None:
        return None
    if q_masks is None:
        return d_masks[:, m]
    if d_masks is None:
        return q_masks[:, k]
    return q_masks[:, k] & d_masks[:, m]


def _masked_pair_term(pair_loss, q, d, w, present, row_mask):
    """The pair loss over the rows where both fields are present (see multi_field_loss)."""
    if present is None or bool(present.all()):
        rows = None if row_mask is None else row_mask.nonzero().squeeze(1)
        return pair_loss(q, d, w, rows)
    sub = present.nonzero().squeeze(1)
    if sub.numel() == 0:
        return q.new_zeros(())
    rows = None
    if row_mask is not None:
        rows = row_mask[sub].nonzero().squeeze(1)
        if rows.numel() == 0:
            return q.new_zeros(())
    return pair_loss(q[sub], d[sub], w[sub], rows)
