"""Content-addressed embedding cache: an embedding matrix is computed once per model, role, field and content.

Key = sha256 of the canonical JSON of the key parts: the encoder fingerprint (architecture, weights
hash, preprocessing, tokenizer, precision, device type, library versions), the role (query or
document), the field (per-field entries) or the positive field weights (pooled entries), and the
content fingerprint of what was encoded. Nothing is keyed by a file path alone.

Content fingerprints (what a cache hit still costs: hashing titles, a stat per image file, or
reading every image's bytes for byte stores):
- texts (queries, titles): sha256 of the ids and the exact strings;
- images in files: doc id, path, size and mtime (ns) of every file (as make/rsync do): replacing an
  image file misses the cache, copying a dataset without keeping mtimes does too (safe side);
- images in byte stores (parquet columns, generated images): a blake2b digest of every image's
  bytes, read in DataLoader workers. Reference names alone would not do: two synthetic worlds with
  the same ids but another image size have the same references and different pixels.

Two levels: per-field matrices (the expensive part, reused when only a field weight changes) and
the pooled matrix (keyed also by the weights), or the fused matrix of a learned field fusion (keyed
by the fusion's fingerprint instead). Files: <root>/<key[:2]>/<key>.npy plus <key>.json,
a sidecar with the key parts, shape, dtype and a blake2b checksum of the array bytes. Both are
written atomically (gcl_eval.util.atomic; the sidecar last: it commits the entry), and an entry is
looked up and built under a file lock (.<key>.lock beside them), so two processes that need the
same entry compute it once: the second waits and loads it. A truncated, corrupt or mismatching entry is reported
with a CacheWarning and recomputed, never a crash; a cache that cannot be written is reported the
same way and the computed array is still returned (a read-only cache is used without locks, and
so is the cache under torchrun, where the ranks compute each entry together).

A stored entry is returned memory-mapped (read-only, np.load(mmap_mode="r")): a million-document
matrix costs no process memory until its rows are read (the checksum is read from the file in
chunks), and a rank of a sharded evaluation maps in only its own rows. Under torchrun the ranks agree on every lookup (a hit only
when every rank can use the entry, else all compute it together) and rank 0 alone writes the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ContextManager, Mapping, Sequence

import numpy as np
import torch

from gcl_eval.util import distributed
from gcl_eval.util.atomic import atomic_file, atomic_write_text, file_lock
from gcl_eval.util.paths import cache_dir, mark_used
from gcl_eval.util.console import track
from gcl_eval.data.dataset import Documents, ImageStore
from gcl_eval.util.errors import GclError
from gcl_eval.retrieval.fields import FieldWeights, pool_fields

CACHE_FORMAT = 1  # bump when the way entries are computed or stored changes


class CacheWarning(UserWarning):
    """A cache entry was unusable (and recomputed) or could not be written."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # computed, including recomputed corrupt entries
    corrupt: int = 0  # entries found unusable

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class EmbeddingCache:
    """Arrays stored as .npy under `root` (default: the gcl-eval cache folder's `embeddings`)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir("embeddings")
        self.stats = CacheStats()

    @staticmethod
    def key(key_parts: Mapping) -> str:
        """sha256 of the canonical JSON of the key parts (sorted keys, no whitespace, no NaN)."""
        return hashlib.sha256(_canonical({"cache_format": CACHE_FORMAT, **key_parts}).encode()).hexdigest()

    def paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def get_or_compute(self, key_parts: Mapping, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The stored array for `key_parts`, or compute() stored and returned.

        The entry is locked while it is looked up and built, so a second process asking for the same
        entry waits and then loads it instead of computing it again.
        """
        key = self.key(key_parts)
        with self._entry_lock(key):
            array = self._load(key, key_parts)
            if not _on_every_rank(array is not None):
                array = None  # under torchrun the ranks compute an entry together, so they agree on a hit
            if array is not None:
                self.stats.hits += 1
                return array
            self.stats.misses += 1
            array = compute()
            if not isinstance(array, np.ndarray):
                raise TypeError(f"compute() returned {type(array).__name__}, expected a numpy array")
            self._store(key, key_parts, array)
        return array

    def _entry_lock(self, key: str) -> ContextManager:
        """The entry's file lock (best effort: a read-only cache is read unlocked). Not under torchrun:
        there the ranks compute an entry together (each encodes a shard, then all gather), so one rank
        holding the lock would stall the others' share."""
        if distributed.is_distributed():
            return nullcontext(False)
        npy, _ = self.paths(key)
        return file_lock(npy.with_suffix(""), best_effort=True)

    def _load(self, key: str, key_parts: Mapping) -> np.ndarray | None:
        npy, meta_path = self.paths(key)
        if not meta_path.exists():
            return None  # never committed (an orphan .npy from a killed writer is overwritten)
        try:
            meta = json.loads(meta_path.read_text())
            array = np.load(npy, mmap_mode="r", allow_pickle=False)
            problem = None
            if meta.get("key_parts") != json.loads(_canonical(key_parts)):
                problem = "its key parts differ"
            elif list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
                problem = f"shape/dtype {array.shape} {array.dtype} differ from {meta['shape']} {meta['dtype']}"
            elif _file_checksum(npy, array) != meta["blake2b"]:
                problem = "checksum mismatch"
        except Exception as err:  # truncated or garbled .npy/.json, missing .npy, unreadable file
            problem = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        if problem is None:
            mark_used(meta_path)
            return array
        self.stats.corrupt += 1
        warnings.warn(f"embedding cache entry {npy} is unusable ({problem}); recomputing", CacheWarning, stacklevel=3)
        return None

    def _store(self, key: str, key_parts: Mapping, array: np.ndarray) -> None:
        if not distributed.is_main_process():
            return  # under torchrun every rank holds the same array; rank 0 alone writes it
        npy, meta_path = self.paths(key)
        array = np.ascontiguousarray(array)
        meta = {"key": key, "key_parts": json.loads(_canonical(key_parts)), "shape": list(array.shape),
                "dtype": str(array.dtype), "blake2b": _checksum(array)}
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(npy) as tmp, open(tmp, "xb") as handle:
                np.save(handle, array, allow_pickle=False)
            # last: an entry exists only once both files are in place
            atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
        except OSError as err:
            warnings.warn(f"embedding cache entry {npy} not written ({err}); continuing without it",
                          CacheWarning, stacklevel=3)


