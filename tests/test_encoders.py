"""OpenClipEncoder on tiny-clip (random init): normalised, deterministic, batch- and worker-independent
embeddings; missing fields dropped and renormalised; unreadable images named in one line."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gcl_eval.data.dataset import BytesImageStore, Documents, ImageStore, make_documents
from gcl_eval.retrieval.encoders import OpenClipEncoder, field_present
from gcl_eval.util.errors import GclError
from gcl_eval.retrieval.fields import FieldWeights, pool_fields
from gcl_eval.retrieval.models import load_open_clip

N_DOCS = 23  # not a multiple of any batch size used below
NO_IMAGE = {4, 11}
NO_TITLE = {7}


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_docs(folder: Path, titles: dict[int, str] | None = None) -> Documents:
    """N_DOCS documents with PNG files in `folder`; some miss an image or a title."""
    folder.mkdir(parents=True, exist_ok=True)
    refs, names = [], []
    for i in range(N_DOCS):
        path = folder / f"{i:03d}.png"
        path.write_bytes(png_bytes(i))
        refs.append(None if i in NO_IMAGE else str(path))
        names.append(None if i in NO_TITLE else (titles or {}).get(i, f"product {i} in colour {i % 5}"))
    return Documents(make_documents([f"d{i:03d}" for i in range(N_DOCS)], names, refs), ImageStore())


@pytest.fixture(scope="module")
def loaded():
    return load_open_clip("tiny-clip", seed=0)


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Documents:
    return make_docs(tmp_path_factory.mktemp("images"))


def test_embeddings_are_normalised_float32_and_deterministic(loaded, docs):
    encoder = OpenClipEncoder(loaded, batch_size=8)
    images, present = encoder.encode_images(docs)
    assert images.dtype == np.float32 and images.shape == (N_DOCS, encoder.dim)
    assert present.tolist() == [i not in NO_IMAGE for i in range(N_DOCS)]
    np.testing.assert_allclose(np.linalg.norm(images[present], axis=1), 1.0, atol=1e-5)
    assert not images[~present].any()  # missing rows stay zero
    again, _ = OpenClipEncoder(loaded, batch_size=8).encode_images(docs)
    assert np.array_equal(images, again)

    texts = encoder.encode_texts(["red mug", "blue mug", "red mug"])
    assert texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(texts[0], texts[2]) and not np.allclose(texts[0], texts[1])
    assert encoder.encode_texts([]).shape == (0, encoder.dim)


def test_batch_size_does_not_change_embeddings(loaded, docs):
    small, large = OpenClipEncoder(loaded, batch_size=3), OpenClipEncoder(loaded, batch_size=64)
    np.testing.assert_allclose(small.encode_images(docs)[0], large.encode_images(docs)[0], atol=1e-5, rtol=0)
    titles = [t for t in docs.titles() if t is not None]
    np.testing.assert_allclose(small.encode_texts(titles), large.encode_texts(titles), atol=1e-5, rtol=0)


def test_worker_processes_give_the_same_embeddings(loaded, docs):
    in_process = OpenClipEncoder(loaded, batch_size=4, num_workers=0).encode_images(docs)
    workers = OpenClipEncoder(loaded, batch_size=4, num_workers=2).encode_images(docs)
    assert np.array_equal(in_process[0], workers[0]) and np.array_equal(in_process[1], workers[1])


def test_unpicklable_byte_store_is_decoded_in_forked_workers(loaded):
    """The synthetic world's BytesImageStore closes over a local function: workers must fork."""
    from gcl_eval.data.synth.build import world_documents
    from gcl_eval.data.synth.world import SynthConfig, generate_world

    world = world_documents(generate_world(SynthConfig(queries=10, docs_per_query=5, image_size=32)))
    subset = list(world.ids[:20])
    in_process = OpenClipEncoder(loaded, batch_size=8).encode_images(world, subset)
    workers = OpenClipEncoder(loaded, batch_size=8, num_workers=2).encode_images(world, subset)
    assert in_process[0].shape == (20, 64) and in_process[1].all()
    assert np.array_equal(in_process[0], workers[0])


def test_subset_of_documents_keeps_the_requested_order(loaded, docs):
    encoder = OpenClipEncoder(loaded, batch_size=5)
    full, _ = encoder.encode_images(docs)
    part, present = encoder.encode_images(docs, ["d005", "d004", "d000"])
    assert present.tolist() == [True, False, True]
    np.testing.assert_allclose(part[[0, 2]], full[[5, 0]], atol=1e-6)
    with pytest.raises(GclError, match="unknown document id 'nope'"):
        encoder.encode_images(docs, ["d000", "nope"])


