"""The Marqo-GS folder layout: reader (awkward values, image paths, parquet cache), writer, bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gcl_eval.data import tables
from gcl_eval.data.dataset import (
    SPLIT_STEMS,
    SPLITS,
    BytesImageStore,
    Dataset,
    Documents,
    make_documents,
    query_id_from_text,
)
from gcl_eval.data.marqo import read_marqo, write_marqo
from gcl_eval.util.errors import DataError, GclError

AWKWARD_TITLE = 'Sofa, "Chesterfield"\nvelvet – Größe 3 ✓'


def png_bytes(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def make_marqo_folder(root: Path, *, with_query_id: bool = True, abs_image_dir: Path | None = None) -> Path:
    """A tiny hand-written Marqo-GS folder with the awkward cases of real data.

    corpus_1: 00123 (awkward title, relative image), 00124 (no title), 0500 (no image);
    corpus_2: A-1 (absolute image path), A-2. Train queries: "red sofa", "blue lamp";
    eval queries: "green rug, large".
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "images" / "00123.png").write_bytes(png_bytes())
    abs_dir = abs_image_dir or (root.parent / "elsewhere" / "pics")
    abs_dir.mkdir(parents=True, exist_ok=True)
    (abs_dir / "a1.png").write_bytes(png_bytes((0, 0, 255)))
    corpus_1 = {
        "00123": {"title": AWKWARD_TITLE, "image_local": "images/00123.png"},
        "00124": {"title": None, "image_local": "images/00124.png"},
        "0500": {"title": "NA", "image_local": None, "colour": "red"},
    }
    corpus_2 = {
        "A-1": {"title": "Lamp, brass", "image_local": str(abs_dir / "a1.png")},
        "A-2": {"title": "Rug", "image_local": str(abs_dir / "a2.png")},
    }
    (root / "corpus_1.json").write_text(json.dumps(corpus_1, ensure_ascii=False), encoding="utf-8")
    (root / "corpus_2.json").write_text(json.dumps(corpus_2), encoding="utf-8")
    rows = {
        "in_domain": [["red sofa", "00123", 100], ["red sofa", "00124", 99], ["blue lamp", "0500", 100]],
        "novel_query": [["green rug, large", "00123", 100], ["green rug, large", "0500", 98]],
        "novel_corpus": [["red sofa", "A-1", 100], ["blue lamp", "A-2", 97]],
        "zero_shot": [["green rug, large", "A-2", 100]],
    }
    for split, split_rows in rows.items():
        header = ["query", "title", "image_local", "product_id", "score_linear"]
        out = [[q, "csv title ignored", "", pid, s] for q, pid, s in split_rows]
        if with_query_id:
            header = ["query_id"] + header
            out = [[f"Q{hash_free_id(r[0])}"] + r for r in out]
        write_csv(root / f"{SPLIT_STEMS[split]}.csv", header, out)
    (root / f"{SPLIT_STEMS['novel_query']}_gt_test.json").write_text(
        json.dumps({"green rug, large": {"00123": 100, "0500": 98}}))
    return root


def hash_free_id(query: str) -> str:
    return {"red sofa": "001", "blue lamp": "002", "green rug, large": "003"}[query]


# --------------------------------------------------------------------------------------- reading


def test_reads_awkward_values(tmp_path):
    ds = read_marqo(make_marqo_folder(tmp_path / "ds"))
    assert ds.splits == list(SPLITS)
    docs = ds.corpora["corpus_1"]
    assert list(docs.ids) == ["00123", "00124", "0500"]
    assert docs.table.at["00123", "title"] == AWKWARD_TITLE
    assert docs.titles() == [AWKWARD_TITLE, None, "NA"]
    assert docs.table.at["0500", "image"] is None
    assert docs.table.at["0500", "colour"] == "red"
    pairs = ds.pairs["in_domain"]
    assert list(pairs.columns) == ["query_id", "query", "doc_id", "score"]
    assert pairs["doc_id"].tolist() == ["00123", "00124", "0500"]
    assert pairs["query_id"].tolist() == ["Q001", "Q001", "Q002"]
    assert pairs["score"].dtype == np.float64
    for name in ("query_id", "query", "doc_id"):
        assert pairs[name].dtype == "str"
    assert ds.pairs["novel_query"]["query"].iloc[0] == "green rug, large"
    assert ds.ground_truth[("novel_query", "test")] == {"green rug, large": {"00123": 100, "0500": 98}}


