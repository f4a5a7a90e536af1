"""Text-only encoders for evaluation (E5 conventions; the packaged MiniLM): the protocol's encoder interface.

Wraps trainers.text_model.TextEncoder, the one place that builds HF text models, so a zero-shot model
and a fine-tuned checkpoint are encoded by the same code. Queries get the "query" role and titles the
"document" role (E5's "query: " / "passage: " prefixes, or any other pair, when the model uses them),
token states are pooled as the model states (mean, CLS or last token); documents without a title are
absent, and a text model has no image field.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from gcl_eval.util.console import track
from gcl_eval.data.dataset import Documents
from gcl_eval.retrieval import EVAL_PRECISIONS  # bf16: the transformer under autocast, pooling in fp32
from gcl_eval.util.errors import GclError


class TextModelEncoder:
    """encode_queries / encode_field(documents, "title") / fingerprint() over a TextEncoder."""

    num_workers = 0  # nothing to decode in worker processes

    def __init__(self, encoder, weights_sha256: str, *, batch_size: int = 128, device: str = "cpu",
                 precision: str = "fp32"):
        if precision not in EVAL_PRECISIONS:
            raise GclError(f"unknown precision {precision!r}; known: {', '.join(EVAL_PRECISIONS)}")
        self.precision = precision
        self.encoder = encoder.to(device).eval()
        self.weights_sha256 = weights_sha256
        self.batch_size = batch_size
        self.device = device

    def fingerprint(self) -> str:
        import torch
        import transformers

        return json.dumps({
            "encoder": "text", "name": self.encoder.name, "weights_sha256": self.weights_sha256,
            "prefixes": self.encoder.prefixes, "max_length": self.encoder.max_length, "pooling": self.encoder.pooling,
            "device_type": str(self.device).split(":")[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "normalise": "l2-fp32", "precision": self.precision,
            "batching": "by-length",
        }, sort_keys=True, separators=(",", ":"))

    def _encode(self, texts: list[str], role: str, description: str) -> np.ndarray:
        """Batches of similar length (texts sorted by length, results put back in input order): a batch
        is padded to its longest text, so mixing lengths wastes most of the compute on padding."""
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        parts = []
        starts = range(0, len(texts), self.batch_size)
        for start in track(starts, description, total=len(starts)):
            batch = [texts[i] for i in order[start:start + self.batch_size]]
            parts.append(self.encoder.encode_texts(batch, role, batch_size=self.batch_size, device=self.device,
                                                   dtype=torch.bfloat16 if self.precision == "bf16" else None))
        dim = self.encoder.backbone.config.hidden_size
        if not parts:
            return np.zeros((0, dim), dtype=np.float32)
        out = np.empty((len(texts), dim), dtype=np.float32)
        out[np.asarray(order, dtype=np.int64)] = np.concatenate(parts)
        return out

    def encode_queries(self, texts) -> np.ndarray:
        return self._encode([str(t) for t in texts], "query", "encoding queries")

    def encode_field(self, documents: Documents, field: str) -> tuple[np.ndarray, np.ndarray]:
        if field != "title":
            raise GclError(f"a text model encodes titles only, not {field!r}")
        titles = documents.titles()
        present = np.array([t is not None for t in titles], dtype=bool)
        encoded = self._encode([t for t in titles if t is not None], "document", "encoding titles")
        out = np.zeros((len(titles), encoded.shape[1]), dtype=np.float32)
        out[present] = encoded
        return out, present


def text_model_sha256(encoder) -> str:
    """Hash of a text model's parameters (zero-shot models have no checkpoint file to hash)."""
    from gcl_eval.retrieval.models import state_sha256

    return state_sha256(encoder)
