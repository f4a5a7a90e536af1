"""The encoder interface of dense retrieval: what DenseRetriever, the embedding cache and the protocol
call on a model (docs/evaluation.md, "Evaluate your own model from Python").

OpenClipEncoder (gcl_eval.retrieval.encoders) and the text-model encoder (baselines.text_encoder)
implement it; so can any object of yours, in numpy alone. `checked_encoder` wraps one so that what it
returns is verified (shape, dtype, unit rows) and a broken encoder fails with one line instead of
producing wrong numbers.
"""

from __future__ import annotations

import json
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from gcl_eval.data.dataset import Documents
from gcl_eval.util.errors import GclError

NORM_TOLERANCE = 1e-3  # |‖row‖ - 1| allowed for an "L2-normalised" float32 row


@runtime_checkable
class Encoder(Protocol):
    """A model that embeds queries and document fields into one space, scored by inner product.

    Optional attributes: ``batch_size`` (rows per encoding batch; torchrun shards the corpus in whole
    batches; default 256) and ``num_workers`` (processes that may read images while fingerprinting
    image content; default 0).
    """

    def fingerprint(self) -> str:
        """Everything that changes the bytes of an embedding (model name, weights digest, preprocessing,
        library versions, ...), as a string: the model part of the embedding cache's key. Change it
        whenever the embeddings change, or the cache serves stale ones."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """len(texts) x D float32, each row L2-normalised."""

    def encode_field(self, documents: Documents, field: str) -> tuple[np.ndarray, np.ndarray]:
        """(len(documents) x D float32, bool (len(documents),) presence mask) for field "title" (texts:
        documents.titles(), None where absent) or "image" (documents.image_refs(), read with
        documents.images / documents.load_image(doc_id)). Present rows L2-normalised; absent rows
        are ignored (zeros by convention)."""


class CheckedEncoder:
    """An Encoder whose outputs are verified; the defaults of the optional attributes filled in."""

    def __init__(self, inner: Encoder):
        missing = [name for name in ("fingerprint", "encode_queries", "encode_field")
                   if not callable(getattr(inner, name, None))]
        if missing:
            raise GclError(f"{type(inner).__name__} is not an encoder: it has no {', '.join(missing)} method "
                           "(gcl_eval.retrieval.encoder.Encoder)")
        self.inner = inner
        self.batch_size = int(getattr(inner, "batch_size", 256))
        self.num_workers = int(getattr(inner, "num_workers", 0))

    def fingerprint(self) -> str:
        value = self.inner.fingerprint()
        if not isinstance(value, str) or not value:
            raise GclError(f"{type(self.inner).__name__}.fingerprint() must return a non-empty string, got {value!r}")
        return json.dumps({"encoder": "python", "fingerprint": value}, sort_keys=True)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = self.inner.encode_queries(texts)
        return _checked(out, len(texts), np.ones(len(texts), dtype=bool), "encode_queries")

    def encode_field(self, documents: Documents, field: str) -> tuple[np.ndarray, np.ndarray]:
        result = self.inner.encode_field(documents, field)
        if not isinstance(result, tuple) or len(result) != 2:
            raise GclError(f"encode_field({field!r}) must return (embeddings, presence mask), got {type(result).__name__}")
        present = np.asarray(result[1])
        if present.dtype != bool or present.shape != (len(documents),):
            raise GclError(f"encode_field({field!r}): the presence mask must be bool of shape ({len(documents)},), "
                           f"got {present.dtype} {present.shape}")
        return _checked(result[0], len(documents), present, f"encode_field({field!r})"), present


def _checked(matrix, rows: int, present: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or matrix.shape[0] != rows:
        shape = getattr(matrix, "shape", type(matrix).__name__)
        raise GclError(f"{what} must return a {rows} x D numpy array, got {shape}")
    if matrix.dtype != np.float32:
        raise GclError(f"{what} must return float32, got {matrix.dtype}")
    norms = np.linalg.norm(matrix[present], axis=1)
    bad = ~(np.abs(norms - 1.0) <= NORM_TOLERANCE)  # NaN is bad too
    if bad.any():
        row = int(np.flatnonzero(present)[np.flatnonzero(bad)[0]])
        raise GclError(f"{what}: row {row} is not L2-normalised (norm {norms[bad][0]:.4g}); "
                       f"{int(bad.sum())} such rows")
    return matrix


def checked_encoder(encoder: Encoder) -> CheckedEncoder:
    return encoder if isinstance(encoder, CheckedEncoder) else CheckedEncoder(encoder)
