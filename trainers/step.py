"""One optimizer step of the GCL recipe (open_clip's): encode the batch's query and document fields,
the weighted GCL loss (:class:`trainers.losses.GCLLoss`), back-propagation (through a GradScaler for
fp16), optional gradient-norm clipping, an AdamW step, the logit scale clamped at 100.

Variants, each equal to the plain path (tests): bf16/fp16 autocast; the gradient cache
(``grad_cache_chunk``: the towers run chunk by chunk, the loss sees the full batch); DDP (the model wrapped
in DistributedDataParallel; GCLLoss all-gathers the embeddings, so the gradients are those of the full
batch).
"""

from __future__ import annotations

import torch

from gcl_eval.util import distributed
from trainers.config import TrainConfig
from trainers.gradcache import GradCache
from trainers.losses import GCLLoss
from trainers.towers import Towers


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
            fusion=towers.fusion,  # used inside the loss, so also in the gradient cache's loss pass
        )
        self.params = [p for p in towers.parameters() if p.requires_grad]
        self.grad_norm: torch.Tensor | None = None  # of the last step, when it was asked to measure
        self.cache = None
        if config.grad_cache_chunk is not None:
            self.cache = GradCache(towers.encode_query, towers.encode_doc, self._cache_loss,
                                   config.grad_cache_chunk, scaler=scaler)

    def _loss(self, q, d, weights, doc_masks, scale, bias):
        with self.towers.autocast():
            return self.loss(q, d, weights, scale, bias, doc_field_masks=doc_masks)

    def _cache_loss(self, q, d, weights, doc_masks):
        return self._loss(q, d, weights, doc_masks, *self.towers.logit_params())

    def __call__(self, query_batch, doc_batch, weights, doc_masks, *, measure: bool = False) -> torch.Tensor:
        """Gradients of the batch's loss, clipped, one AdamW step; returns the detached loss. ``measure``:
        also keep the total gradient norm (before clipping, unscaled) in ``self.grad_norm``; it only
        reads the gradients, so the step is the same either way."""
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
            if self.config.grad_clip is not None or measure:
                self.scaler.unscale_(self.optimizer)  # scaler.step would do it anyway: the same update
            self.grad_norm = self._clip(measure)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.grad_norm = self._clip(measure)
            self.optimizer.step()
        self.towers.clamp_logit_scale()
        return loss

    def _clip(self, measure: bool) -> torch.Tensor | None:
        """Clip the gradient norm (when configured); the norm before clipping when measured, else None."""
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
            return norm.detach() if measure else None
        if not measure:
            return None
        return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None]).detach()
