"""The Hugging Face parquet layout: split names, shards, image bytes read lazily, bad input."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gcl_eval.data.check import check_dataset
from gcl_eval.data.hf import ParquetImageStore, find_hf_files, read_hf
from gcl_eval.data.io import read_dataset
from gcl_eval.util.errors import DataError

STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 3), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_split(path: Path, rows, *, struct_images: bool, query_id: bool = True, row_group_size: int = 2):
    """rows: (query, product_id, title, image bytes or None, score)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [r[3] for r in rows]
    if struct_images:
        image = pa.array([None if b is None else {"bytes": b, "path": None} for b in images], STRUCT)
    else:
        image = pa.array(images, pa.binary())
    columns = {
        "query": pa.array([r[0] for r in rows], pa.string()),
        "product_id": pa.array([r[1] for r in rows], pa.string()),
        "title": pa.array([r[2] for r in rows], pa.string()),
        "image": image,
        "score_linear": pa.array([r[4] for r in rows], pa.int64()),
        "score_reciprocal": pa.array([1.0 / (101 - r[4]) for r in rows], pa.float64()),
    }
    if query_id:
        columns["query_id"] = pa.array([f"id-{r[0]}" for r in rows], pa.string())
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


RED, GREEN, BLUE, GREY = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255)), png((9, 9, 9))


def make_hf_folder(root: Path) -> Path:
    write_split(root / "in_domain.parquet", [
        ("red dress", "0001", "Dress, red \"silk\"", RED, 100),
        ("red dress", "0002", "Dress ✓", None, 99),
        ("blue mug", "0003", "Mug", BLUE, 100),
        ("blue mug", "0001", "Dress, red \"silk\"", RED, 98),
    ], struct_images=False)
    write_split(root / "novel_query-00000-of-00001.parquet", [
        ("green scarf", "0003", "Mug", BLUE, 100),
    ], struct_images=False)
    write_split(root / "data" / "novel_document-00000-of-00002.parquet", [
        ("red dress", "1001", "Gown", GREEN, 100),
        ("red dress", "1002", None, GREY, 99),
        ("blue mug", "1003", "Cup", None, 97),
    ], struct_images=True)
    write_split(root / "data" / "novel_document-00001-of-00002.parquet", [
        ("blue mug", "1004", "Tumbler", GREY, 96),
    ], struct_images=True)
    write_split(root / "data" / "zero_shot-00000-of-00001.parquet", [
        ("green scarf", "1001", "Gown", GREEN, 100),
    ], struct_images=True, query_id=False)
    return root


def test_reads_splits_shards_and_corpora(tmp_path):
    ds = read_hf(make_hf_folder(tmp_path / "hf"))
    assert ds.splits == ["in_domain", "novel_query", "novel_corpus", "zero_shot"]
    assert ds.pairs["novel_corpus"]["doc_id"].tolist() == ["1001", "1002", "1003", "1004"]
    assert ds.pairs["in_domain"]["query_id"].tolist() == ["id-red dress"] * 2 + ["id-blue mug"] * 2
    assert ds.pairs["zero_shot"]["query_id"].iloc[0].startswith("q")  # derived: no query_id column there
    assert ds.pairs["in_domain"]["score"].tolist() == [100.0, 99.0, 100.0, 98.0]
    c1, c2 = ds.corpora["corpus_1"], ds.corpora["corpus_2"]
    assert list(c1.ids) == ["0001", "0002", "0003"]
    assert list(c2.ids) == ["1001", "1002", "1003", "1004"]
    assert c1.titles() == ['Dress, red "silk"', "Dress ✓", "Mug"]
    assert c2.titles()[1] is None
    summary = check_dataset(ds)
    assert summary["splits"]["novel_corpus"] == {"pairs": 4, "queries": 2, "docs": 4, "corpus": "corpus_2",
                                                 "corpus_size": 4}


def test_images_are_read_on_demand_from_the_parquet_files(tmp_path):
    ds = read_hf(make_hf_folder(tmp_path / "hf"))
    c1, c2 = ds.corpora["corpus_1"], ds.corpora["corpus_2"]
    assert isinstance(c1.images, ParquetImageStore) and not c1.images.is_file_backed()
    assert c1.table.at["0001", "image"] == "in_domain.parquet#0"
    assert c1.table.at["0002", "image"] is None  # null bytes -> no image
    assert c2.table.at["1003", "image"] is None  # null struct
    assert c2.table.at["1004", "image"] == "data/novel_document-00001-of-00002.parquet#0"
    assert c1.images.read_bytes(c1.table.at["0003", "image"]) == BLUE  # row 2: second row group
    assert c2.load_image("1002").getpixel((0, 0)) == (9, 9, 9)
    assert c2.load_image("1004").getpixel((0, 0)) == (9, 9, 9)
    assert c1.images.exists("in_domain.parquet#1") is False
    assert c1.images.exists("in_domain.parquet#99") is False
    clone = pickle.loads(pickle.dumps(c2.images))
    assert clone.read_bytes("data/novel_document-00000-of-00002.parquet#0") == GREEN
    assert check_dataset(ds, check_images=True)["splits"]["zero_shot"]["pairs"] == 1