def _file_checksum(npy: Path, array: np.ndarray) -> str:
    """_checksum of a loaded entry, read from its file in chunks: the same digest, without mapping every
    page of a large matrix into the process (a memory-mapped entry's rows are read only where used)."""
    if not isinstance(array, np.memmap):
        return _checksum(array)
    digest, remaining = hashlib.blake2b(), array.nbytes
    with open(npy, "rb") as handle:
        handle.seek(array.offset)
        while remaining > 0:
            chunk = handle.read(min(remaining, 16 * 2**20))
            if not chunk:
                break  # shorter than its header says: the digest will not match
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _on_every_rank(flag: bool) -> bool:
    """True when `flag` is true on every rank (just `flag` without a process group)."""
    if not distributed.is_distributed():
        return flag
    return all(distributed.gather_objects(bool(flag)))


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _checksum(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).view(np.uint8).reshape(-1)).hexdigest()


# ------------------------------------------------------------------------------ content fingerprints


def texts_fingerprint(texts: Sequence[str]) -> str:
    """sha256 of the texts, in order (queries: the row order is the embedding row order)."""
    return hashlib.sha256(_canonical(["texts", list(texts)]).encode()).hexdigest()


def field_fingerprint(documents: Documents, field: str, *, num_workers: int = 0) -> str:
    """Content hash of one document field over the whole corpus, in table order (module docstring)."""
    ids = [str(d) for d in documents.ids]
    if field == "title":
        return hashlib.sha256(_canonical(["title", ids, documents.titles()]).encode()).hexdigest()
    if field != "image":
        raise GclError(f"documents have no field {field!r}")
    refs = documents.image_refs()
    if documents.images.is_file_backed():
        stats = [None if ref is None else _file_stat(doc_id, ref) for doc_id, ref in zip(ids, refs)]
        return hashlib.sha256(_canonical(["image-files", ids, refs, stats]).encode()).hexdigest()
    digests = _byte_digests(documents.images, ids, refs, num_workers)
    return hashlib.sha256(_canonical(["image-bytes", ids, refs, digests]).encode()).hexdigest()


def _file_stat(doc_id: str, ref: str) -> list[int]:
    try:
        st = os.stat(ref)
    except OSError as err:
        raise GclError(f"document {doc_id!r}: image {ref} is not found ({type(err).__name__}: {err.strerror})") from None
    return [st.st_size, st.st_mtime_ns]


class _ImageDigests(torch.utils.data.Dataset):
    """(position, blake2b hex of the image bytes | None, error line | None), for DataLoader workers."""

    def __init__(self, store: ImageStore, doc_ids: list[str], refs: list[str]):
        self.store, self.doc_ids, self.refs = store, doc_ids, refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        from gcl_eval.retrieval.encoders import image_error

        try:
            data = self.store.read_bytes(self.refs[i])
        except Exception as err:
            return i, None, image_error(self.doc_ids[i], self.refs[i], err)
        return i, hashlib.blake2b(data, digest_size=16).hexdigest(), None


def _byte_digests(store: ImageStore, ids: list[str], refs: list[str | None], num_workers: int) -> list[str | None]:
    from gcl_eval.retrieval.encoders import worker_loader

    rows = [i for i, ref in enumerate(refs) if ref is not None]
    items = _ImageDigests(store, [ids[i] for i in rows], [refs[i] for i in rows])
    digests: list[str | None] = [None] * len(refs)

    def batches():
        for positions, values, errors in worker_loader(items, 256, num_workers):
            if errors:
                raise GclError(errors[0])
            for position, value in zip(positions, values):
                digests[rows[position]] = value
            yield from range(len(positions))

    for _ in track(batches(), "hashing images", total=len(rows)):
        pass
    return digests


