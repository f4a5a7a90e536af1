"""`gcl-eval data list / get`: the registry, resumable verified downloads, safe extraction, re-rooting.

Everything runs against a local HTTP server (tests/file_server.py) serving a miniature of the
published archives, built here in their layout: `marqo-gs-dataset/<subset>/...` with the image
paths of another machine in the corpus and CSV files and reference-style ground-truth keys, a second
subset that must not be extracted, and an image archive.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest

from baselines.bm25 import BM25Retriever
from gcl_eval.data import download as download_module
from gcl_eval.data import get as get_module
from gcl_eval.data.check import check_dataset
from gcl_eval.data.dataset import SPLIT_STEMS
from gcl_eval.data.io import read_dataset
from gcl_eval.data.marqo import REFERENCE_KEY_SUFFIX
from gcl_eval.data.registry import dataset_names, get_entry
from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import write_synthetic
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset
from gcl_eval.util.errors import DataError, GclError
from file_server import FileServer

NAME, SUBSET, OTHER_SUBSET = "marqo-gs-wfash-1m", "marqo_gs_wfash_1m", "marqo_gs_fashion_5m"
TEXT, IMAGES = "marqo-gs-dataset.tar", "images_wfash.tar"
FOREIGN = "/home/someone/images/"
GT_FILE = f"{SPLIT_STEMS['novel_query']}_gt_test.json"
DATA_FILES = ("corpus_1.json", "corpus_2.json", *(f"{stem}.csv" for stem in SPLIT_STEMS.values()))


@dataclass(frozen=True)
class Miniature:
    source: Path  # the dataset as written by gcl-eval, images beside it, plain ground-truth keys
    text: bytes  # marqo-gs-dataset.tar
    images: bytes  # images_wfash.tar


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> Miniature:
    root = tmp_path_factory.mktemp("miniature")
    source = root / "source"
    write_synthetic(SynthConfig(queries=40, docs_per_query=10, image_size=16, seed=1), source, diagnostics=False)
    pairs = pd.read_csv(source / f"{SPLIT_STEMS['novel_query']}.csv", dtype=str)
    truth = {q: dict(zip(g["product_id"], g["score_linear"].astype(int))) for q, g in pairs.groupby("query")}
    (source / GT_FILE).write_text(json.dumps(truth))
    published = {name: _published(source / name) for name in DATA_FILES}
    published[GT_FILE] = json.dumps({q + REFERENCE_KEY_SUFFIX: g for q, g in truth.items()}).encode()
    text = _tar({f"marqo-gs-dataset/{subset}/{name}": data for subset in (SUBSET, OTHER_SUBSET)
                 for name, data in published.items()})
    images = {f"images_wfash/{p.name}": p.read_bytes() for p in sorted((source / "images").iterdir())}
    images["images_wfash/not-referenced.png"] = b"\x89PNG\r\n\x1a\n"
    return Miniature(source, text, _tar(images))


def _published(path: Path) -> bytes:
    """A file as the authors published it: image paths of their machine, not of this one."""
    return path.read_text(encoding="utf-8").replace('"images/', '"' + FOREIGN).replace(",images/", "," + FOREIGN) \
        .encode()


def _tar(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


@pytest.fixture
def server(miniature, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("GCL_EVAL_MIRROR", raising=False)
    monkeypatch.setattr(download_module, "BACKOFF", 0.0)
    srv = FileServer()
    srv.files.update({TEXT: miniature.text, IMAGES: miniature.images})
    srv.start()
    yield srv
    srv.stop()


def get(gcl, server, *args):
    return gcl("data", "get", NAME, "--mirror", server.url, *args)


def error_line(result) -> str:
    """The one error line of a failed call (progress lines may precede it on stderr)."""
    errors = [line for line in result.error_lines if line.startswith("gcl-eval: error:")]
    assert result.code == 2 and len(errors) == 1 and "Traceback" not in result.err, result.err
    return errors[0]


def evaluate(path: Path, **protocol) -> dict:
    dataset = read_dataset(path)
    result = evaluate_dataset(BM25Retriever(), dataset, EvalProtocol(queries_per_split=20, **protocol)).result
    return {split: body["metrics"] for split, body in result.splits.items()}


def cache_files() -> list[Path]:
    return sorted(p for p in get_module.cache_dir("downloads").iterdir() if not p.name.startswith("."))


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------ registry


def test_registry_names_the_published_archives():
    assert {"marqo-gs-10m", "marqo-gs-fashion-5m", NAME} <= set(dataset_names())
    full = get_entry("marqo-gs-10m")
    assert full.subset == "marqo_gs_full_10m" and full.member_prefix == "marqo-gs-dataset/marqo_gs_full_10m"
    assert full.text.url == "https://marqo-gcl-public.s3.us-west-2.amazonaws.com/v1/marqo-gs-dataset.tar"
    assert full.images.name == "images_archive.tar" and full.hf_dataset == "Marqo/marqo-GS-10M"
    assert get_entry("marqo-gs-fashion-5m").subset == "marqo_gs_fashion_5m"
    assert get_entry(NAME).images.name == IMAGES and get_entry(NAME).text.size is None
    assert full.text.on_mirror("http://lab/mirror/").url == "http://lab/mirror/marqo-gs-dataset.tar"


@pytest.mark.parametrize("text, message", [
    ('subset = "s"\n[text]\nurl = "https://x/y.tar"\nsha256 = "abc"\n', r"\[text\] sha256 'abc': expected 64 hex"),
    ('subset = "s"\n[text]\nurl = "https://x/y.tar"\nsize = -1\n', r"\[text\] size -1: expected a number of bytes"),
    ('subset = "s"\n[text]\nurl = "ftp://x/y.tar"\n', r"expected an http\(s\) URL of a file"),
    ('subset = "s"\n', r"missing \[text\] table"),
    ('[text]\nurl = "https://x/y.tar"\n', r"missing 'subset'"),
    ("subset = \n", r"not valid TOML"),
])
def test_registry_entries_are_checked(tmp_path, monkeypatch, text, message):
    from gcl_eval.data import registry

    monkeypatch.setattr(registry, "REGISTRY_DIR", tmp_path)
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(GclError, match=r"bad\.toml: .*" + message):
        registry.get_entry("bad")


def test_list_and_unknown_name(gcl):
    listed = gcl("data", "list", "--json")
    assert listed.code == 0
    row = next(r for r in listed.json() if r["name"] == NAME)
    assert row["subset"] == SUBSET and row["cached"] == "no" and row["text"]["size"] is None
    plain = gcl("data", "list")
    assert plain.code == 0 and "not recorded" in plain.out and "marqo_gs_full_10m" in plain.out
    assert "unknown dataset 'nope'" in error_line(gcl("data", "get", "nope"))


# -------------------------------------------------------------------------------------- happy path


def test_get_check_eval_equals_the_source(gcl, server, miniature, tmp_path):
    out = tmp_path / "wfash"
    result = get(gcl, server, "--out", out)
    assert result.code == 0, result.err
    assert result.out.strip() == str(out)
    assert gcl("data", "check", out, "--check-images").code == 0
    assert (out / "images").is_dir() and not (out / "images" / "not-referenced.png").exists()
    assert tree(out) == {*DATA_FILES, GT_FILE, get_module.SOURCE_FILE, "images",
                         *(f"images/{p.name}" for p in (miniature.source / "images").iterdir())}
    corpus = json.loads((out / "corpus_1.json").read_text())
    assert all(v["image_local"].startswith("images/") for v in corpus.values())
    assert FOREIGN not in (out / f"{SPLIT_STEMS['in_domain']}.csv").read_text()
    assert read_dataset(out).fingerprint() == read_dataset(miniature.source).fingerprint()
    assert evaluate(out) == evaluate(miniature.source)
    record = json.loads((out / get_module.SOURCE_FILE).read_text())
    assert record["image_references"] == {"matched": len(corpus) + len(json.loads((out / "corpus_2.json")
                                                                                   .read_text())), "unmatched": 0}
    assert cache_files() == []  # archives are removed once extracted


def test_ground_truth_in_the_reference_key_form_gives_identical_results(gcl, server, miniature, tmp_path):
    assert get(gcl, server, "--out", tmp_path / "got", "--no-images").code == 0
    keys = json.loads((tmp_path / "got" / GT_FILE).read_text())
    assert all(k.endswith(REFERENCE_KEY_SUFFIX) for k in keys)
    reference = evaluate(tmp_path / "got", ground_truth="test", splits=("novel_query",))
    assert reference == evaluate(miniature.source, ground_truth="test", splits=("novel_query",))
    assert read_dataset(tmp_path / "got").ground_truth == read_dataset(miniature.source).ground_truth


def test_ground_truth_with_a_query_in_both_forms_is_an_error(miniature, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(miniature.source, copy)
    truth = json.loads((copy / GT_FILE).read_text())
    query = next(iter(truth))
    truth[query + REFERENCE_KEY_SUFFIX] = truth[query]
    (copy / GT_FILE).write_text(json.dumps(truth))
    with pytest.raises(DataError, match="appears twice"):
        read_dataset(copy)


def test_second_get_makes_no_request_and_list_shows_the_cache(gcl, server):
    first = get(gcl, server)
    assert first.code == 0, first.err
    folder = Path(first.out.strip())
    assert folder == get_module.cache_dir("datasets") / NAME
    seen = len(server.requests)
    again = get(gcl, server)
    assert again.code == 0 and again.out == first.out and len(server.requests) == seen
    assert len(server.requests_for(TEXT)) == 1 and len(server.requests_for(IMAGES)) == 1
    row = next(r for r in gcl("data", "list", "--json").json() if r["name"] == NAME)
    assert row["cached"] == "with images" and row["path"] == str(folder)


def test_a_registered_name_looked_up_refreshes_its_last_use(gcl, server):
    import os

    from gcl_eval.data.resolve import resolve_dataset

    folder = Path(get(gcl, server).out.strip())
    old = time.time() - 90 * 86400
    os.utime(folder, (old, old))
    seen = len(server.requests)
    assert resolve_dataset(NAME) == folder and len(server.requests) == seen
    assert folder.stat().st_mtime > old + 86400  # `gcl-eval cache prune` sees it as just used


def test_text_only_then_images(gcl, server, tmp_path):
    out = tmp_path / "d"
    assert get(gcl, server, "--out", out, "--no-images").code == 0
    assert not (out / "images").exists() and FOREIGN in (out / "corpus_1.json").read_text()
    assert server.requests_for(IMAGES) == []
    assert get(gcl, server, "--out", out, "--no-images").code == 0 and len(server.requests_for(TEXT)) == 1
    assert get(gcl, server, "--out", out).code == 0
    assert gcl("data", "check", out, "--check-images").code == 0


def test_keep_archives_serves_a_second_subset_without_download(gcl, server, tmp_path, monkeypatch):
    assert get(gcl, server, "--out", tmp_path / "a", "--no-images", "--keep-archives").code == 0
    assert [p.name for p in cache_files()] == [TEXT, TEXT + ".sha256"]
    other = replace(get_entry(NAME), name="other", subset=OTHER_SUBSET)
    monkeypatch.setattr(get_module, "get_entry", lambda name: other)
    assert gcl("data", "get", "other", "--mirror", server.url, "--out", tmp_path / "b", "--no-images").code == 0
    assert len(server.requests_for(TEXT)) == 1 and cache_files() == []


# --------------------------------------------------------------------------------------- resuming


def test_dropped_transfer_resumes_with_range(gcl, server, miniature, tmp_path):
    server.drops[TEXT] = 1
    result = get(gcl, server, "--out", tmp_path / "d")
    assert result.code == 0, result.err
    half = len(miniature.text) // 2
    assert server.requests_for(TEXT) == [None, f"bytes={half}-"]
    assert "resuming from byte" in result.err
    assert read_dataset(tmp_path / "d").fingerprint() == read_dataset(miniature.source).fingerprint()


def test_a_later_call_continues_the_partial_file(gcl, server, miniature, tmp_path):
    server.drops[TEXT] = 100
    failed = get(gcl, server, "--out", tmp_path / "d")
    assert "run the same command again to resume" in error_line(failed)
    part = get_module.cache_dir("downloads") / (TEXT + ".part")
    kept = part.stat().st_size
    assert 0 < kept < len(miniature.text) and not (tmp_path / "d").exists()
    server.drops.clear()
    calls = len(server.requests_for(TEXT))
    assert get(gcl, server, "--out", tmp_path / "d").code == 0
    assert server.requests_for(TEXT)[calls] == f"bytes={kept}-"
    assert not part.exists() and gcl("data", "check", tmp_path / "d", "--check-images").code == 0


def test_a_failed_extraction_leaves_nothing_that_reads_as_complete(gcl, server, tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(get_module, "reroot_images", interrupted)
        with pytest.raises(KeyboardInterrupt):
            get_module.get_dataset(NAME, out=tmp_path / "d", mirror=server.url)
    assert list(tmp_path.iterdir()) == []
    assert get_module.get_dataset(NAME, out=tmp_path / "d", mirror=server.url) == tmp_path / "d"
    assert len(server.requests_for(TEXT)) == 1  # the verified archives of the first call were kept


# --------------------------------------------------------------------------------------- failures


def _pinned(monkeypatch, **text):
    entry = get_entry(NAME)
    monkeypatch.setattr(get_module, "get_entry", lambda name: replace(entry, text=replace(entry.text, **text)))


def test_wrong_sha256_exits_2_and_keeps_nothing(gcl, server, tmp_path, monkeypatch):
    _pinned(monkeypatch, sha256="0" * 64)
    line = error_line(get(gcl, server, "--out", tmp_path / "d"))
    assert "sha256 mismatch" in line and "removed" in line
    assert cache_files() == [] and not (tmp_path / "d").exists()


def test_wrong_size_exits_2_before_downloading(gcl, server, tmp_path, monkeypatch):
    _pinned(monkeypatch, size=123)
    assert "size mismatch" in error_line(get(gcl, server, "--out", tmp_path / "d"))
    assert cache_files() == [] and not (tmp_path / "d").exists()


def test_right_sha256_and_size_pass(gcl, server, miniature, tmp_path, monkeypatch):
    import hashlib

    _pinned(monkeypatch, sha256=hashlib.sha256(miniature.text).hexdigest(), size=len(miniature.text))
    assert get(gcl, server, "--out", tmp_path / "d").code == 0


def _bad_member_tars(outside: Path) -> dict[str, bytes]:
    good = {f"marqo-gs-dataset/{SUBSET}/corpus_1.json": b"{}"}
    link_out = tarfile.TarInfo(f"marqo-gs-dataset/{SUBSET}/escape")
    link_out.type, link_out.linkname = tarfile.SYMTYPE, "../../../../" + outside.name
    link_abs = tarfile.TarInfo(f"marqo-gs-dataset/{SUBSET}/absolute")
    link_abs.type, link_abs.linkname = tarfile.SYMTYPE, str(outside)
    sideways = tarfile.TarInfo(f"marqo-gs-dataset/{SUBSET}/sideways")
    sideways.type, sideways.linkname = tarfile.SYMTYPE, f"../{OTHER_SUBSET}/corpus_1.json"
    hard = tarfile.TarInfo(f"marqo-gs-dataset/{SUBSET}/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, f"marqo-gs-dataset/{OTHER_SUBSET}/corpus_1.json"
    climbing = tarfile.TarInfo(f"marqo-gs-dataset/{SUBSET}/../../../{outside.name}")
    absolute = tarfile.TarInfo(str(outside))
    climbing.size = absolute.size = 1
    other = {f"marqo-gs-dataset/{OTHER_SUBSET}/corpus_1.json": b"{}"}
    return {"climbing": _tar(good, [climbing]), "absolute": _tar(good, [absolute]),
            "symlink out": _tar(good, [link_out]), "absolute symlink": _tar(good, [link_abs]),
            "symlink to another subset": _tar({**other, **good}, [sideways]),
            "hard link to another subset": _tar({**other, **good}, [hard])}


def test_traversal_members_and_outside_links_are_refused(gcl, server, tmp_path):
    outside = tmp_path / "outside.txt"
    for case, data in _bad_member_tars(outside).items():
        server.files[TEXT] = data
        before = tree(tmp_path)
        line = error_line(get(gcl, server, "--out", tmp_path / "d", "--no-images"))
        assert "refused" in line and ("points outside" in line or "climbs out" in line), (case, line)
        assert not outside.exists() and not (tmp_path / "d").exists(), case
        assert tree(tmp_path) == before, case


def test_unreachable_host_fails_fast_with_one_line(gcl, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = gcl("data", "get", NAME, "--mirror", f"http://127.0.0.1:{port}", "--out", tmp_path / "d")
    elapsed = time.monotonic() - started
    line = error_line(result)
    assert f"cannot reach http://127.0.0.1:{port}/{TEXT}" in line and "--mirror" in line
    assert elapsed < 15  # a closed port is refused at once: no retry loop, no long timeout
    assert not (tmp_path / "d").exists()


def test_http_errors_are_one_line(gcl, server, tmp_path):
    server.statuses[TEXT] = 404
    line = error_line(get(gcl, server, "--out", tmp_path / "d"))
    assert f"{server.url}{TEXT}: HTTP 404 Not Found" in line
    server.statuses[TEXT] = 503
    line = error_line(get(gcl, server, "--out", tmp_path / "d"))
    assert "HTTP 503" in line and f"({download_module.RETRIES + 1} tries)" in line
    assert len(server.requests_for(TEXT)) == 1 + download_module.RETRIES + 1


def test_corrupt_and_truncated_archives_are_one_line_and_removed(gcl, server, miniature, tmp_path):
    for case, data in {"garbage": b"<html>not a tar</html>" * 100,
                       "truncated": miniature.text[: len(miniature.text) * 2 // 3]}.items():
        server.files[TEXT] = data
        line = error_line(get(gcl, server, "--out", tmp_path / "d"))
        assert "corrupt or truncated archive" in line and "removed" in line, case
        assert [p.name for p in cache_files()] == [IMAGES, IMAGES + ".sha256"], case  # the good one is kept
        assert not (tmp_path / "d").exists(), case


def test_subset_missing_from_the_archive(gcl, server, tmp_path):
    server.files[TEXT] = _tar({"marqo-gs-dataset/another/corpus_1.json": b"{}"})
    assert "no folder 'marqo-gs-dataset/marqo_gs_wfash_1m'" in error_line(get(gcl, server, "--out", tmp_path / "d"))


def test_full_disk_and_unwritable_cache(gcl, server, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(download_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 10))
        assert "not enough disk space" in error_line(get(gcl, server, "--out", tmp_path / "d"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GCL_EVAL_CACHE", str(blocker / "cache"))
    assert "cannot use the cache folder" in error_line(get(gcl, server))


def test_out_folder_that_is_not_ours_is_refused(gcl, server, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert "expected a new or empty folder" in error_line(get(gcl, server, "--out", tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and server.requests == []


def test_mirror_must_be_http(gcl, tmp_path):
    assert "expected an http(s) URL" in error_line(gcl("data", "get", NAME, "--mirror", "/mnt/x", "--out",
                                                       tmp_path / "d"))


def test_check_reports_on_the_result(miniature, gcl, server, tmp_path):
    assert get(gcl, server, "--out", tmp_path / "d").code == 0
    assert check_dataset(read_dataset(tmp_path / "d"), check_images=True) == \
        check_dataset(read_dataset(miniature.source), check_images=True)


def test_references_without_an_image_are_left_as_published_and_counted(gcl, server, miniature, tmp_path):
    images = sorted((miniature.source / "images").iterdir())
    server.files[IMAGES] = _tar({f"images_wfash/{p.name}": p.read_bytes() for p in images[1:]})
    result = get(gcl, server, "--out", tmp_path / "d")
    assert result.code == 0 and "1 image references have no image" in result.err
    record = json.loads((tmp_path / "d" / get_module.SOURCE_FILE).read_text())
    assert record["image_references"]["unmatched"] == 1
    assert FOREIGN + images[0].name in error_line(gcl("data", "check", tmp_path / "d", "--check-images"))
