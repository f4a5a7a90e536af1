"""Dense retrieval for the protocol: an encoder, the embedding cache, exact inner-product search.

Corpus embeddings are kept per (corpus, field weights) for the life of the retriever, so corpus_1 is
encoded once for in_domain and novel_query, and corpus_2 once for novel_corpus and zero_shot; the
on-disk cache makes a second run skip encoding altogether. Field weights may differ per split
(the paper's "0.5/0.0": image and title in-domain, title only on the cold-start splits).

Under torchrun (torch.distributed initialised), encoding is split across ranks: each encodes whole
batches of its contiguous shard, every rank gathers the full matrix, and rank 0 alone searches.
Shards end on batch boundaries, so every batch is the one a single process would encode and the
embeddings are bit-identical to a one-process run.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from gcl_eval.data.dataset import Documents
from gcl_eval.retrieval.embedding_cache import EmbeddingCache, encode_corpus, encode_query_texts
from gcl_eval.retrieval.fields import FieldWeights
from gcl_eval.util import distributed


class DenseRetriever:
    """`search` for the protocol over an encoder with encode_field/encode_queries/fingerprint."""

    def __init__(self, encoder, *, doc_weights: FieldWeights, split_doc_weights: Mapping[str, FieldWeights] | None = None,
                 cache: EmbeddingCache | None = None, device: str | None = None):
        self.encoder = ShardedEncoder(encoder) if distributed.is_distributed() else encoder
        self.doc_weights = doc_weights
        self.split_doc_weights = dict(split_doc_weights or {})
        self.cache = cache
        self.device = device
        self._corpora: dict[tuple[str, str], np.ndarray] = {}

    def weights_for(self, split: str) -> FieldWeights:
        return self.split_doc_weights.get(split, self.doc_weights)

    def describe(self) -> dict:
        weights = {split: str(w) for split, w in self.split_doc_weights.items()}
        return {"doc_fields": str(self.doc_weights), "split_doc_fields": weights}

    def corpus_embeddings(self, corpus_name: str, documents: Documents, weights: FieldWeights) -> np.ndarray:
        key = (corpus_name, str(weights))
        if key not in self._corpora:
            self._corpora[key] = encode_corpus(self.encoder, documents, weights, self.cache)
        return self._corpora[key]

    def search(self, split: str, query_texts: Sequence[str], corpus_name: str, documents: Documents,
               k: int) -> tuple[np.ndarray, np.ndarray]:
        from gcl_eval.retrieval.topk import search

        corpus = self.corpus_embeddings(corpus_name, documents, self.weights_for(split))
        queries = encode_query_texts(self.encoder, query_texts, self.cache)
        if distributed.rank() != 0:  # the other ranks only helped encode
            return np.full((len(query_texts), 1), -1, dtype=np.int64), np.zeros((len(query_texts), 1), np.float32)
        return search(queries, corpus, k, device=self.device)


class ShardedEncoder:
    """Wraps an encoder so that each rank encodes whole batches of its shard and all ranks get all rows."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def _bounds(self, n: int) -> tuple[int, int]:
        batch = self.inner.batch_size
        n_batches = -(-n // batch)
        rank, world = distributed.rank(), distributed.world_size()
        lo, hi = rank * n_batches // world, (rank + 1) * n_batches // world
        return min(lo * batch, n), min(hi * batch, n)

    def encode_field(self, documents: Documents, field: str) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._bounds(len(documents))
        shard = Documents(documents.table.iloc[lo:hi], documents.images)
        embeddings, present = self.inner.encode_field(shard, field)
        return gather_rows(embeddings), gather_rows(present)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        lo, hi = self._bounds(len(texts))
        return gather_rows(self.inner.encode_queries(texts[lo:hi]))


def gather_rows(array: np.ndarray) -> np.ndarray:
    """Concatenate every rank's rows in rank order, on every rank (uneven shards allowed)."""
    import torch

    local = torch.from_numpy(np.ascontiguousarray(array)).to(distributed.collective_device())
    return distributed.all_gather_no_grad(local).cpu().numpy()
