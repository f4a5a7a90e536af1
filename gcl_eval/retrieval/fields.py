"""Fields of a record and the multi-field pooling (docs/training.md, docs/evaluation.md).

A side (query or document) is a set of named fields with weights: the query side has "query"
(text); the document side has "title" (text) and "image" (image). Each field is encoded and
L2-normalised on its own; the record's embedding is the weighted mean of its present fields
(weights renormalised over the present ones), L2-normalised again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from gcl_eval.util.errors import GclError

MODALITY = {"query": "text", "title": "text", "image": "image"}
QUERY_FIELDS = ("query",)
DOC_FIELDS = ("title", "image")


@dataclass(frozen=True)
class FieldWeights:
    """Weights of a side's fields, e.g. FieldWeights.of(title=0.5, image=0.5). Zero-weight fields are
    not encoded at all (the paper's cold-start "0.5/0.0" never looks at images)."""

    items: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, **weights: float) -> "FieldWeights":
        for name, weight in weights.items():
            if name not in MODALITY:
                raise GclError(f"unknown field {name!r}; known fields: {', '.join(MODALITY)}")
            if not np.isfinite(weight) or weight < 0:
                raise GclError(f"field weight of {name!r} must be a finite number >= 0 (got {weight})")
        if not any(w > 0 for w in weights.values()):
            raise GclError("at least one field needs a positive weight")
        return cls(tuple(sorted(weights.items())))

    @classmethod
    def parse(cls, text: str) -> "FieldWeights":
        """'image=0.5,title=0.5' -> FieldWeights; a bare name means weight 1."""
        weights: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            try:
                weights[name.strip()] = float(value) if value else 1.0
            except ValueError:
                raise GclError(f"field weight {part!r} is not NAME=NUMBER") from None
        return cls.of(**weights)

    def as_dict(self) -> dict[str, float]:
        return dict(self.items)

    def active(self) -> list[str]:
        """Fields with positive weight, the only ones worth encoding."""
        return [name for name, weight in self.items if weight > 0]

    def __str__(self) -> str:
        return ",".join(f"{name}={weight:g}" for name, weight in self.items)


def pool_fields(embeddings: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray],
                weights: FieldWeights) -> np.ndarray:
    """Weighted mean of per-field embeddings (N x D each), missing fields dropped, L2-normalised.

    present[name] is a bool (N,) mask; a record with no present positive-weight field is an input
    error (its embedding would be NaN), reported with its row number.
    """
    active = weights.active()
    w = weights.as_dict()
    n = len(next(iter(present[name] for name in active)))
    dim = next(embeddings[name].shape[1] for name in active)
    total = np.zeros((n, dim), dtype=np.float32)
    mass = np.zeros(n, dtype=np.float32)
    for name in active:
        mask = np.asarray(present[name], dtype=bool)
        total[mask] += np.float32(w[name]) * embeddings[name][mask]
        mass += np.float32(w[name]) * mask
    if (mass == 0).any():
        row = int(np.flatnonzero(mass == 0)[0])
        raise GclError(f"record {row} has none of the fields {', '.join(active)}: nothing to embed")
    total /= mass[:, None]  # renormalised weights; the direction is what matters, but keep it a mean
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    return total / np.maximum(norms, 1e-12)