def test_missing_field_is_dropped_and_the_weights_renormalised(loaded, docs):
    encoder = OpenClipEncoder(loaded, batch_size=8)
    weights = FieldWeights.of(title=0.3, image=0.7)
    fields = encoder.encode_documents(docs, weights)
    assert set(fields) == {"title", "image"}
    title, has_title = fields["title"]
    image, has_image = fields["image"]
    assert has_title.tolist() == field_present(docs, "title").tolist() == [i not in NO_TITLE for i in range(N_DOCS)]
    pooled = pool_fields({"title": title, "image": image}, {"title": has_title, "image": has_image}, weights)
    # by hand: a document without an image is its title embedding; one without a title, its image
    for i in NO_IMAGE:
        np.testing.assert_allclose(pooled[i], title[i], atol=1e-6)
    for i in NO_TITLE:
        np.testing.assert_allclose(pooled[i], image[i], atol=1e-6)
    both = 0.3 * title[0] + 0.7 * image[0]
    np.testing.assert_allclose(pooled[0], both / np.linalg.norm(both), atol=1e-6)
    # the titles are those of encode_texts, row for row
    np.testing.assert_allclose(title[0], encoder.encode_texts([docs.titles()[0]])[0], atol=1e-6)


def test_zero_weight_fields_are_not_encoded(loaded, tmp_path):
    docs = make_docs(tmp_path / "images")
    Path(docs.image_refs()[0]).write_bytes(b"garbage")  # never read when the image weight is 0
    fields = OpenClipEncoder(loaded).encode_documents(docs, FieldWeights.of(title=1.0, image=0.0))
    assert list(fields) == ["title"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_image_is_one_line_naming_document_and_file(loaded, tmp_path, num_workers):
    docs = make_docs(tmp_path / "images")
    bad = docs.image_refs()[9]
    Path(bad).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(GclError) as info:
        OpenClipEncoder(loaded, batch_size=4, num_workers=num_workers).encode_images(docs)
    message = str(info.value)
    assert "\n" not in message and "'d009'" in message and bad in message and "not a readable image" in message


def test_missing_image_file_is_an_error_not_a_missing_field(loaded, tmp_path):
    docs = make_docs(tmp_path / "images")
    gone = docs.image_refs()[2]
    Path(gone).unlink()
    with pytest.raises(GclError, match=r"document 'd002': image .*002\.png is not found"):
        OpenClipEncoder(loaded).encode_images(docs)


def test_byte_store_missing_key_is_named(loaded):
    data = {"a": png_bytes(1)}
    docs = Documents(make_documents(["x", "y"], ["t", "u"], ["a", "b"]), BytesImageStore(data.__getitem__))
    with pytest.raises(GclError, match="document 'y': image b is not found"):
        OpenClipEncoder(loaded).encode_images(docs)


def test_bad_arguments(loaded, docs):
    with pytest.raises(GclError, match="unknown precision"):
        OpenClipEncoder(loaded, precision="fp8")
    with pytest.raises(GclError, match="batch size"):
        OpenClipEncoder(loaded, batch_size=0)
    with pytest.raises(GclError, match="text 1 is NoneType"):
        OpenClipEncoder(loaded).encode_texts(["ok", None])
    with pytest.raises(GclError, match="not of documents"):
        OpenClipEncoder(loaded).encode_documents(docs, FieldWeights.of(query=1.0))


def test_fp16_is_cuda_only_and_precision_is_recorded_in_the_fingerprint(loaded):
    with pytest.warns(UserWarning, match="CUDA only"):
        encoder = OpenClipEncoder(loaded, precision="fp16")
    assert encoder.precision == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OpenClipEncoder(loaded).fingerprint() == encoder.fingerprint()
        bf16 = OpenClipEncoder(loaded, precision="bf16")
    assert bf16.precision == "bf16" and bf16.fingerprint() != encoder.fingerprint()
    texts = ["red leather bag", "navy sneakers"]
    cosine = (bf16.encode_texts(texts) * encoder.encode_texts(texts)).sum(axis=1)
    assert cosine.min() > 0.99


def test_fingerprint_names_weights_preprocessing_and_context(loaded):
    import json

    fp = json.loads(OpenClipEncoder(loaded).fingerprint())
    assert fp["arch"] == "tiny-clip" and fp["weights_sha256"] == loaded.weights_sha256
    assert fp["context_length"] == 32 and "Resize(size=32" in fp["preprocess"] and fp["precision"] == "fp32"
    other = load_open_clip("tiny-clip", seed=1)
    assert OpenClipEncoder(other).fingerprint() != OpenClipEncoder(loaded).fingerprint()
