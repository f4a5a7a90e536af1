"""`gcl-eval cache list` / `prune`: sizes, last use, LRU order, locks and temporaries respected."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gcl_eval.experiments.cache import list_entries, parse_age, parse_size, prune
from gcl_eval.util.paths import cache_dir

DAY = 86400.0


def _age(path: Path, days: float) -> None:
    """Make every file of ``path`` (and the folder) look last used ``days`` ago."""
    when = time.time() - days * DAY
    for folder, _, names in os.walk(path) if path.is_dir() else []:
        for name in names:
            os.utime(Path(folder, name), (when, when))
    os.utime(path, (when, when))


@pytest.fixture
def cache():
    """A cache with a real parsed table, a real embedding entry and two checkpoint folders, of known ages."""
    from gcl_eval.data.tables import read_csv
    from gcl_eval.retrieval.embedding_cache import EmbeddingCache

    root = cache_dir()
    source = root.parent / "pairs.csv"
    source.write_text("query_id,title\n00123,a\n00124,b\n")
    read_csv(source)
    table = next((root / "tables").glob("*.parquet"))
    emb = EmbeddingCache()
    emb.get_or_compute({"what": "test"}, lambda: np.ones((50, 8), dtype=np.float32))
    for name, size in (("old-0001", 4000), ("new-0002", 2000)):
        (root / "checkpoints" / name).mkdir(parents=True)
        (root / "checkpoints" / name / "model.pt").write_bytes(b"x" * size)
    _age(table, 40)
    _age(root / "checkpoints" / "old-0001", 20)
    _age(root / "checkpoints" / "new-0002", 1)
    return root


def _names(entries) -> list[str]:
    return [f"{e.kind}/{e.name}" for e in entries]


def test_list_shows_entries_with_sizes_least_recently_used_first(cache, gcl):
    entries = list_entries()
    assert [e.kind for e in entries] == ["tables", "checkpoints", "checkpoints", "embeddings"]
    assert entries[1].name == "old-0001" and entries[1].size == 4000
    assert entries[3].size == sum(p.stat().st_size for p in (cache / "embeddings").rglob("*") if p.is_file()
                                  and not p.name.startswith("."))
    result = gcl("cache", "list", "--json")
    assert result.code == 0
    listed = result.json()
    assert [e["name"] for e in listed["entries"]] == [e.name for e in entries]
    assert listed["bytes"] == sum(e.size for e in entries)
    text = gcl("cache", "list")
    assert text.code == 0 and "old-0001" in text.out and "3.9 K" in text.out


def test_reading_an_entry_refreshes_its_last_use(cache):
    from gcl_eval.data.tables import read_csv

    before = list_entries()[0]
    assert before.kind == "tables"
    read_csv(cache.parent / "pairs.csv")  # a cache hit
    after = {e.name: e for e in list_entries()}[before.name]
    assert after.last_use > before.last_use + 30 * DAY


def test_prune_by_age(cache, gcl):
    result = gcl("cache", "prune", "--older-than", "10d")
    assert result.code == 0, result.err
    assert _names(list_entries())[0] == "checkpoints/new-0002"
    assert not (cache / "checkpoints" / "old-0001").exists()
    assert "removed 2 entries" in result.out


def test_prune_by_size_removes_least_recently_used_first(cache):
    entries = list_entries()
    total = sum(e.size for e in entries)
    # room for all but the two oldest
    outcome = prune(max_size=total - entries[0].size - entries[1].size)
    assert _names(outcome.removed) == _names(entries[:2])
    assert _names(list_entries()) == _names(entries[2:])
    assert outcome.remaining_bytes == sum(e.size for e in list_entries())
    prune(max_size=0)
    assert list_entries() == []


def test_dry_run_removes_nothing(cache, gcl):
    before = list_entries()
    result = gcl("cache", "prune", "--max-size", "0", "--dry-run")
    assert result.code == 0
    assert f"would remove {len(before)} entries" in result.out
    assert list_entries() == before


def test_an_entry_locked_by_another_process_is_skipped(cache):
    target = cache / "checkpoints" / "old-0001"
    table = list_entries()[0]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom gcl_eval.util.atomic import file_lock\n"
         f"with file_lock({str(target)!r}):\n    print('held', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = prune(older_than=10 * DAY)
        assert [(e.name, why) for e, why in outcome.skipped] == [("old-0001", "in use (locked by another process)")]
        assert _names(outcome.removed) == [f"tables/{table.name}"]
        assert (target / "model.pt").exists()
    finally:
        holder.communicate("")
    assert _names(prune(older_than=10 * DAY).removed) == ["checkpoints/old-0001"]


def test_temporaries_are_never_removed_nor_their_entry(cache):
    folder = cache / "checkpoints"
    sibling = folder / ".old-0001.tmp-123-abc"  # an atomic write of old-0001 in progress
    sibling.mkdir()
    (sibling / "model.pt").write_bytes(b"y" * 10)
    inside = folder / "new-0002" / ".model.pt.tmp-456-def"  # a file being written inside an entry
    inside.write_bytes(b"z")
    _age(folder / "new-0002", 1)
    stray = cache / "tables" / ".abc.parquet.tmp-789-0a1"
    stray.write_bytes(b"t")
    outcome = prune(max_size=0)
    assert sorted(e.name for e, why in outcome.skipped if why == "being written") == ["new-0002", "old-0001"]
    assert sibling.exists() and inside.exists() and stray.exists()
    assert (folder / "old-0001" / "model.pt").exists()
    assert {e.name for e in list_entries()} == {"old-0001", "new-0002"}
    assert all(e.writing for e in list_entries())


@pytest.mark.parametrize("args", [("--older-than", "3x"), ("--older-than", "-1d"), ("--max-size", "lots"),
                                  ("--max-size", "5Q"), ()])
def test_bad_options_exit_2_with_one_line(gcl, args):
    result = gcl("cache", "prune", *args)
    assert result.code == 2
    assert len(result.error_lines) == 1 and result.error_lines[0].startswith("gcl-eval: error:")


def test_size_and_age_units():
    assert parse_size("20G") == 20 * 1024**3 and parse_size("500M") == 500 * 1024**2
    assert parse_size("1.5K") == 1536 and parse_size("4096") == 4096 and parse_size("2GiB") == 2 * 1024**3
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 12 * 3600 and parse_age("2w") == 14 * DAY


def test_downloads_and_models_are_one_entry_per_file_with_its_checksum_and_partial_download():
    root = cache_dir()
    downloads, model = root / "downloads", root / "models" / "0123abcd"
    downloads.mkdir()
    model.mkdir(parents=True)
    (downloads / "images.tar").write_bytes(b"a" * 100)
    (downloads / "images.tar.sha256").write_text("0" * 64 + "  images.tar\n")
    (downloads / "text.zip.part").write_bytes(b"b" * 10)  # a download to resume
    (downloads / "text.zip.part.json").write_text("{}")
    (model / "open_clip_model.safetensors").write_bytes(b"c" * 50)
    (model / ".open_clip_model.safetensors.lock").touch()
    entries = {f"{e.kind}/{e.name}": e for e in list_entries()}
    assert sorted(entries) == ["downloads/images.tar", "downloads/text.zip",
                               "models/0123abcd/open_clip_model.safetensors"]
    assert entries["downloads/images.tar"].size == 100 + 77 and entries["downloads/text.zip"].size == 12
    assert len(prune(max_size=0).removed) == 3
    assert list_entries() == [] and (model / ".open_clip_model.safetensors.lock").exists()