# ------------------------------------------------------------------------------------ tying it up


def encode_corpus(encoder, documents: Documents, weights: FieldWeights, cache: EmbeddingCache | None = None) -> np.ndarray:
    """Pooled document embeddings (N x D float32, L2-normalised; rows in documents' table order).

    As the reference protocol pools them: each positive-weight field encoded and normalised (per-field cache entries),
    the weighted mean over present fields with renormalised weights, normalised again (pooled
    entry, keyed also by the weights). A document with none of the weighted fields is an error
    naming it. `encoder` is an OpenClipEncoder (or anything with fingerprint(), num_workers and
    encode_field(documents, field) -> (embeddings, present)).
    """
    active = weights.active()
    corpus = corpus_fields(encoder, documents, active, cache, scoring=f"weights {weights}")
    w = weights.as_dict()
    parts = corpus.key_parts(weights={name: float(w[name]) for name in active})
    return _cached(cache, parts, lambda: pool_fields(corpus.embeddings(), corpus.present, weights))


def encode_fused_corpus(encoder, documents: Documents, fusion, cache: EmbeddingCache | None = None) -> np.ndarray:
    """Fused document embeddings d' (N x M*D float32, gcl_eval.retrieval.fusion) of a learned field fusion:
    the per-field entries of :func:`encode_corpus`, fused; the fused entry is keyed by the fusion's
    fingerprint instead of field weights."""
    from gcl_eval.retrieval.fusion import fuse_document_matrices

    corpus = corpus_fields(encoder, documents, fusion.fields, cache, scoring="learned fusion")
    parts = corpus.key_parts(fusion=fusion.fingerprint())
    return _cached(cache, parts, lambda: fuse_document_matrices(fusion, corpus.embeddings(), corpus.present))


@dataclass(frozen=True)
class CorpusFields:
    """A corpus's per-field embeddings as the cache keys them, encoded (or loaded) only when asked for: a
    hit on a pooled or fused entry never reads them."""

    encoder: object
    documents: Documents
    fields: tuple[str, ...]
    present: dict[str, np.ndarray]  # by field: bool (N,)
    model: str  # the encoder's fingerprint
    content: dict[str, str]  # by field: its content fingerprint
    cache: EmbeddingCache | None

    def key_parts(self, **scoring) -> dict:
        """Key parts of an entry computed from these fields; ``scoring`` says how (weights=..., fusion=...)."""
        return {"encoder": self.model, "role": "document", **scoring, "content": self.content,
                "rows": len(self.documents)}

    def embedding(self, name: str) -> np.ndarray:
        """Field ``name``'s matrix (N x D; rows of absent fields hold whatever the encoder left there)."""
        parts = {"encoder": self.model, "role": "document", "field": name, "content": self.content[name],
                 "rows": len(self.documents)}
        return _cached(self.cache, parts, lambda: self.encoder.encode_field(self.documents, name)[0])

    def embeddings(self) -> dict[str, np.ndarray]:
        return {name: self.embedding(name) for name in self.fields}


def corpus_fields(encoder, documents: Documents, fields, cache: EmbeddingCache | None, *,
                  scoring: str) -> CorpusFields:
    """The per-field embeddings of ``fields`` (not yet encoded) with their presence masks; a document with
    none of them is an error naming it (``scoring``: how the fields are combined, for that message)."""
    from gcl_eval.retrieval.encoders import field_present

    fields = tuple(fields)
    present = {name: field_present(documents, name) for name in fields}
    empty = ~np.logical_or.reduce([present[name] for name in fields])
    if empty.any():
        doc_id = documents.ids[int(np.flatnonzero(empty)[0])]
        raise GclError(f"document {doc_id!r} has none of the fields {', '.join(fields)} ({scoring}): "
                       f"nothing to embed ({int(empty.sum())} such documents)")
    content = {name: field_fingerprint(documents, name, num_workers=encoder.num_workers) for name in fields}
    return CorpusFields(encoder, documents, fields, present, encoder.fingerprint(), content, cache)


def encode_query_texts(encoder, texts: Sequence[str], cache: EmbeddingCache | None = None) -> np.ndarray:
    """Query embeddings (N x D float32, L2-normalised), cached by the texts in order."""
    texts = list(texts)
    parts = {"encoder": encoder.fingerprint(), "role": "query", "field": "query",
             "content": texts_fingerprint(texts), "rows": len(texts)}
    return _cached(cache, parts, lambda: encoder.encode_queries(texts))


def _cached(cache: EmbeddingCache | None, parts: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
    return compute() if cache is None else cache.get_or_compute(parts, compute)