def test_auto_detection_and_novel_corpus_alias(tmp_path):
    root = make_hf_folder(tmp_path / "hf")
    for old in (root / "data").glob("novel_document-*.parquet"):
        old.rename(old.with_name(old.name.replace("novel_document", "novel_corpus")))
    ds = read_dataset(root)
    assert ds.extra["format"] == "hf" and len(ds.pairs["novel_corpus"]) == 4


def test_no_split_and_missing_column(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"no parquet file of any split .* looked for <split>\.parquet"):
        read_hf(tmp_path / "empty")
    root = make_hf_folder(tmp_path / "hf2")
    pq.write_table(pa.table({"query": ["a"], "title": ["t"]}), root / "novel_query-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"novel_query-00000-of-00001\.parquet: missing column 'product_id'"):
        read_hf(root)


def test_duplicate_across_shards_names_the_file_and_row(tmp_path):
    root = make_hf_folder(tmp_path / "hf")
    write_split(root / "data" / "novel_document-00001-of-00002.parquet", [
        ("blue mug", "1004", "Tumbler", GREY, 96),
        ("red dress", "1002", None, GREY, 95),
    ], struct_images=True)
    with pytest.raises(DataError, match=r"novel_document-00001-of-00002\.parquet row 2: duplicate \(query, "
                                        r"product_id\) pair .* first seen at .*novel_document-00000-of-00002"
                                        r"\.parquet row 2"):
        read_hf(root)


def test_unreadable_parquet_and_bad_score(tmp_path):
    root = make_hf_folder(tmp_path / "hf")
    (root / "in_domain.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"in_domain\.parquet: unreadable parquet file"):
        read_hf(root)
    root = make_hf_folder(tmp_path / "hf2")
    table = pq.read_table(root / "in_domain.parquet")
    scores = pa.array([1.0, float("nan"), 3.0, 4.0])
    pq.write_table(table.set_column(table.schema.get_field_index("score_linear"), "score_linear", scores),
                   root / "in_domain.parquet")
    with pytest.raises(DataError, match=r"in_domain\.parquet row 2: score_linear nan is not a finite number"):
        read_hf(root)


def test_empty_product_id_string(tmp_path):
    root = make_hf_folder(tmp_path / "hf")
    write_split(root / "novel_query-00000-of-00001.parquet", [("green scarf", "", "Mug", BLUE, 100)],
                struct_images=False)
    with pytest.raises(DataError, match=r"novel_query-00000-of-00001\.parquet row 1: empty 'product_id'"):
        read_hf(root)


def _as_hub_export(root: Path, out: Path) -> Path:
    """The same splits in the Hub's parquet export layout: default/<split>/0000.parquet, ..."""
    for split, files in find_hf_files(root).items():
        name = "novel_document" if split == "novel_corpus" else split
        for i, path in enumerate(files):
            (out / "default" / name).mkdir(parents=True, exist_ok=True)
            (out / "default" / name / f"{i:04d}.parquet").write_bytes(path.read_bytes())
    return out


def test_hub_export_layout_reads_like_the_original(tmp_path):
    root = make_hf_folder(tmp_path / "hf")
    export = _as_hub_export(root, tmp_path / "export")
    original, ds = read_hf(root), read_dataset(export)
    assert ds.extra["format"] == "hf" and ds.splits == original.splits
    assert ds.fingerprint() == original.fingerprint()
    assert ds.corpus_for("zero_shot").load_image("1001").getpixel((0, 0)) == (0, 255, 0)


def test_snapshot_with_some_splits_reads_those(tmp_path):
    root = make_hf_folder(tmp_path / "hf")
    full = read_hf(root)
    (root / "novel_query-00000-of-00001.parquet").unlink()
    (root / "data" / "zero_shot-00000-of-00001.parquet").unlink()
    ds = read_dataset(root)
    assert ds.splits == ["in_domain", "novel_corpus"]
    assert ds.extra["missing_splits"] == ["novel_query", "zero_shot"]
    assert ds.split_corpus == {"in_domain": "corpus_1", "novel_corpus": "corpus_2"}
    for split in ds.splits:
        assert ds.pairs[split].equals(full.pairs[split])
    assert sorted(ds.corpora["corpus_1"].ids) == ["0001", "0002", "0003"]
    summary = check_dataset(ds, check_images=True)["splits"]
    assert list(summary) == ["in_domain", "novel_corpus"] and summary["novel_corpus"]["pairs"] == 4
    only = _as_hub_export(root, tmp_path / "export")
    for folder in (only / "default" / "in_domain",):
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    assert read_dataset(only).splits == ["novel_corpus"]
