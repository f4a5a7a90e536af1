"""Dense retrieval for the protocol: an encoder, the embedding cache, exact inner-product search.

Corpus embeddings are kept per (corpus, field weights) for the life of the retriever, so corpus_1 is
encoded once for in_domain and novel_query, and corpus_2 once for novel_corpus and zero_shot; the
on-disk cache makes a second run skip encoding altogether. Field weights may differ per split
(the paper's "0.5/0.0": image and title in-domain, title only on the cold-start splits). A cached
corpus is memory-mapped (gcl_eval.retrieval.embedding_cache), so only the rows a search reads are in
memory, and the search works through the queries and the corpus in tiles (gcl_eval.retrieval.topk).

Under torchrun (torch.distributed initialised) the corpus is sharded: each rank holds a contiguous,
batch-aligned range of rows (`shard_rows`), the rows it encodes, and searches only those; the ranks then
exchange their top-k lists (queries x k ids and scores each, never the corpus) and merge them exactly
(`topk.merge_topk`), so every rank returns what one process searching the whole corpus returns, ties
included. Shards end on batch boundaries, so every batch is the one a single process would encode and
the embeddings are bit-identical to a one-process run. How the shard is obtained:

- with the embedding cache: the ranks look the entry up together; on a hit each maps the file and
  reads only its rows; on a miss each encodes its shard, the field matrices are gathered once so that
  rank 0 can pool and write the entry, and every rank keeps only its own rows;
- without the cache: each rank encodes and pools its own shard; nothing but the top-k lists travels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from gcl_eval.data.dataset import Documents
from gcl_eval.retrieval.embedding_cache import EmbeddingCache, encode_corpus, encode_fused_corpus, encode_query_texts
from gcl_eval.retrieval.encoder import Encoder
from gcl_eval.retrieval.fields import FieldWeights
from gcl_eval.util import distributed
from gcl_eval.util.errors import GclError


@dataclass(frozen=True)
class CorpusShard:
    """The corpus rows this process searches: rows [offset, offset + len(embeddings)) of `total`
    (embeddings None for an empty shard; the whole corpus without torchrun)."""

    embeddings: np.ndarray | None
    offset: int
    total: int


class DenseRetriever:
    """`search` for the protocol over an Encoder (gcl_eval.retrieval.encoder).

    ``fusion``: a learned field fusion (gcl_eval.retrieval.fusion.FieldFusion) that scores documents
    instead of the field weights: the corpus matrix is the fused per-field embeddings and the queries are
    fused too, the same on every split (split field weights then cannot be given).
    """

    def __init__(self, encoder: Encoder, *, doc_weights: FieldWeights, split_doc_weights: Mapping[str, FieldWeights] | None = None,
                 cache: EmbeddingCache | None = None, device: str | None = None, fusion=None):
        if fusion is not None and split_doc_weights:
            raise GclError("a learned field fusion scores every split the same way: give no cold-start field weights")
        self.fusion = fusion
        self.inner_encoder = encoder
        self.encoder = ShardedEncoder(encoder) if distributed.is_distributed() else encoder
        self.doc_weights = doc_weights
        self.split_doc_weights = dict(split_doc_weights or {})
        self.cache = cache
        self.device = device
        self._corpora: dict[tuple[str, str], CorpusShard] = {}

    def weights_for(self, split: str) -> FieldWeights:
        return self.split_doc_weights.get(split, self.doc_weights)

    def describe(self) -> dict:
        if self.fusion is not None:
            return {"doc_fields": f"learned({','.join(self.fusion.fields)})", "split_doc_fields": {},
                    "fusion": self.fusion.describe()}
        weights = {split: str(w) for split, w in self.split_doc_weights.items()}
        return {"doc_fields": str(self.doc_weights), "split_doc_fields": weights}

    def corpus_shard(self, corpus_name: str, documents: Documents, weights: FieldWeights) -> CorpusShard:
        """This process's rows of the pooled (or fused) corpus embeddings (all of them without torchrun)."""
        key = (corpus_name, "fusion" if self.fusion is not None else str(weights))
        if key not in self._corpora:
            self._corpora[key] = self._encode_shard(documents, weights)
        return self._corpora[key]

    def _encode_corpus(self, encoder, documents: Documents, weights: FieldWeights, cache) -> np.ndarray:
        """The corpus matrix: pooled by ``weights``, or fused by the learned fusion."""
        if self.fusion is not None:
            return encode_fused_corpus(encoder, documents, self.fusion, cache)
        return encode_corpus(encoder, documents, weights, cache)

    def _encode_shard(self, documents: Documents, weights: FieldWeights) -> CorpusShard:
        n = len(documents)
        if not distributed.is_distributed():
            return CorpusShard(self._encode_corpus(self.encoder, documents, weights, self.cache), 0, n)
        lo, hi = shard_rows(n, self.inner_encoder.batch_size)
        if self.cache is None:
            shard = Documents(documents.table.iloc[lo:hi], documents.images)
            local = self._encode_corpus(self.inner_encoder, shard, weights, None) if hi > lo else None
            return CorpusShard(local, lo, n)
        full = self._encode_corpus(self.encoder, documents, weights, self.cache)
        # A memory-mapped entry stays mapped (only these rows are ever read); an array just computed is
        # copied down to this rank's rows so that the whole matrix can be freed.
        rows = full[lo:hi] if isinstance(full, np.memmap) else np.array(full[lo:hi])
        return CorpusShard(rows if hi > lo else None, lo, n)

    def search(self, split: str, query_texts: Sequence[str], corpus_name: str, documents: Documents,
               k: int) -> tuple[np.ndarray, np.ndarray]:
        shard = self.corpus_shard(corpus_name, documents, self.weights_for(split))
        queries = encode_query_texts(self.encoder, query_texts, self.cache)
        if self.fusion is not None:
            from gcl_eval.retrieval.fusion import fuse_query_matrix

            queries = fuse_query_matrix(self.fusion, queries)
        return search_shards(queries, shard, k, device=self.device)


