"""Learned late fusion of a document's fields, an exact bi-encoder (docs/training.md, "Learned field fusion").

A query q (N x D, L2-normalised) and a document's fields d^1..d^M (each L2-normalised, some absent) score

    score(q, d) = sum_m a_m(q) * s_m(p_d) * (q . d^m)

- a(q) = softmax over the fields of (global_logits + W q): learned global field weights plus a
  query-conditioned part (W starts at zero, the global logits at the log of the training field weights);
- s_m(p) = present_m * exp(h[p, m]), p the document's presence pattern (which fields it has, one of
  2^M); h starts at log(M / number of present fields), so that a document with fewer fields first scores
  as the renormalised mean of its present ones. An absent field contributes exactly 0 and its embedding
  is never read (it may hold anything, NaN included).

The score is the inner product of concatenated vectors, q' = concat_m(a_m(q) q) and
d' = concat_m(s_m(p_d) d^m) (M * D dims, not renormalised): queries are fused on the query side,
documents on the document side, and exact top-k search runs unchanged on the fused matrices.

One module does the math for training (inside the loss, with gradients) and for evaluation
(:func:`fuse_query_matrix` and :func:`fuse_document_matrices` convert numpy around it, no grad, fp32).
The presence logits are named ``presence_bias`` so that open_clip's weight-decay rule leaves them alone,
as it does the global logits (a vector); W gets weight decay, which pulls it toward the global weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from gcl_eval.util.errors import GclError

FUSION_FILE = "fusion.pt"
FORMAT = "gcl-eval/field-fusion"
FORMAT_VERSION = 1
ROWS_PER_CHUNK = 65536  # evaluation converts this many rows at a time (bounded memory on large corpora)


class FieldFusion(nn.Module):
    """Late fusion of the document fields ``fields`` (in this order) for embeddings of ``dim`` dimensions.

    ``init_weights``: the global field weights to start from (positive; default equal), e.g. a training
    recipe's document field weights 0.5/0.5.
    """

    def __init__(self, fields: Sequence[str], dim: int, init_weights: Sequence[float] | None = None):
        super().__init__()
        self.fields = tuple(str(f) for f in fields)
        if len(self.fields) < 2 or len(set(self.fields)) != len(self.fields):
            raise GclError(f"a learned field fusion needs at least two distinct document fields, got {self.fields}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise GclError(f"a field fusion needs a positive embedding dimension, got {dim!r}")
        self.dim = dim
        m = len(self.fields)
        weights = [1.0] * m if init_weights is None else [float(w) for w in init_weights]
        if len(weights) != m or not all(math.isfinite(w) and w > 0 for w in weights):
            raise GclError(f"initial field weights must be {m} positive numbers, got {tuple(weights)}")
        total = sum(weights)
        self.global_logits = nn.Parameter(torch.tensor([math.log(w / total) for w in weights]))
        self.query_proj = nn.Parameter(torch.zeros(m, dim))
        patterns = _patterns(m)
        counts = patterns.sum(dim=1, keepdim=True).clamp(min=1)
        self.presence_bias = nn.Parameter(torch.where(patterns, torch.log(m / counts.double()), 0.0).float())

    def field_weights(self, query: torch.Tensor) -> torch.Tensor:
        """a(q): (N, M), each row a softmax over the fields."""
        return torch.softmax(self.global_logits + query @ self.query_proj.T.to(query.dtype), dim=-1)

    def field_scales(self, present: torch.Tensor) -> torch.Tensor:
        """s(p): (N, M), exp(h[p, m]) where field m is present, exactly 0 where it is absent."""
        bits = 2 ** torch.arange(len(self.fields), device=present.device)
        pattern = (present.long() * bits).sum(dim=1)
        scales = self.presence_bias.exp()[pattern]
        return torch.where(present, scales, torch.zeros_like(scales))

    def fuse_queries(self, query: torch.Tensor) -> torch.Tensor:
        """q' = concat_m(a_m(q) q): (N, M * D)."""
        a = self.field_weights(query)
        return (a.unsqueeze(-1) * query.unsqueeze(1)).reshape(query.shape[0], -1)

    def fuse_documents(self, field_embeddings: Sequence[torch.Tensor],
                       present: torch.Tensor | None = None) -> torch.Tensor:
        """d' = concat_m(s_m(p) d^m): (N, M * D). ``field_embeddings``: one (N, D) tensor per field, in
        ``fields`` order; ``present``: (N, M) bool, True = present (default: all present)."""
        if len(field_embeddings) != len(self.fields):
            raise GclError(f"{len(field_embeddings)} document fields for a fusion of {len(self.fields)} "
                           f"({', '.join(self.fields)})")
        first = field_embeddings[0]
        n = first.shape[0]
        if present is None:
            present = torch.ones((n, len(self.fields)), dtype=torch.bool, device=first.device)
        if present.dtype != torch.bool or tuple(present.shape) != (n, len(self.fields)):
            raise GclError(f"document field masks must be bool ({n}, {len(self.fields)}), got "
                           f"{present.dtype} {tuple(present.shape)}")
        stacked = torch.stack([torch.where(present[:, m:m + 1], f, torch.zeros_like(f))
                               for m, f in enumerate(field_embeddings)], dim=1)
        scales = self.field_scales(present)
        return (scales.unsqueeze(-1) * stacked).reshape(n, -1)

    def forward(self, query: torch.Tensor, field_embeddings: Sequence[torch.Tensor], present=None):
        """(q', d'): the fused queries and documents of a batch (what the training loss scores)."""
        return self.fuse_queries(query), self.fuse_documents(field_embeddings, present)

    def global_weights(self) -> dict[str, float]:
        """The learned global field weights softmax(global_logits), by field."""
        weights = torch.softmax(self.global_logits.detach().double(), dim=0).cpu().tolist()
        return {name: round(w, 6) for name, w in zip(self.fields, weights)}

    def fingerprint(self) -> str:
        """sha256 of the fields, the dimension and every parameter's bytes (it keys the fused corpus)."""
        digest = hashlib.sha256(json.dumps({"format": FORMAT, "fields": self.fields, "dim": self.dim}).encode())
        for name, value in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def describe(self) -> dict:
        """The fusion as a run record shows it."""
        return {"kind": "learned", "fields": list(self.fields), "global_weights": self.global_weights(),
                "sha256": self.fingerprint()}

    def save(self, path) -> None:
        """Write the fusion (fields, dimension, parameters) to ``path`` atomically."""
        from gcl_eval.util.atomic import atomic_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_file(Path(path)) as tmp, open(tmp, "xb") as handle:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "fields": list(self.fields),
                        "dim": self.dim, "state": state}, handle)

    @classmethod
    def load(cls, path, device="cpu") -> "FieldFusion":
        """A fusion saved by :meth:`save`, in eval mode (read with torch.load(weights_only=True))."""
        path = Path(path)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # missing, truncated, or another program's file
            raise GclError(f"{path} is not a readable field fusion: {' '.join(str(err).split())[:200]}") from None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise GclError(f"{path} is not a gcl-eval field fusion")
        if saved.get("format_version") != FORMAT_VERSION:
            raise GclError(f"{path} has field-fusion format {saved.get('format_version')}; "
                           f"this gcl-eval reads {FORMAT_VERSION}")
        fusion = cls(saved["fields"], saved["dim"])
        try:
            fusion.load_state_dict(saved["state"])
        except (RuntimeError, KeyError) as err:
            raise GclError(f"{path}: its parameters do not fit its fields and dimension "
                           f"({str(err).splitlines()[0]})") from None
        return fusion.to(device).eval()


