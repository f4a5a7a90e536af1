"""Atomic files and folders (unique temp names, rollback, no debris), file locks, and caches shared by
two processes at once (each entry built once, both get the same result)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from gcl_eval.util import atomic
from gcl_eval.util.atomic import atomic_file, atomic_folder, atomic_write_bytes, atomic_write_text, file_lock
from gcl_eval.util.errors import GclError

REPO = Path(__file__).resolve().parents[1]


def hidden(folder: Path) -> list[str]:
    """Temp files, moved-aside folders and the like (lock files aside)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


# ------------------------------------------------------------------------------------------ files


def test_write_text_and_bytes_replace_whole_files(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "zweite ✓\r\n")
    assert target.read_bytes() == "zweite ✓\r\n".encode()  # UTF-8, newlines as given
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert hidden(tmp_path) == []


def test_temp_names_are_unique_hidden_siblings(tmp_path):
    target = tmp_path / "x.json"
    with atomic_file(target) as one, atomic_file(target) as two:
        assert one != two and one.parent == two.parent == tmp_path
        assert one.name.startswith(".x.json.tmp-") and f"-{os.getpid()}-" in one.name
        one.write_text("1")
        two.write_text("2")
    assert target.read_text() == "1"  # the outer block finished last
    assert hidden(tmp_path) == []