def test_query_id_derived_from_text_when_absent(tmp_path):
    ds = read_marqo(make_marqo_folder(tmp_path / "ds", with_query_id=False))
    pairs = ds.pairs["novel_corpus"]
    assert pairs["query_id"].tolist() == [query_id_from_text("red sofa"), query_id_from_text("blue lamp")]
    assert query_id_from_text("red sofa") == query_id_from_text("red sofa") != query_id_from_text("Red sofa")
    # the same query text gets the same id in every split
    assert ds.pairs["in_domain"]["query_id"].iloc[0] == pairs["query_id"].iloc[0]


def test_image_paths_relative_and_absolute(tmp_path):
    root = make_marqo_folder(tmp_path / "ds")
    ds = read_marqo(root)
    c1, c2 = ds.corpora["corpus_1"].table, ds.corpora["corpus_2"].table
    assert c1.at["00123", "image"] == str(root / "images" / "00123.png")
    assert c2.at["A-1", "image"] == str(tmp_path / "elsewhere" / "pics" / "a1.png")
    image = ds.corpora["corpus_1"].load_image("00123")
    assert image.size == (4, 4) and image.getpixel((0, 0)) == (200, 30, 30)
    assert ds.corpora["corpus_2"].load_image("A-1").getpixel((1, 1)) == (0, 0, 255)
    assert ds.corpora["corpus_1"].load_image("0500") is None


def test_images_root_rerooting(tmp_path):
    root = make_marqo_folder(tmp_path / "ds", abs_image_dir=tmp_path / "old" / "shared" / "pics")
    new = tmp_path / "new"
    new.mkdir()
    ds = read_marqo(root, images_root=new)
    c1, c2 = ds.corpora["corpus_1"].table, ds.corpora["corpus_2"].table
    assert c1.at["00123", "image"] == str(new / "images" / "00123.png")  # relative: under the new root
    assert c2.at["A-1", "image"] == str(new / "a1.png")  # absolute: the common folder is replaced
    with pytest.raises(DataError, match="image folder does not exist"):
        read_marqo(root, images_root=tmp_path / "nope")


def test_read_only_folder_and_cache_hit(tmp_path, monkeypatch):
    root = make_marqo_folder(tmp_path / "ds")
    before = sorted(root.rglob("*"))
    for path in list(root.rglob("*")) + [root]:
        path.chmod(stat.S_IRUSR | stat.S_IXUSR if path.is_dir() else stat.S_IRUSR)
    try:
        first = read_marqo(root)
        calls = []
        monkeypatch.setattr(tables, "_parse_csv", lambda *a: calls.append(a) or pytest.fail("parsed again"))
        second = read_marqo(root)
        assert calls == []
        pd.testing.assert_frame_equal(first.pairs["in_domain"], second.pairs["in_domain"])
        assert list((Path(os.environ["GCL_EVAL_CACHE"]) / "tables").glob("*.parquet"))
        assert sorted(root.rglob("*")) == before  # nothing written next to the data (root ignores chmod)
    finally:
        for path in [root] + list(root.rglob("*")):
            path.chmod(stat.S_IRWXU)


