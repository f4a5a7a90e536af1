"""Open_clip encoders: records of fields -> L2-normalised float32 matrices (docs/evaluation.md).

Both towers of one open_clip model: the text tower for queries and titles, the image tower for
product images. Encoding is batched under torch.inference_mode; bf16 runs under autocast on any device,
fp16 on CUDA only (elsewhere it falls back to fp32). Images are read, decoded and preprocessed in torch
DataLoader worker processes, so the model never waits on PIL. Every field is L2-normalised on its
own in fp32; pooling the fields of a record is gcl_eval.retrieval.fields.pool_fields.

A missing field value (title None, image None) is not encoded: its row is zeros and its `present`
flag False. An image reference that cannot be read or decoded is bad input, reported as one
GclError naming the document and the reference (never silently dropped: that would change numbers).
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import re
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gcl_eval.util.console import track
from gcl_eval.data.dataset import Documents, ImageStore
from gcl_eval.util.errors import GclError
from gcl_eval.retrieval.fields import DOC_FIELDS, MODALITY, FieldWeights
from gcl_eval.retrieval.models import LoadedModel, open_clip_module, text_pad_id, trim_padding

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def field_present(documents: Documents, field: str) -> np.ndarray:
    """Bool mask (len(documents),): the document has a value for `field` (title or image)."""
    if field == "title":
        values = documents.titles()
    elif field == "image":
        values = documents.image_refs()
    else:
        raise GclError(f"documents have no field {field!r}; document fields: {', '.join(DOC_FIELDS)}")
    return np.fromiter((v is not None for v in values), dtype=bool, count=len(values))


class OpenClipEncoder:
    """Both towers of an open_clip model, batched.

    `loaded.model` is moved to `device` and put in eval mode. `num_workers` image-decoding worker
    processes (0 = decode in this process). `precision`: bf16 autocasts on any device; fp16 only on CUDA
    (elsewhere the encoder runs fp32 and says so in its fingerprint).
    """

    def __init__(self, loaded: LoadedModel, *, device: str = "cpu", batch_size: int = 256,
                 num_workers: int = 0, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise GclError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise GclError(f"batch size must be >= 1 (got {batch_size})")
        if num_workers < 0:
            raise GclError(f"num_workers must be >= 0 (got {num_workers})")
        self.loaded = loaded
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            warnings.warn(f"precision fp16 is used on CUDA only; encoding on {self.device.type} in fp32",
                          stacklevel=2)
            precision = "fp32"
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.model = loaded.model.to(self.device).eval()
        self.tokenizer = loaded.tokenizer
        self.preprocess = loaded.preprocess_val
        self.pad_id = text_pad_id(self.model)  # a Hugging Face text tower: batches by length, padding cut
        self._dim: int | None = None

    # --------------------------------------------------------------------------------- identity

    def fingerprint(self) -> str:
        """Canonical JSON of everything that changes the bytes of an embedding (the cache key's model part).

        The weights are identified by LoadedModel.weights_sha256, taken when the model was loaded:
        an encoder over a model trained in place afterwards must be rebuilt from the saved checkpoint.
        Library versions and the device type are in because kernels differ between them.
        """
        open_clip = open_clip_module()
        preprocess = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(self.preprocess))  # no memory addresses
        return json.dumps({
            "encoder": "open_clip",
            "arch": self.loaded.arch,
            "weights_sha256": self.loaded.weights_sha256,
            "preprocess": preprocess,
            "tokenizer": type(self.tokenizer).__name__,
            "context_length": getattr(self.tokenizer, "context_length", None),
            "precision": self.precision,
            "device_type": self.device.type,
            "torch": torch.__version__,
            "open_clip": getattr(open_clip, "__version__", "unknown"),
            "normalise": "l2-fp32",
        }, sort_keys=True, separators=(",", ":"))

    @property
    def dim(self) -> int:
        """Embedding width (found by encoding one empty text, so any architecture works)."""
        if self._dim is None:
            tokens = self.tokenizer([""]).to(self.device)
            self._dim = int(self._embed(self.model.encode_text, tokens).shape[1])
        return self._dim

    # ------------------------------------------------------------------------------------ texts

    def encode_texts(self, texts: Sequence[str], description: str = "encoding texts") -> np.ndarray:
        """N x D float32, each row L2-normalised; the model's own tokenizer (truncates to its context)."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise GclError(f"text {i} is {type(text).__name__}, expected a string")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.arange(len(texts))
        if self.pad_id is not None:  # batches of similar length: each is cut to its longest text
            order = np.asarray(sorted(order, key=lambda i: (len(texts[i]), i)), dtype=np.int64)

        def batches() -> Iterable[int]:
            for start in range(0, len(texts), self.batch_size):
                rows = order[start:start + self.batch_size]
                tokens = trim_padding(self.tokenizer([texts[i] for i in rows]), self.pad_id)
                out[rows] = self._embed(self.model.encode_text, tokens.to(self.device))
                yield from range(len(rows))  # progress counts samples, not batches

        _drain(track(batches(), description, total=len(texts)))
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query texts through the text tower (open_clip has no query/passage prefixes)."""
        return self.encode_texts(texts, "encoding queries")

    # ----------------------------------------------------------------------------------- images

    def encode_images(self, documents: Documents, doc_ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N x D float32, present (N,) bool) for `doc_ids` (default: all documents, table order).

        Rows without an image are zeros with present False. An unreadable image -> GclError.
        """
        docs = documents if doc_ids is None else _subset(documents, doc_ids)
        refs = docs.image_refs()
        present = np.array([r is not None for r in refs], dtype=bool)
        rows = np.flatnonzero(present)
        ids = [str(docs.ids[i]) for i in rows]
        items = _ImageItems(docs.images, ids, [refs[i] for i in rows], self.preprocess)
        out = np.zeros((len(refs), self.dim), dtype=np.float32)
        loader = worker_loader(items, self.batch_size, self.num_workers, collate_fn=collate_images,
                               pin_memory=self.device.type == "cuda")

        def batches() -> Iterable[int]:
            for positions, pixels, errors in loader:
                _raise_first(errors)
                out[rows[positions]] = self._embed(self.model.encode_image, pixels.to(self.device, non_blocking=True))
                yield from range(len(positions))

        _drain(track(batches(), "encoding images", total=len(rows)))
        return out, present

    # -------------------------------------------------------------------------------- documents

    def encode_field(self, documents: Documents, field: str) -> tuple[np.ndarray, np.ndarray]:
        """One document field for all documents: (N x D float32, present (N,) bool)."""
        if field == "image":
            return self.encode_images(documents)
        present = field_present(documents, field)  # raises for a field documents do not have
        titles = documents.titles()
        emb = self.encode_texts([titles[i] for i in np.flatnonzero(present)], "encoding titles")
        out = np.zeros((len(titles), emb.shape[1]), dtype=np.float32)
        out[present] = emb
        return out, present

    def encode_documents(self, documents: Documents, fields: FieldWeights) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{field: (embeddings, present)} for the positive-weight fields; zero-weight ones are never read."""
        for name in fields.active():
            if name not in DOC_FIELDS:
                raise GclError(f"{name!r} is a {MODALITY[name]} field of queries, not of documents "
                               f"(document fields: {', '.join(DOC_FIELDS)})")
        return {name: self.encode_field(documents, name) for name in fields.active()}

    # -------------------------------------------------------------------------------- internals

    def _embed(self, tower: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> np.ndarray:
        dtype = PRECISIONS[self.precision]
        with torch.inference_mode():
            with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=dtype is not None):
                emb = tower(batch)
            emb = F.normalize(emb.float(), dim=-1)  # in fp32, whatever the autocast dtype
        return emb.cpu().numpy()


# ------------------------------------------------------------------------------ worker loading


class _ImageItems(torch.utils.data.Dataset):
    """(position, preprocessed image tensor | None, error line | None) per image, for DataLoader workers.

    Decode errors are returned, not raised: an exception raised in a worker reaches the caller as
    a multi-line traceback, and the CLI needs one line naming the document.
    """

    def __init__(self, store: ImageStore, doc_ids: list[str], refs: list[str], transform):
        self.store, self.doc_ids, self.refs, self.transform = store, doc_ids, refs, transform

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        try:
            image = self.store.load(self.refs[i])
        except Exception as err:  # missing file, unknown key, truncated or non-image bytes
            return i, None, image_error(self.doc_ids[i], self.refs[i], err)
        return i, self.transform(image), None


def image_error(doc_id: str, ref: str, err: Exception) -> str:
    """One line: which document, which reference, what went wrong."""
    what = "not found" if isinstance(err, (FileNotFoundError, KeyError)) else "not a readable image"
    reason = " ".join(str(err).split())[:200]
    return f"document {doc_id!r}: image {ref} is {what} ({type(err).__name__}: {reason})"


def collate_items(items: list[tuple]) -> tuple[np.ndarray, list, list[str]]:
    """(positions, payloads as a list, error lines) of a batch of (position, payload, error) items."""
    positions, payloads, errors = zip(*items)
    return np.asarray(positions, dtype=np.int64), list(payloads), [e for e in errors if e is not None]


def collate_images(items: list[tuple]) -> tuple[np.ndarray, torch.Tensor | None, list[str]]:
    """As collate_items with the image tensors stacked (in the worker, so pinning sees one tensor)."""
    positions, payloads, errors = collate_items(items)
    return positions, None if errors else torch.stack(payloads), errors


def worker_loader(items: torch.utils.data.Dataset, batch_size: int, num_workers: int, *,
                  collate_fn: Callable = collate_items, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """An in-order DataLoader over `items` with `num_workers` worker processes.

    Workers receive `items` by pickling under the spawn/forkserver start methods. Image stores that
    close over local functions (the synthetic world's BytesImageStore) do not pickle; for those the
    workers are forked (they inherit the store), and where fork does not exist that is an error.
    """
    context = None
    if num_workers > 0:
        try:
            pickle.dumps(items)
        except Exception as err:
            if "fork" not in multiprocessing.get_all_start_methods():
                raise GclError(f"the image store cannot be sent to worker processes ({type(err).__name__}: "
                               f"{err}) and this platform cannot fork: use num_workers=0") from None
            context = multiprocessing.get_context("fork")
    return torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=collate_fn, pin_memory=pin_memory,
                                       multiprocessing_context=context)


def _raise_first(errors: list[str]) -> None:
    if errors:
        raise GclError(errors[0])


def _subset(documents: Documents, doc_ids: Sequence[str]) -> Documents:
    ids = [str(d) for d in doc_ids]
    unknown = [d for d in ids if d not in documents.table.index]
    if unknown:
        raise GclError(f"unknown document id {unknown[0]!r} ({len(unknown)} unknown in all)")
    return Documents(documents.table.loc[ids], documents.images)


def _drain(iterator: Iterable) -> None:
    for _ in iterator:
        pass
