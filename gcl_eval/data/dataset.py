"""The in-memory model of a ranked dataset split four ways (docs/data.md).

A Dataset holds, per split, a pairs table (query_id, query, doc_id, score) and, per corpus, a
Documents table (doc_id -> title, image reference). Ids are always strings. Images are never
decoded here: an ImageStore turns a document's image reference into bytes on demand.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

SPLITS: tuple[str, ...] = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
SPLIT_STEMS: dict[str, str] = {
    "in_domain": "query_0_product_id_0",
    "novel_query": "query_1_product_id_0",
    "novel_corpus": "query_0_product_id_1",
    "zero_shot": "query_1_product_id_1",
}
SPLIT_CORPUS: dict[str, str] = {
    "in_domain": "corpus_1",
    "novel_query": "corpus_1",
    "novel_corpus": "corpus_2",
    "zero_shot": "corpus_2",
}
CORPORA: tuple[str, ...] = ("corpus_1", "corpus_2")
TRAIN_QUERY_SPLITS = ("in_domain", "novel_corpus")
EVAL_QUERY_SPLITS = ("novel_query", "zero_shot")
COLD_START_SPLITS = ("novel_query", "novel_corpus", "zero_shot")  # the query, the corpus or both unseen in training

PAIR_COLUMNS = ("query_id", "query", "doc_id", "score")
DOC_COLUMNS = ("doc_id", "title", "image")


def query_id_from_text(query: str) -> str:
    """Stable id for a query when the source has no query_id column: 'q' + 16 hex of sha1(text).

    The text is used exactly as read (no case folding or whitespace normalisation), so two
    spellings of a query are two queries, as they are two rows of the Marqo-GS CSVs.
    """
    return "q" + hashlib.sha1(query.encode("utf-8")).hexdigest()[:16]


class ImageStore:
    """Turns an image reference (the `image` column of Documents) into encoded image bytes.

    The base class reads files: the reference is a path. Subclasses hold bytes elsewhere (a parquet
    file, a generator). `load` decodes to an RGB PIL image.
    """

    def read_bytes(self, ref: str) -> bytes:
        return Path(ref).read_bytes()

    def exists(self, ref: str) -> bool:
        return Path(ref).is_file()

    def is_file_backed(self) -> bool:
        """True when references are file paths that a writer may point at instead of copying."""
        return True

    def load(self, ref: str):
        from PIL import Image

        with Image.open(io.BytesIO(self.read_bytes(ref))) as img:
            return img.convert("RGB")


class BytesImageStore(ImageStore):
    """Images held as bytes behind a callable (generated images, parquet byte columns)."""

    def __init__(self, get_bytes: Callable[[str], bytes], has: Callable[[str], bool] | None = None):
        self._get_bytes = get_bytes
        self._has = has

    def read_bytes(self, ref: str) -> bytes:
        return self._get_bytes(ref)

    def exists(self, ref: str) -> bool:
        if self._has is not None:
            return self._has(ref)
        try:
            self._get_bytes(ref)
        except KeyError:
            return False
        return True

    def is_file_backed(self) -> bool:
        return False


@dataclass
class Documents:
    """A corpus: one row per document, indexed by doc_id (str), columns title and image.

    `title` is a str or None (missing); `image` is an image reference for `images` or None.
    Extra columns (attributes of synthetic products, say) are kept and written where formats allow.
    """

    table: pd.DataFrame
    images: ImageStore = field(default_factory=ImageStore)

    def __post_init__(self) -> None:
        if self.table.index.name != "doc_id":
            raise ValueError("Documents.table must be indexed by doc_id")

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> pd.Index:
        return self.table.index

    def titles(self) -> list[str | None]:
        return [None if _missing(t) else str(t) for t in self.table["title"].tolist()]

    def image_refs(self) -> list[str | None]:
        return [None if _missing(r) else str(r) for r in self.table["image"].tolist()]

    def load_image(self, doc_id: str):
        ref = self.table.at[doc_id, "image"]
        if _missing(ref):
            return None
        return self.images.load(str(ref))


@dataclass
class Dataset:
    """Pairs per split, documents per corpus, optional released ground truth.

    `pairs[split]` has columns query_id (str), query (str), doc_id (str), score (float64), one row
    per (query, document). `split_corpus` says which corpus each split searches. A dataset may hold
    fewer than four splits (a BEIR-style collection has one). `ground_truth[(split, "dev"|"test")]`
    is {query key: {doc_id: int grade}}.
    """

    name: str
    pairs: dict[str, pd.DataFrame]
    corpora: dict[str, Documents]
    split_corpus: dict[str, str] = field(default_factory=lambda: dict(SPLIT_CORPUS))
    ground_truth: dict[tuple[str, str], dict[str, dict[str, int]]] = field(default_factory=dict)
    root: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if s in self.pairs] + [s for s in self.pairs if s not in SPLITS]

    def corpus_for(self, split: str) -> Documents:
        return self.corpora[self.split_corpus[split]]

    def fingerprint(self) -> str:
        """Content hash of pairs, documents and split assignment (not of image bytes or paths).

        Two datasets with the same fingerprint give the same qrels and corpora to search.
        """
        h = hashlib.sha256()
        for split in sorted(self.pairs):
            p = self.pairs[split]
            h.update(f"split:{split}:{self.split_corpus[split]}:{len(p)}\n".encode())
            h.update(pd.util.hash_pandas_object(p[list(PAIR_COLUMNS)], index=False).values.tobytes())
        for name in sorted(self.corpora):
            t = self.corpora[name].table
            h.update(f"corpus:{name}:{len(t)}\n".encode())
            h.update(pd.util.hash_pandas_object(t.index.to_series(), index=False).values.tobytes())
            h.update(pd.util.hash_pandas_object(t["title"].fillna("\x00"), index=False).values.tobytes())
            has_image = t["image"].notna().to_numpy(dtype=np.uint8)
            h.update(has_image.tobytes())
        return h.hexdigest()


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def empty_documents() -> pd.DataFrame:
    return pd.DataFrame({"title": pd.Series([], dtype=object), "image": pd.Series([], dtype=object)},
                        index=pd.Index([], name="doc_id", dtype=object))


def make_documents(doc_ids, titles, images, extra: Mapping[str, object] | None = None) -> pd.DataFrame:
    """Build a Documents table from parallel sequences; ids become str, missing values None."""
    index = pd.Index([str(d) for d in doc_ids], name="doc_id", dtype=object)
    table = pd.DataFrame(
        {"title": pd.Series(list(titles), dtype=object, index=index),
         "image": pd.Series(list(images), dtype=object, index=index)},
        index=index,
    )
    for key, values in (extra or {}).items():
        table[key] = list(values)
    return table