def test_cache_invalidated_by_size_and_mtime(tmp_path, monkeypatch):
    root = make_marqo_folder(tmp_path / "ds")
    path = root / f"{SPLIT_STEMS['zero_shot']}.csv"
    parsed = []
    real = tables._parse_csv
    monkeypatch.setattr(tables, "_parse_csv", lambda p, d: parsed.append(p) or real(p, d))
    assert tables.read_csv(path)["score_linear"].to_pylist() == ["100"]
    assert tables.read_csv(path)["score_linear"].to_pylist() == ["100"] and len(parsed) == 1
    path.write_text(path.read_text().replace(",100", ",7"))  # size changes
    assert tables.read_csv(path)["score_linear"].to_pylist() == ["7"] and len(parsed) == 2
    path.write_text(path.read_text().replace(",7", ",8"))  # same size, new mtime
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert tables.read_csv(path)["score_linear"].to_pylist() == ["8"] and len(parsed) == 3
    cached = list((Path(os.environ["GCL_EVAL_CACHE"]) / "tables").glob("*.parquet"))
    assert len(cached) == 1  # older versions of the same source are dropped


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    root = make_marqo_folder(tmp_path / "ds")
    path = root / f"{SPLIT_STEMS['in_domain']}.csv"
    expected = tables.read_csv(path)
    (cached,) = (Path(os.environ["GCL_EVAL_CACHE"]) / "tables").glob("*.parquet")
    cached.write_bytes(b"not parquet")
    assert tables.read_csv(path).equals(expected)
    assert cached.read_bytes()[:4] == b"PAR1"


# --------------------------------------------------------------------------------------- writing


def synthetic_dataset(with_bytes: bool = True) -> Dataset:
    """Four splits over two corpora, images held as bytes (or as files when with_bytes is False)."""
    def pairs(rows):
        frame = pd.DataFrame(rows, columns=["query_id", "query", "doc_id", "score"])
        return frame.astype({"query_id": "str", "query": "str", "doc_id": "str", "score": "float64"})

    blobs = {"007": png_bytes((1, 2, 3)), "a/b": png_bytes((4, 5, 6))}
    c1 = make_documents(["007", "008", "a/b"], [AWKWARD_TITLE, None, "Chair"], ["007", None, "a/b"],
                        {"colour": ["red", "blue", None], "attrs": [{"n": 1}, {"n": 2}, {"n": 3}]})
    c2 = make_documents(["x1", "x2"], ["Lamp", "Rug, wool"], [None, None])
    store = BytesImageStore(blobs.__getitem__)
    return Dataset(
        name="tiny",
        pairs={
            "in_domain": pairs([["q1", "red chair", "007", 100], ["q1", "red chair", "a/b", 99],
                                ["q2", "lamp, brass", "008", 100]]),
            "novel_query": pairs([["q3", "grün", "007", 100]]),
            "novel_corpus": pairs([["q1", "red chair", "x1", 100], ["q2", "lamp, brass", "x2", 42]]),
            "zero_shot": pairs([["q3", "grün", "x2", 100]]),
        },
        corpora={"corpus_1": Documents(c1, store), "corpus_2": Documents(c2, store)},
        ground_truth={("zero_shot", "dev"): {"q3": {"x2": 100}}},
    )


def test_write_read_round_trip(tmp_path):
    ds = synthetic_dataset()
    out = write_marqo(ds, tmp_path / "out", extra_files={"synth.json": b"{}\n", "synth/info.txt": b"hi"})
    back = read_marqo(out)
    for split in SPLITS:
        pd.testing.assert_frame_equal(back.pairs[split], ds.pairs[split])
    c1 = back.corpora["corpus_1"]
    assert c1.titles() == [AWKWARD_TITLE, None, "Chair"]
    assert c1.table["colour"].tolist()[:2] == ["red", "blue"] and pd.isna(c1.table.at["a/b", "colour"])
    assert c1.table["attrs"].tolist() == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert c1.images.read_bytes(c1.table.at["007", "image"]) == png_bytes((1, 2, 3))
    assert c1.table.at["a/b", "image"].startswith(str(out / "images")) and c1.table.at["008", "image"] is None
    assert back.ground_truth == {("zero_shot", "dev"): {"q3": {"x2": 100}}}
    assert (out / "synth.json").read_bytes() == b"{}\n" and (out / "synth" / "info.txt").read_bytes() == b"hi"
    header = (out / f"{SPLIT_STEMS['in_domain']}.csv").read_text().splitlines()[0]
    assert header.replace('"', "") == "query_id,query,product_id,title,image_local,score_linear,position"
    csv_rows = pd.read_csv(out / f"{SPLIT_STEMS['novel_corpus']}.csv", dtype=str)
    assert csv_rows["position"].tolist() == ["1", "59"]
    # a second write of what was read points at the image files by absolute path
    again = write_marqo(back, tmp_path / "again")
    corpus = json.loads((again / "corpus_1.json").read_text())
    assert corpus["007"]["image_local"] == str(out / "images" / "007.png")