def _patterns(m: int) -> torch.Tensor:
    """(2^M, M) bool: row p has field k present where bit k of p is set."""
    return (torch.arange(2 ** m).unsqueeze(1) >> torch.arange(m)) & 1 == 1


# ------------------------------------------------------------------------------------------ numpy, for evaluation


def fuse_query_matrix(fusion: FieldFusion, queries: np.ndarray) -> np.ndarray:
    """q' of a query matrix (N x D float32) as float32 (N x M*D)."""
    return _chunked(len(queries), len(fusion.fields) * fusion.dim,
                    lambda rows: fusion.fuse_queries(_tensor(queries[rows], fusion)))


def fuse_document_matrices(fusion: FieldFusion, embeddings: Mapping[str, np.ndarray],
                           present: Mapping[str, np.ndarray]) -> np.ndarray:
    """d' of a corpus as float32 (N x M*D): ``embeddings`` and ``present`` by field name (N x D and (N,)
    bool each; rows of absent fields are never read)."""
    n = len(present[fusion.fields[0]])

    def fuse(rows: slice) -> torch.Tensor:
        fields = [_tensor(embeddings[name][rows], fusion) for name in fusion.fields]
        mask = np.stack([np.asarray(present[name][rows], dtype=bool) for name in fusion.fields], axis=1)
        return fusion.fuse_documents(fields, torch.from_numpy(mask).to(fields[0].device))

    return _chunked(n, len(fusion.fields) * fusion.dim, fuse)


def _tensor(rows: np.ndarray, fusion: FieldFusion) -> torch.Tensor:
    """A copy of ``rows`` as a float32 tensor on the fusion's device (a memory-mapped entry is read-only)."""
    return torch.from_numpy(np.array(rows, dtype=np.float32)).to(fusion.global_logits.device)


def _chunked(n: int, width: int, fuse) -> np.ndarray:
    out = np.empty((n, width), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n, ROWS_PER_CHUNK):
            rows = slice(start, min(start + ROWS_PER_CHUNK, n))
            out[rows] = fuse(rows).float().cpu().numpy()
    return out