def search_shards(queries: np.ndarray, shard: CorpusShard, k: int, *, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of `queries` over the whole corpus, each rank searching its shard; every rank gets
    the merged result, identical to topk.search over the whole corpus (without torchrun, it is that)."""
    from gcl_eval.retrieval.topk import merge_topk, search

    if not distributed.is_distributed():
        return search(queries, shard.embeddings, k, device=device)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise GclError(f"k must be an integer of at least 1, got {k!r}")  # on every rank, before any exchange
    if shard.total == 0:
        raise GclError("corpus is empty: nothing to search (expected at least one document row)")
    k_all = min(int(k), shard.total)
    if shard.embeddings is not None:
        ids, scores = search(queries, shard.embeddings, k_all, device=device)
        ids += shard.offset
    else:
        ids = np.empty((len(queries), 0), dtype=np.int64)
        scores = np.empty((len(queries), 0), dtype=np.float32)
    lists = gather_topk(ids, scores, k_all)
    return merge_topk(lists, k_all)


def gather_topk(ids: np.ndarray, scores: np.ndarray, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every rank's (ids, scores) top-k lists, in rank order, on every rank. A list shorter than `width`
    (a shard with fewer rows) is padded with id -1 and score -inf, which merge_topk never keeps."""
    import torch

    pad = width - ids.shape[1]
    if pad:
        ids = np.concatenate([ids, np.full((len(ids), pad), -1, dtype=np.int64)], axis=1)
        scores = np.concatenate([scores, np.full((len(scores), pad), -np.inf, dtype=np.float32)], axis=1)
    device = distributed.collective_device()
    all_ids = distributed.all_gather_no_grad(torch.from_numpy(np.ascontiguousarray(ids)).to(device))
    all_scores = distributed.all_gather_no_grad(torch.from_numpy(np.ascontiguousarray(scores)).to(device))
    per_rank = len(ids)
    return [(all_ids[r * per_rank:(r + 1) * per_rank].cpu().numpy(),
             all_scores[r * per_rank:(r + 1) * per_rank].cpu().numpy()) for r in range(distributed.world_size())]


def shard_rows(n: int, batch_size: int) -> tuple[int, int]:
    """This rank's rows [lo, hi) of n: a contiguous run of whole batches (the last rank may hold the short
    last batch; a rank holds none when there are fewer batches than ranks)."""
    n_batches = -(-n // batch_size)
    rank, world = distributed.rank(), distributed.world_size()
    lo, hi = rank * n_batches // world, (rank + 1) * n_batches // world
    return min(lo * batch_size, n), min(hi * batch_size, n)


class ShardedEncoder:
    """Wraps an encoder so that each rank encodes whole batches of its shard and all ranks get all rows
    (queries, and the corpus fields of a cache miss, which rank 0 pools and writes)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def encode_field(self, documents: Documents, field: str) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = shard_rows(len(documents), self.inner.batch_size)
        shard = Documents(documents.table.iloc[lo:hi], documents.images)
        embeddings, present = self.inner.encode_field(shard, field)
        return gather_rows(embeddings), gather_rows(present)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        lo, hi = shard_rows(len(texts), self.inner.batch_size)
        return gather_rows(self.inner.encode_queries(texts[lo:hi]))


def gather_rows(array: np.ndarray) -> np.ndarray:
    """Concatenate every rank's rows in rank order, on every rank (uneven shards allowed)."""
    import torch

    local = torch.from_numpy(np.ascontiguousarray(array)).to(distributed.collective_device())
    return distributed.all_gather_no_grad(local).cpu().numpy()