def test_write_is_deterministic(tmp_path):
    a = write_marqo(synthetic_dataset(), tmp_path / "a")
    b = write_marqo(synthetic_dataset(), tmp_path / "b")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(files_a) == 9  # 4 split CSVs, 2 corpora, 1 ground-truth file, 2 images
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_write_score_not_integer_has_no_position(tmp_path):
    ds = synthetic_dataset()
    ds.pairs["zero_shot"].loc[0, "score"] = 0.5
    out = write_marqo(ds, tmp_path / "out")
    header = (out / f"{SPLIT_STEMS['zero_shot']}.csv").read_text().splitlines()[0].replace('"', "")
    assert header.endswith("score_linear")
    assert read_marqo(out).pairs["zero_shot"]["score"].tolist() == [0.5]


def test_write_is_atomic_on_error(tmp_path):
    ds = synthetic_dataset()
    ds.pairs["zero_shot"].loc[0, "doc_id"] = "missing-doc"
    with pytest.raises(DataError, match="missing-doc"):
        write_marqo(ds, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GclError, match="relative path"):
        write_marqo(synthetic_dataset(), tmp_path / "out", extra_files={"../escape": b""})
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_existing_folder_unless_overwrite(tmp_path):
    out = write_marqo(synthetic_dataset(), tmp_path / "out")
    (out / "stale.txt").write_text("old")
    with pytest.raises(GclError, match="already exists"):
        write_marqo(synthetic_dataset(), out)
    assert (out / "stale.txt").exists()
    write_marqo(synthetic_dataset(), out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_fast_enough_for_synth_sizes(tmp_path):
    import time

    n_docs, n_queries, per_query = 20_000, 1000, 50
    blob = png_bytes()
    ids = np.array([f"p{i:06d}" for i in range(n_docs)], dtype=object)
    docs = make_documents(ids, [f'title {i}, "x"' for i in range(n_docs)], ids)
    store = BytesImageStore(lambda ref: blob)
    half = n_docs // 2
    rng = np.random.default_rng(0)
    frames = {}
    for split in SPLITS:
        offset = 0 if split in ("in_domain", "novel_query") else half
        frames[split] = pd.DataFrame({
            "query_id": np.repeat([f"{split}-{q}" for q in range(n_queries)], per_query),
            "query": np.repeat([f"query {split} {q}" for q in range(n_queries)], per_query),
            "doc_id": ids[offset + rng.integers(0, half, n_queries * per_query)],
            "score": np.tile(np.arange(100, 100 - per_query, -1), n_queries).astype(float),
        }).astype({"query_id": "str", "query": "str", "doc_id": "str"})
    ds = Dataset("big", frames, {"corpus_1": Documents(docs.iloc[:half], store),
                                 "corpus_2": Documents(docs.iloc[half:], store)})
    start = time.perf_counter()
    write_marqo(ds, tmp_path / "big")
    elapsed = time.perf_counter() - start
    assert len(list((tmp_path / "big" / "images").iterdir())) == n_docs
    assert elapsed < 20, elapsed  # ~1-2 s here (20k images, 200k pairs); generous for slow CI disks


# ------------------------------------------------------------------------------------- bad input


def _csv(root: Path, split: str) -> Path:
    return root / f"{SPLIT_STEMS[split]}.csv"


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda r: _csv(r, "novel_query").unlink(), r"query_1_product_id_0\.csv: missing file"),
        (lambda r: (r / "corpus_2.json").unlink(), r"corpus_2\.json: missing file"),
        (lambda r: _rewrite(_csv(r, "in_domain"), "score_linear", "score"),
         r"query_0_product_id_0\.csv: missing column 'score_linear'; columns found: query_id, query"),
        (lambda r: _rewrite(_csv(r, "in_domain"), ",99", ",ninety"),
         r"query_0_product_id_0\.csv row 2: score_linear 'ninety' is not a finite number, expected a number"),
        (lambda r: _rewrite(_csv(r, "in_domain"), ",99", ",nan"), r"\.csv row 2: score_linear 'nan' is not a finite"),
        (lambda r: _rewrite(_csv(r, "in_domain"), ",99", ","), r"\.csv row 2: score_linear missing"),
        (lambda r: _rewrite(_csv(r, "in_domain"), "00124", "00123"),
         r"\.csv row 2: duplicate \(query, product_id\) pair \(query 'red sofa', product_id '00123'\), "
         r"first seen at .*\.csv row 1"),
        (lambda r: _rewrite(_csv(r, "in_domain"), "00124", ""), r"\.csv row 2: empty 'product_id'"),
        (lambda r: _rewrite(_csv(r, "novel_corpus"), "A-2", "A-9"),
         r"query_0_product_id_1\.csv row 2: product_id 'A-9' is not in corpus_2\.json"),
        (lambda r: _rewrite(_csv(r, "novel_query"), "00123", "A-1"),
         r"query_1_product_id_0\.csv row 1: product_id 'A-1' is not in corpus_1\.json"),
        (lambda r: (r / "corpus_1.json").write_text('{"00123": {"title": "x",}'),
         r"corpus_1\.json: unreadable JSON at line 1 column"),
        (lambda r: (r / "corpus_1.json").write_text("[1, 2]"), r"corpus_1\.json: expected a JSON object"),
        (lambda r: _rewrite(r / "query_1_product_id_0_gt_test.json", '"0500"', '"9999"'),
         r"_gt_test\.json: query 'green rug, large': unknown product_id '9999' \(not in corpus_1\.json\)"),
        (lambda r: _rewrite(r / "query_1_product_id_0_gt_test.json", "98", "9.5"),
         r"_gt_test\.json: query 'green rug, large', product_id '0500': grade 9\.5, expected an integer"),
        (lambda r: _rewrite(r / "query_1_product_id_0_gt_test.json", "98", "NaN"),
         r"_gt_test\.json: query 'green rug, large', product_id '0500': grade nan, expected an integer"),
        (lambda r: _rewrite(_csv(r, "in_domain"), "Q001,red sofa,csv title ignored,,00124",
                            "Q001,red sofas,csv title ignored,,00124"),
         r"\.csv row 2: query_id 'Q001' has the query text 'red sofas' but an earlier row gives it 'red sofa'"),
        (lambda r: _csv(r, "zero_shot").write_bytes(b"query,product_id,score_linear\n\xff\xfe,A-2,1\n"),
         r"query_1_product_id_1\.csv: unreadable CSV"),
    ],
    ids=["missing-csv", "missing-corpus", "missing-column", "non-numeric-score", "nan-score", "empty-score",
         "duplicate-pair", "empty-id", "product-not-in-corpus", "product-of-other-corpus", "bad-json",
         "json-not-object", "gt-unknown-product", "gt-non-integer", "gt-nan", "two-texts-one-id", "not-utf8"],
)
def test_bad_input_names_file_row_and_expectation(tmp_path, mutate, pattern):
    root = make_marqo_folder(tmp_path / "ds")
    mutate(root)
    with pytest.raises(DataError, match=pattern) as info:
        read_marqo(root)
    assert "\n" not in str(info.value)


def test_other_score_column(tmp_path):
    root = make_marqo_folder(tmp_path / "ds")
    with pytest.raises(DataError, match="missing column 'score_reciprocal'"):
        read_marqo(root, score_column="score_reciprocal")
    for split in SPLITS:
        _rewrite(_csv(root, split), "score_linear", "score_reciprocal")
    assert read_marqo(root, score_column="score_reciprocal").pairs["in_domain"]["score"].tolist() == [100, 99, 100]