def test_failure_inside_the_block_keeps_the_old_content(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_file(target) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("half-way")
    assert target.read_text() == "old" and hidden(tmp_path) == []


def test_failed_flush_or_rename_keeps_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def broken(*_args):
        raise OSError(5, "Input/output error")

    for name in ("_fsync", "replace"):
        with monkeypatch.context() as patch:
            patch.setattr(atomic if name == "_fsync" else os, name, broken)
            with pytest.raises(OSError, match="Input/output"):
                atomic_write_text(target, "new")
        assert target.read_text() == "old" and hidden(tmp_path) == []


def test_two_threads_writing_one_path_never_mix(tmp_path):
    target = tmp_path / "shared.bin"
    payloads = [bytes([n]) * 300_000 for n in (1, 2)]
    seen, stop = set(), threading.Event()

    def writer(data: bytes) -> None:
        for _ in range(15):
            atomic_write_bytes(target, data)

    def reader() -> None:
        while not stop.is_set():
            if target.exists():
                seen.add(target.read_bytes())

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    watch = threading.Thread(target=reader)
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watch.join()
    assert target.read_bytes() in payloads
    assert seen <= set(payloads)  # every read saw one whole version
    assert hidden(tmp_path) == []


def test_two_processes_writing_one_path_never_mix(tmp_path):
    target = tmp_path / "shared.txt"
    code = textwrap.dedent("""
        import sys
        from gcl_eval.util.atomic import atomic_write_text
        for _ in range(40):
            atomic_write_text(sys.argv[1], sys.argv[2] * 50_000)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), mark]) for mark in "AB"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert target.read_text() in ("A" * 50_000, "B" * 50_000)
    assert hidden(tmp_path) == []


# ---------------------------------------------------------------------------------------- folders


def make_folder(out: Path, text: str) -> None:
    with atomic_folder(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f.txt").write_text(text)
        (tmp / "g.txt").write_text(text)


def test_folder_appears_and_is_replaced_whole(tmp_path):
    out = tmp_path / "deep" / "site"
    make_folder(out, "one")
    (out / "stale.txt").write_text("from the old folder")
    make_folder(out, "two")
    assert sorted(p.name for p in out.rglob("*")) == ["f.txt", "g.txt", "sub"]
    assert (out / "sub" / "f.txt").read_text() == "two"
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)
    assert hidden(out.parent) == []


def test_folder_failure_inside_the_block_keeps_the_old_one(tmp_path):
    out = tmp_path / "site"
    make_folder(out, "old")
    with pytest.raises(ValueError):
        with atomic_folder(out) as tmp:
            (tmp / "g.txt").write_text("new")
            raise ValueError("bad input")
    assert (out / "g.txt").read_text() == "old" and hidden(tmp_path) == []


def test_folder_swap_rolls_back_when_the_final_rename_fails(tmp_path, monkeypatch):
    out = tmp_path / "site"
    make_folder(out, "old")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if Path(dst) == out and len(calls) == 2:  # the new folder onto `out`, after the old one moved aside
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        make_folder(out, "new")
    assert [dst for _, dst in calls][1:] == ["site", "site"]  # tried the swap, then moved the old one back
    assert calls[0][1].startswith(".site.old-")
    assert (out / "g.txt").read_text() == "old" and (out / "sub" / "f.txt").read_text() == "old"
    assert hidden(tmp_path) == []


def test_folder_swap_that_cannot_roll_back_says_where_the_old_one_is(tmp_path, monkeypatch):
    out = tmp_path / "site"
    make_folder(out, "old")
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out:
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(GclError, match=r"previous content is in .*\.site\.old-"):
        make_folder(out, "new")
    (kept,) = hidden(tmp_path)
    assert (tmp_path / kept / "g.txt").read_text() == "old"


def test_folder_whose_flush_fails_is_not_swapped_in(tmp_path, monkeypatch):
    out = tmp_path / "site"
    make_folder(out, "old")

    def broken(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic, "_fsync", broken)
    with pytest.raises(OSError, match="Input/output"):
        make_folder(out, "new")
    assert (out / "g.txt").read_text() == "old" and hidden(tmp_path) == []


def test_folder_flushes_every_file(tmp_path, monkeypatch):
    flushed = []
    real = atomic._fsync
    monkeypatch.setattr(atomic, "_fsync", lambda path: flushed.append(Path(path).name) or real(path))
    with atomic_folder(tmp_path / "many") as tmp:
        for i in range(40):
            (tmp / f"{i}.png").write_bytes(b"x")
    assert {f"{i}.png" for i in range(40)} <= set(flushed)


# ------------------------------------------------------------------------------------------ locks


def test_file_lock_excludes_others_until_released(tmp_path):
    entry = tmp_path / "entry.npy"
    lock_file = tmp_path / ".entry.npy.lock"
    with file_lock(entry) as held:
        assert held and lock_file.exists()
        with pytest.raises(Timeout):
            FileLock(str(lock_file)).acquire(timeout=0)
    with FileLock(str(lock_file), timeout=0):  # free again
        pass


def test_file_lock_serialises_threads(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")

    def bump() -> None:
        for _ in range(25):
            with file_lock(counter):
                value = int(counter.read_text())
                time.sleep(0)  # let the other thread run between read and write
                counter.write_text(str(value + 1))

    threads = [threading.Thread(target=bump) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read_text() == "75"


def test_best_effort_lock_runs_unlocked_where_no_lock_file_can_be(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        with file_lock(blocker / "entry"):
            pass
    with file_lock(blocker / "entry", best_effort=True) as held:
        assert held is False


# ------------------------------------------------------------------- a cache shared by two processes

WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path

    kind, source, marker, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])

    def log(line):
        with open(marker, "a") as fh:
            fh.write(line + "\\n")

    def wait_for_go():
        deadline = time.monotonic() + 120
        while not go.exists():
            assert time.monotonic() < deadline, "never told to go on"
            time.sleep(0.01)

    def building(make):  # the expensive step, held until the test has both processes in flight
        def build(*args):
            log(f"built by {os.getpid()}")
            wait_for_go()
            return make(*args)
        return build

    if kind == "embedding":
        import numpy as np
        from gcl_eval.retrieval.embedding_cache import EmbeddingCache

        cache = EmbeddingCache(source)
        log(f"asking {os.getpid()}")
        array = cache.get_or_compute({"model": "m", "content": "c"},
                                     building(lambda: np.arange(12, dtype=np.float32).reshape(3, 4) / 7))
        print(json.dumps({"value": array.tolist(), "stats": cache.stats.as_dict()}))
    else:
        from gcl_eval.data import tables

        tables._parse_csv = building(tables._parse_csv)
        log(f"asking {os.getpid()}")
        table = tables.read_csv(source)
        print(json.dumps({"value": table.to_pylist()}))
""")


def run_two_at_once(tmp_path: Path, kind: str, source: Path) -> tuple[list[dict], list[str]]:
    """Start two workers together; once one is building the entry and both have asked for it, let it
    finish. Returns their outputs and the marker lines."""
    import json

    marker, go = tmp_path / "marker.log", tmp_path / "go"
    marker.touch()
    env = {**os.environ, "GCL_EVAL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, kind, str(source), str(marker), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while True:
            lines = marker.read_text().splitlines()
            if sum(line.startswith("asking") for line in lines) == 2 and any(l.startswith("built") for l in lines):
                break
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, lines
            time.sleep(0.02)
        time.sleep(0.3)  # not asserted on: gives the second worker time to reach the lock
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    return [json.loads(out) for out, _ in outputs], marker.read_text().splitlines()


def test_two_processes_share_one_embedding_cache_entry(tmp_path):
    results, lines = run_two_at_once(tmp_path, "embedding", tmp_path / "emb")
    assert sum(line.startswith("built") for line in lines) == 1  # computed once
    assert results[0]["value"] == results[1]["value"]
    stats = sorted((r["stats"]["hits"], r["stats"]["misses"]) for r in results)
    assert stats == [(0, 1), (1, 0)]  # the second one waited, then loaded the first one's entry
    assert not [p for p in (tmp_path / "emb").rglob("*") if ".tmp-" in p.name]


def test_two_processes_share_one_parsed_table(tmp_path):
    source = tmp_path / "pairs.csv"
    source.write_text("query,product_id,score\nred mug,007,100\n\"sofa, blue\",008,99\n")
    results, lines = run_two_at_once(tmp_path, "csv", source)
    assert sum(line.startswith("built") for line in lines) == 1  # parsed once
    assert results[0]["value"] == results[1]["value"] == [
        {"query": "red mug", "product_id": "007", "score": "100"},
        {"query": "sofa, blue", "product_id": "008", "score": "99"},
    ]
    assert len(list((tmp_path / "cache" / "tables").glob("*.parquet"))) == 1


# ------------------------------------------------- the built-in world and the checkpoint cache, built once


def build_concurrently(call, build_patch) -> tuple[list, list]:
    """Run `call()` in two threads at once while `build_patch(builder)` is in place; the builder records
    its call and holds until both threads have asked. Returns (builds, results)."""
    builds, results, asked = [], [], threading.Semaphore(0)

    def builder(folder: Path, finish) -> None:
        builds.append(folder)
        for _ in range(2):
            assert asked.acquire(timeout=60)
        time.sleep(0.2)  # not asserted on: gives the other thread time to reach the lock
        finish(folder)

    build_patch(builder)

    def worker():
        asked.release()
        results.append(call())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return builds, results


def test_builtin_world_is_generated_once_by_two_runs_at_once(monkeypatch):
    from gcl_eval.data.synth import build
    from gcl_eval.experiments.datasets import builtin_dataset

    def finish(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "synth.json").write_text("{}")

    def patch(builder):
        monkeypatch.setattr(build, "write_synthetic", lambda config, folder, overwrite: builder(folder, finish))

    builds, results = build_concurrently(lambda: builtin_dataset("default"), patch)
    assert len(builds) == 1 and len(results) == 2 and results[0] == results[1] == builds[0]


def test_checkpoint_is_trained_once_by_two_runs_at_once(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import trainers.checkpoint
    import trainers.loop
    from gcl_eval.experiments.checkpoints import train_or_reuse
    from gcl_eval.experiments.preset import load_preset

    def finish(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / trainers.checkpoint.DONE_FILE).write_text("{}")

    def patch(builder):
        monkeypatch.setattr(trainers.loop, "train",
                            lambda config, dataset, folder, resume, evaluate=None: builder(folder, finish))
        monkeypatch.setattr(trainers.checkpoint, "load_trained", lambda folder, device: f"model in {folder.name}")

    dataset = SimpleNamespace(fingerprint=lambda: "same data")
    preset = load_preset("tiny-gcl")
    builds, results = build_concurrently(
        lambda: train_or_reuse(preset, dataset, device="cpu", root=tmp_path / "checkpoints"), patch)
    assert len(builds) == 1 and len(results) == 2
    assert sorted(r.reused for r in results) == [False, True]
    assert results[0].trained == results[1].trained == f"model in {builds[0].name}"
