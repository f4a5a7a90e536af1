"""`gcl-eval eval` end to end on a small synthetic dataset with tiny-clip."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from gcl_eval.protocol.results import load_run

BASE = ["eval", "--arch", "tiny-clip", "--queries", "30", "--top-k", "50", "--workers", "0", "--batch-size", "64"]


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("eval", "--queries", "120", "--docs-per-query", "20", "--image-size", "32", "--seed", "2")


def _eval(gcl, data, out, *extra):
    result = gcl(*BASE, "--data", data, "--out", out, "--json", *extra)
    assert result.code == 0, result.err
    return result.json()


def test_eval_writes_a_valid_run_folder_and_reuses_the_cache(gcl, data, tmp_path):
    first = _eval(gcl, data, tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    assert list(loaded.splits) == ["in_domain", "novel_query", "novel_corpus", "zero_shot"]
    assert first["model"]["arch"] == "tiny-clip" and len(first["model"]["checkpoint_sha256"]) == 64
    # misses: 2 corpora x (pooled + title + image) + 3 query lists; novel_query and zero_shot
    # sample the same (all) eval queries in the same order, so their second lookup hits
    assert first["timings"]["embedding_cache"] == {"hits": 1, "misses": 9, "corrupt": 0}
    second = _eval(gcl, data, tmp_path / "run2")
    # 2 pooled corpora + 4 query lists, all hits: nothing is encoded
    assert second["timings"]["embedding_cache"] == {"hits": 6, "misses": 0, "corrupt": 0}
    assert second["splits"] == first["splits"]


def test_other_checkpoint_or_field_weight_misses_the_cache(gcl, data, tmp_path):
    _eval(gcl, data, tmp_path / "a")
    other_seed = _eval(gcl, data, tmp_path / "b", "--seed", "1")
    assert other_seed["timings"]["embedding_cache"]["misses"] == 9  # everything re-encoded
    reweighted = _eval(gcl, data, tmp_path / "c", "--fields", "title=0.7,image=0.3")
    cache = reweighted["timings"]["embedding_cache"]
    # the pooled corpora miss (weights changed); their per-field entries and the queries hit
    assert cache["misses"] == 2 and cache["hits"] > 0


def test_cold_start_title_only_weights(gcl, data, tmp_path):
    result = _eval(gcl, data, tmp_path / "r", "--cold-start-fields", "title=1")
    assert result["model"]["split_doc_fields"]["zero_shot"] == "title=1"
    assert result["model"]["doc_fields"] == "image=0.5,title=0.5"


def test_checkpoint_file_loads_and_is_hashed(gcl, data, tmp_path):
    import torch

    from gcl_eval.retrieval.models import file_sha256, load_open_clip

    ckpt = tmp_path / "model.pt"
    torch.save(load_open_clip("tiny-clip", seed=5).model.state_dict(), ckpt)
    result = _eval(gcl, data, tmp_path / "r", "--checkpoint", str(ckpt))
    assert result["model"]["checkpoint_sha256"] == file_sha256(ckpt)
    seeded = _eval(gcl, data, tmp_path / "s", "--seed", "5")
    assert seeded["splits"] == result["splits"]


def _main(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gcl_eval", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("extra, needle", [
    (["--top-k", "0"], "top_k"),
    (["--measure", "nDCG@10", "--measure", "Bogus"], "Bogus"),
    (["--arch", "no-such-arch"], "no-such-arch"),
    (["--fields", "title=x"], "title=x"),
])
def test_bad_input_exits_2_with_one_line(data, tmp_path, extra, needle):
    proc = _main(*BASE, "--data", str(data), "--out", str(tmp_path / "r"), *extra)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_checkpoint_that_does_not_load_exits_2(data, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = _main(*BASE, "--data", str(data), "--out", str(tmp_path / "r"), "--checkpoint", str(bad))
    assert proc.returncode == 2 and "does not load" in proc.stderr and proc.stderr.count("\n") == 1


def test_ground_truth_with_unknown_documents_exits_2(data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "query_1_product_id_1_gt_test.json").write_text(json.dumps({"some query": {"no-such-doc": 3}}))
    proc = _main(*BASE, "--data", str(copy), "--out", str(tmp_path / "r"), "--ground-truth", "test")
    assert proc.returncode == 2 and "no-such-doc" in proc.stderr, proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_torchrun_gives_the_same_embeddings_and_run(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*BASE[1:], "--data", str(data), "--batch-size", "16"]
    single = subprocess.run([sys.executable, "-m", "gcl_eval", "eval", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300,
                            env={**env, "GCL_EVAL_CACHE": str(tmp_path / "cache1")})
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(_free_port()), "-m", "gcl_eval", "eval", *args,
                             "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300,
                            env={**env, "GCL_EVAL_CACHE": str(tmp_path / "cache2")})
    assert double.returncode == 0, double.stderr
    for split in ("in_domain", "novel_query", "novel_corpus", "zero_shot"):
        assert (tmp_path / "one" / f"run_{split}.trec").read_text() == (tmp_path / "two" / f"run_{split}.trec").read_text()
    one, two = (json.loads((tmp_path / n / "result.json").read_text()) for n in ("one", "two"))
    assert one["splits"] == two["splits"]
    arrays = {}
    for name in ("cache1", "cache2"):
        arrays[name] = {p.name: np.load(p) for p in (tmp_path / name / "embeddings").rglob("*.npy")}
    assert arrays["cache1"].keys() == arrays["cache2"].keys() and arrays["cache1"]
    for key, array in arrays["cache1"].items():
        assert np.array_equal(array, arrays["cache2"][key])


def test_empty_split_exits_2(data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    csv = copy / "query_1_product_id_1.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    proc = _main(*BASE, "--data", str(copy), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "zero_shot" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


def test_device_auto_picks_this_machines_device(gcl, data, tmp_path):
    from gcl_eval.util.distributed import resolve_device

    result = _eval(gcl, data, tmp_path / "r", "--device", "auto")
    assert result["environment"]["device"] == str(resolve_device("auto"))
    assert list(result["model"]) == ["arch", "source", "checkpoint_sha256", "encoder", "precision", "doc_fields",
                                     "split_doc_fields"]


def test_unknown_device_exits_2(data, tmp_path):
    proc = _main(*BASE, "--data", str(data), "--out", str(tmp_path / "r"), "--device", "tpu")
    assert proc.returncode == 2 and "tpu" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()
