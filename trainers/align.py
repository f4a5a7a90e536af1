"""The pretraining stage of the mini models: a new image tower aligned with a pretrained text tower.

The paper fine-tunes models whose two towers web-scale CLIP pretraining already aligned. No pretrained
image weights exist offline, so this stage does that pretraining in miniature: the image tower learns to
put a product's image near its own title's embedding, with open_clip's contrastive loss, on the
(title, image) pairs of the in-domain corpus only: no queries, no ranks, no cold-start product. The text
tower is locked (its title embeddings computed once), so a step costs only the small image tower: a
minute or two on a 2-core CPU. The result is an open_clip checkpoint every arm that fine-tunes from it
starts from (gcl_eval.experiments.aligned_start caches it per dataset).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from gcl_eval.util.errors import DataError
from trainers.losses import weighted_contrastive_loss
from trainers.optim import CosineSchedule, param_groups
from trainers.towers import MAX_LOGIT_SCALE

ALIGN_SPLIT = "in_domain"  # whose corpus the stage reads


@dataclass(frozen=True)
class AlignConfig:
    """The stage's recipe; every field decides the weights (the cache key is all of it)."""

    arch: str = "mini-clip"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.02
    seed: int = 0

    def recipe(self) -> dict:
        return {"stage": "align-image-tower", **asdict(self)}


@dataclass
class AlignedPairs:
    """The in-domain corpus's documents that have both a title and an image."""

    doc_ids: list[str]
    titles: list[str]
    images: torch.Tensor  # (N, 3, H, W), preprocessed with the model's eval transform


def align_image_tower(config: AlignConfig, dataset, out: Path, *, device: str = "cpu") -> dict:
    """Train the image tower of ``config.arch`` (text tower locked) and write ``out/model.pt`` (the open_clip
    state dict) and ``out/align.json`` (recipe, loss per epoch, image->title retrieval accuracy, seconds).
    ``out`` must not exist yet; it is written whole or not at all. Returns the align.json record."""
    from gcl_eval.retrieval.models import load_open_clip
    from gcl_eval.util.atomic import atomic_folder

    started = time.perf_counter()
    loaded = load_open_clip(config.arch, None, seed=config.seed, device=device)
    model = loaded.model
    pairs = aligned_pairs(dataset, loaded.preprocess_val)
    title_emb = _title_embeddings(loaded, pairs.titles, device)
    losses = _train_image_tower(model, pairs.images, title_emb, config, device)
    accuracy = _image_to_title_accuracy(model, pairs.images, title_emb, device)
    record = {"recipe": config.recipe(), "source": loaded.source, "documents": len(pairs.doc_ids),
              "loss_per_epoch": losses, "image_to_title_top1": accuracy,
              "seconds": round(time.perf_counter() - started, 1)}
    with atomic_folder(out) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, tmp / "model.pt")
        (tmp / "align.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def aligned_pairs(dataset, preprocess) -> AlignedPairs:
    """(title, image) of every in-domain corpus document that has both, images decoded once."""
    from gcl_eval.util.console import track

    if ALIGN_SPLIT not in dataset.pairs:
        raise DataError(f"the pretraining stage reads the {ALIGN_SPLIT} corpus; this dataset has no such split")
    docs = dataset.corpus_for(ALIGN_SPLIT)
    rows = [i for i, (t, r) in enumerate(zip(docs.titles(), docs.image_refs())) if t is not None and r is not None]
    if not rows:
        raise DataError(f"the {ALIGN_SPLIT} corpus has no document with both a title and an image to align on")
    titles, refs, ids = docs.titles(), docs.image_refs(), [str(d) for d in docs.ids]
    images = []
    for i in track(rows, "decoding images for the pretraining stage", total=len(rows)):
        try:
            images.append(preprocess(docs.images.load(refs[i])))
        except Exception as err:  # a missing or corrupt file: name it
            raise DataError(f"document {ids[i]!r}: image {refs[i]} does not load "
                            f"({' '.join(str(err).split())[:200]})") from None
    return AlignedPairs([ids[i] for i in rows], [titles[i] for i in rows], torch.stack(images))


def _title_embeddings(loaded, titles: list[str], device: str) -> torch.Tensor:
    """The locked text tower's normalised title embeddings, fp32 (computed once)."""
    from gcl_eval.retrieval.encoders import OpenClipEncoder

    encoder = OpenClipEncoder(loaded, device=device, batch_size=256, precision="fp32")
    return torch.from_numpy(encoder.encode_texts(titles, "encoding titles for the pretraining stage")).to(device)


def _train_image_tower(model, images: torch.Tensor, title_emb: torch.Tensor, config: AlignConfig,
                       device: str) -> list[float]:
    """open_clip's contrastive loss between image and (fixed) title embeddings; mean loss per epoch."""
    from gcl_eval.util.console import track

    model.train()
    model.text.requires_grad_(False)
    model.text.eval()  # locked: no dropout either
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    steps_per_epoch = max(1, len(images) // config.batch_size)
    schedule = CosineSchedule(config.lr, config.warmup, steps_per_epoch * config.epochs)
    generator = torch.Generator().manual_seed(config.seed)
    ones = torch.ones(config.batch_size, device=device)
    losses, step = [], 0
    for _ in track(range(config.epochs), "pretraining stage: aligning the image tower", total=config.epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for b in range(steps_per_epoch):
            rows = order[b * config.batch_size:(b + 1) * config.batch_size]
            schedule.apply(optimizer, step)
            image_emb = model.encode_image(images[rows].to(device), normalize=True)
            loss = weighted_contrastive_loss(image_emb, title_emb[rows.to(device)], ones[:len(rows)],
                                             model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            total += float(loss.detach())
            step += 1
        losses.append(round(total / steps_per_epoch, 4))
    model.eval()
    return losses


@torch.no_grad()
def _image_to_title_accuracy(model, images: torch.Tensor, title_emb: torch.Tensor, device: str,
                             sample: int = 2000) -> float:
    """Share of (up to ``sample``) images whose own title is the nearest among those images' titles."""
    rows = torch.arange(min(sample, len(images)))
    image_emb = model.encode_image(images[rows].to(device), normalize=True)
    nearest = (image_emb @ title_emb[rows.to(device)].T).argmax(dim=1).cpu()
    return round(float((nearest == rows).float().mean()), 4)
