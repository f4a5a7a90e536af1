"""The content-addressed embedding cache: hits, misses on every key part, corrupt entries recomputed,
and encode_corpus / encode_query_texts tying encoder, pooling and cache together."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gcl_eval.data.dataset import BytesImageStore, Documents, ImageStore, make_documents
from gcl_eval.retrieval.embedding_cache import (
    CacheWarning,
    EmbeddingCache,
    encode_corpus,
    encode_query_texts,
    field_fingerprint,
)
from gcl_eval.retrieval.encoders import OpenClipEncoder
from gcl_eval.util.errors import GclError
from gcl_eval.retrieval.fields import FieldWeights, pool_fields
from gcl_eval.retrieval.models import load_open_clip

N_DOCS = 17
NO_IMAGE = {3}
HALF = FieldWeights.of(title=0.5, image=0.5)


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_docs(folder: Path, titles: dict[int, str] | None = None) -> Documents:
    folder.mkdir(parents=True, exist_ok=True)
    refs, names = [], []
    for i in range(N_DOCS):
        path = folder / f"{i:03d}.png"
        if not path.exists():
            path.write_bytes(png_bytes(i))
        refs.append(None if i in NO_IMAGE else str(path))
        names.append((titles or {}).get(i, f"product {i} shade {i % 4}"))
    return Documents(make_documents([f"d{i:03d}" for i in range(N_DOCS)], names, refs), ImageStore())


class Counting:
    """An encoder that records which fields it was asked to encode (a cache hit asks nothing)."""

    def __init__(self, encoder: OpenClipEncoder):
        self.encoder, self.calls = encoder, []
        self.num_workers = encoder.num_workers

    def fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def encode_field(self, documents, field):
        self.calls.append(field)
        return self.encoder.encode_field(documents, field)

    def encode_queries(self, texts):
        self.calls.append("query")
        return self.encoder.encode_queries(texts)


@pytest.fixture(scope="module")
def models():
    return load_open_clip("tiny-clip", seed=0), load_open_clip("tiny-clip", seed=1)


@pytest.fixture
def encoder(models):
    return Counting(OpenClipEncoder(models[0], batch_size=8))


@pytest.fixture
def docs(tmp_path) -> Documents:
    return make_docs(tmp_path / "images")


def test_second_call_hits_and_returns_the_same_bytes(encoder, docs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = encode_corpus(encoder, docs, HALF, cache)
    assert sorted(encoder.calls) == ["image", "title"]
    assert cache.stats.as_dict() == {"hits": 0, "misses": 3, "corrupt": 0}  # two fields + pooled
    second = encode_corpus(encoder, docs, HALF, cache)
    assert sorted(encoder.calls) == ["image", "title"]  # nothing encoded again
    assert cache.stats.hits == 1 and np.array_equal(first, second) and second.dtype == np.float32
    # a fresh cache object over the same folder (another process) hits too
    again = EmbeddingCache(tmp_path / "cache")
    assert np.array_equal(encode_corpus(encoder, docs, HALF, again), first) and again.stats.hits == 1


def test_pooled_corpus_equals_pooling_by_hand(encoder, docs, tmp_path):
    pooled = encode_corpus(encoder, docs, HALF, EmbeddingCache(tmp_path / "cache"))
    fields = encoder.encoder.encode_documents(docs, HALF)
    by_hand = pool_fields({k: v[0] for k, v in fields.items()}, {k: v[1] for k, v in fields.items()}, HALF)
    np.testing.assert_array_equal(pooled, by_hand)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pooled[3], fields["title"][0][3], atol=1e-6)  # d003 has no image
    assert np.array_equal(encode_corpus(encoder, docs, HALF, None), pooled)  # no cache, same numbers


def test_changed_field_weight_misses_the_pooled_entry_but_reuses_the_fields(encoder, docs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    half = encode_corpus(encoder, docs, HALF, cache)
    encoder.calls.clear()
    skewed = encode_corpus(encoder, docs, FieldWeights.of(title=0.8, image=0.2), cache)
    assert encoder.calls == [] and cache.stats.misses == 4 and cache.stats.hits == 2
    assert not np.allclose(half, skewed)
    title_only = encode_corpus(encoder, docs, FieldWeights.of(title=1.0, image=0.0), cache)
    assert encoder.calls == [] and cache.stats.misses == 5
    np.testing.assert_allclose(title_only, encoder.encoder.encode_field(docs, "title")[0], atol=1e-6)
    # a zero-weight field is not part of the key: title=1 alone is the same entry
    encode_corpus(encoder, docs, FieldWeights.of(title=1.0), cache)
    assert cache.stats.misses == 5


def test_changed_checkpoint_misses(models, docs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first, second = (Counting(OpenClipEncoder(m, batch_size=8)) for m in models)
    a = encode_corpus(first, docs, HALF, cache)
    b = encode_corpus(second, docs, HALF, cache)
    assert sorted(second.calls) == ["image", "title"] and cache.stats.hits == 0
    assert not np.allclose(a, b)


def test_changed_title_misses_the_title_entry_only(encoder, docs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    before = encode_corpus(encoder, docs, HALF, cache)
    encoder.calls.clear()
    edited = make_docs(tmp_path / "images", titles={5: "a completely different title"})
    after = encode_corpus(encoder, edited, HALF, cache)
    assert encoder.calls == ["title"]  # the image entry is reused
    changed = ~np.isclose(before, after).all(axis=1)
    assert changed.tolist() == [i == 5 for i in range(N_DOCS)]


def test_replaced_image_file_misses_the_image_entry(encoder, docs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    encode_corpus(encoder, docs, HALF, cache)
    encoder.calls.clear()
    path = Path(docs.image_refs()[0])
    path.write_bytes(png_bytes(999))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    encode_corpus(encoder, docs, HALF, cache)
    assert encoder.calls == ["image"]


def test_byte_store_content_is_hashed_not_just_its_references(tmp_path):
    def store(offset):
        data = {f"r{i}": png_bytes(i + offset) for i in range(4)}
        return BytesImageStore(lambda ref: data[ref])  # a closure: workers must fork

    table = make_documents(["a", "b", "c", "d"], ["t"] * 4, ["r0", "r1", "r2", "r3"])
    one, same, other = Documents(table, store(0)), Documents(table, store(0)), Documents(table, store(1))
    assert field_fingerprint(one, "image") == field_fingerprint(same, "image", num_workers=2)
    assert field_fingerprint(one, "image") != field_fingerprint(other, "image")
    assert field_fingerprint(one, "title") == field_fingerprint(other, "title")


def test_role_and_every_key_part_change_the_key(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return np.ones((2, 3), dtype=np.float32)

    parts = {"encoder": "m", "role": "document", "field": "title", "content": "c", "rows": 2}
    cache.get_or_compute(parts, compute)
    cache.get_or_compute(dict(parts), compute)
    assert len(calls) == 1
    for name, value in [("role", "query"), ("encoder", "m2"), ("field", "image"), ("content", "c2")]:
        cache.get_or_compute({**parts, name: value}, compute)
    assert len(calls) == 5 and cache.stats.misses == 5 and cache.stats.hits == 1


def test_queries_are_cached_by_text_and_role(encoder, docs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    texts = ["red mug", "blue sofa"]
    q = encode_query_texts(encoder, texts, cache)
    assert encoder.calls == ["query"]
    np.testing.assert_allclose(q, encoder.encoder.encode_texts(texts), atol=1e-6)
    assert np.array_equal(encode_query_texts(encoder, texts, cache), q) and encoder.calls == ["query"]
    encode_query_texts(encoder, ["blue sofa", "red mug"], cache)  # order is content: row i is text i
    assert encoder.calls == ["query", "query"]


@pytest.mark.parametrize("damage", ["truncate", "flip_data_byte", "garble_sidecar", "drop_npy"])
def test_corrupt_entry_is_detected_and_recomputed(encoder, docs, tmp_path, damage):
    cache = EmbeddingCache(tmp_path / "cache")
    texts = ["red mug", "blue sofa", "green lamp"]
    good = encode_query_texts(encoder, texts, cache)
    (npy,) = (tmp_path / "cache").rglob("*.npy")
    meta = npy.with_suffix(".json")
    data = npy.read_bytes()
    if damage == "truncate":
        npy.write_bytes(data[: len(data) // 2])
    elif damage == "flip_data_byte":
        npy.write_bytes(data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:])
    elif damage == "garble_sidecar":
        meta.write_text("{not json")
    else:
        npy.unlink()
    fresh = EmbeddingCache(tmp_path / "cache")
    with pytest.warns(CacheWarning, match="unusable"):
        again = encode_query_texts(encoder, texts, fresh)
    assert np.array_equal(again, good) and encoder.calls == ["query", "query"]
    assert fresh.stats.as_dict() == {"hits": 0, "misses": 1, "corrupt": 1}
    assert npy.read_bytes() == data and json.loads(meta.read_text())["shape"] == [3, 64]  # repaired
    assert np.array_equal(encode_query_texts(encoder, texts, fresh), good) and fresh.stats.hits == 1


def test_entry_without_sidecar_is_a_plain_miss(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    parts = {"x": 1}
    npy, _ = cache.paths(cache.key(parts))
    npy.parent.mkdir(parents=True)
    np.save(npy, np.zeros(3, dtype=np.float32))  # as a writer killed before committing leaves it
    out = cache.get_or_compute(parts, lambda: np.arange(3, dtype=np.float32))
    assert out.tolist() == [0, 1, 2] and cache.stats.corrupt == 0
    assert cache.get_or_compute(parts, lambda: None).tolist() == [0, 1, 2]


def test_unwritable_cache_warns_and_still_returns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = EmbeddingCache(blocker)
    with pytest.warns(CacheWarning, match="not written"):
        out = cache.get_or_compute({"x": 1}, lambda: np.ones(2, dtype=np.float32))
    assert out.tolist() == [1, 1] and not list(tmp_path.glob(".*tmp*"))


def test_document_without_any_weighted_field_is_named(encoder, tmp_path):
    docs = make_docs(tmp_path / "images")
    docs.table.loc["d003", "title"] = None  # d003 has no image either
    with pytest.raises(GclError, match=r"document 'd003' has none of the fields image, title"):
        encode_corpus(encoder, docs, HALF, EmbeddingCache(tmp_path / "cache"))
    # title-only weights: any document without a title is the error
    docs.table.loc["d003", "title"] = "back"
    docs.table.loc["d010", "title"] = None
    with pytest.raises(GclError, match=r"document 'd010' has none of the fields title"):
        encode_corpus(encoder, docs, FieldWeights.of(title=1.0, image=0.0), None)
