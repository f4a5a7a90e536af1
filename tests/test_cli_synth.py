"""`gcl-eval data synth` end to end: sizes, diagnostics, determinism to the byte, bad options."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gcl_eval.data.io import read_dataset


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory, gcl):
    out = tmp_path_factory.mktemp("synth") / "d"
    result = gcl("data", "synth", "--out", out, "--queries", "500", "--docs-per-query", "40", "--seed", "7",
                 "--image-size", "32")
    assert result.code == 0, result.err
    return out


def test_synth_then_check_shows_the_quadruple_structure(gcl, synth_dir):
    result = gcl("data", "check", synth_dir, "--json")
    assert result.code == 0, result.err
    report = result.json()
    splits = report["splits"]
    assert list(splits) == ["in_domain", "novel_query", "novel_corpus", "zero_shot"]
    assert {s: v["corpus"] for s, v in splits.items()} == {
        "in_domain": "corpus_1", "novel_query": "corpus_1", "novel_corpus": "corpus_2", "zero_shot": "corpus_2"}
    assert splits["in_domain"]["queries"] == splits["novel_corpus"]["queries"] == 400
    assert splits["novel_query"]["queries"] == splits["zero_shot"]["queries"] == 100
    assert sum(v["pairs"] for v in splits.values()) == 500 * 40
    assert splits["in_domain"]["corpus_size"] + splits["zero_shot"]["corpus_size"] == 2500
    for v in splits.values():
        assert set(v) == {"pairs", "queries", "docs", "corpus", "corpus_size"}


def test_cold_start_splits_are_truly_novel(synth_dir):
    dataset = read_dataset(synth_dir)
    train_q = set(dataset.pairs["in_domain"]["query"])
    eval_q = set(dataset.pairs["novel_query"]["query"]) | set(dataset.pairs["zero_shot"]["query"])
    assert not train_q & eval_q
    assert not set(dataset.corpora["corpus_1"].ids) & set(dataset.corpora["corpus_2"].ids)
    queries = json.loads((synth_dir / "synth.json").read_text())
    assert queries["config"]["seed"] == 7
    # a novel query is a novel intent, not a rephrasing of a training one
    import pandas as pd

    intents = pd.read_parquet(synth_dir / "synth" / "queries.parquet").set_index("query")
    key = ["category", "colour", "material", "pattern", "style", "brand"]
    train_intents = set(map(tuple, intents.loc[sorted(train_q), key].astype(str).to_numpy()))
    eval_intents = set(map(tuple, intents.loc[sorted(eval_q), key].astype(str).to_numpy()))
    assert not train_intents & eval_intents


def test_every_split_csv_carries_query_ids_shared_across_splits(synth_dir):
    import pandas as pd

    ids = {}
    for stem in ("query_0_product_id_0", "query_0_product_id_1", "query_1_product_id_0", "query_1_product_id_1"):
        frame = pd.read_csv(synth_dir / f"{stem}.csv", dtype=str)
        assert "query_id" in frame.columns
        for qid, query in zip(frame["query_id"], frame["query"]):
            assert ids.setdefault(qid, query) == query


def test_images_are_png_files_the_reader_can_load(synth_dir):
    dataset = read_dataset(synth_dir)
    docs = dataset.corpora["corpus_2"]
    image = docs.load_image(docs.ids[0])
    assert image.size == (32, 32)


def test_same_seed_same_bytes(gcl, tmp_path, synth_dir):
    again = tmp_path / "again"
    result = gcl("data", "synth", "--out", again, "--queries", "500", "--docs-per-query", "40", "--seed", "7",
                 "--image-size", "32")
    assert result.code == 0, result.err
    assert _tree_digest(again) == _tree_digest(synth_dir)


def test_diagnostics_show_the_signal_and_the_control_hides_it(gcl, tmp_path):
    args = ["data", "synth", "--queries", "300", "--docs-per-query", "40", "--no-images", "--json"]
    visible = gcl(args + ["--out", tmp_path / "v"]).json()
    hidden = gcl(args + ["--out", tmp_path / "h", "--quality-hidden"]).json()
    assert visible["quality_cues"]["estimate_held_out"] > 0.6
    assert abs(hidden["quality_cues"]["estimate_held_out"]) < 0.15
    for split in ("novel_corpus", "zero_shot"):
        assert visible["ceiling"][split]["content"]["ERR"] > hidden["ceiling"][split]["content"]["ERR"] + 0.05


def test_existing_folder_and_bad_options_exit_2(tmp_path, synth_dir):
    existing = subprocess.run([sys.executable, "-m", "gcl_eval", "data", "synth", "--out", str(synth_dir),
                               "--queries", "20", "--docs-per-query", "5"], capture_output=True, text=True)
    assert existing.returncode == 2
    assert existing.stderr.count("\n") == 1 and "Traceback" not in existing.stderr
    bad = subprocess.run([sys.executable, "-m", "gcl_eval", "data", "synth", "--out", str(tmp_path / "x"),
                          "--docs-per-query", "500"], capture_output=True, text=True)
    assert bad.returncode == 2 and "docs-per-query" in bad.stderr
    assert not (tmp_path / "x").exists()
