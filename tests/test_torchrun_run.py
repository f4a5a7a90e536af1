"""`gcl-eval run` and `gcl-eval suite` under torchrun: the ranks train and encode together, rank 0 alone
writes (run folders, cache entries, the suite report), and a launch killed mid-evaluation leaves no run
folder behind. The CPU stands in for GPUs (gloo); a multi-node launch differs only in torchrun's flags."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from gcl_eval.protocol.results import load_run
from gcl_eval.util import distributed
from gcl_eval.util.errors import GclError

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
RUN = ["run", "--model", "tiny-clip", "--queries", "30", "--top-k", "50", "--max-steps", "6", "--batch-size", "16",
       "--workers", "0", "--device", "cpu"]
TEMPORARY = re.compile(r"^\..+\.(tmp|old|del)-")  # what an atomic write leaves while (or if killed while) writing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, *, ranks: int, cache: Path) -> subprocess.Popen:
    """`gcl-eval ARGS` in one process, or under torchrun with ``ranks`` processes."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
                 str(_free_port())] if ranks > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GCL_EVAL_CACHE": str(cache)}
    return subprocess.Popen([*launcher, "-m", "gcl_eval", *map(str, args)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(child: subprocess.Popen) -> str:
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err[-3000:]
    return out


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc): torchrun's ranks, which it starts in sessions of
    their own, so killing the launcher's process group would not reach them."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY.match(p.name)]


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("torchrun-run", "--queries", "60", "--docs-per-query", "20", "--image-size", "32", "--seed", "2")


# ------------------------------------------------------------------------------ rank 0 first, agreeing ranks


def _main_first_worker(rank, port, folder):
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"})
    entry = Path(folder) / "entry"

    def build():  # what a cache lookup does: build the entry when it is missing, else read it
        if not entry.exists():
            entry.write_text(f"built by rank {rank}")
            return "built"
        return "read " + entry.read_text()

    with distributed.process_group("cpu"):
        seen = distributed.main_first(build)
        # a checkpoint folder each rank sees differently (node-local caches): refused on every rank
        from gcl_eval.experiments.checkpoints import _finished_on_every_rank

        own = Path(folder) / f"checkpoint-{rank}"
        own.mkdir()
        if rank == 0:
            (own / "DONE").write_text("{}")
        try:
            _finished_on_every_rank(own, before=True)
            refused = None
        except GclError as err:
            refused = str(err)
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps({"seen": seen, "refused": refused}))


def test_main_first_builds_on_rank_0_and_differing_checkpoint_views_are_refused(tmp_path):
    mp.start_processes(_main_first_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [g["seen"] for g in got] == ["built", "read built by rank 0"]
    for g in got:
        assert "rank(s) 1 see the checkpoint folder" in g["refused"] and "\n" not in g["refused"]


def test_without_a_process_group_main_first_just_builds():
    assert distributed.main_first(lambda: 7) == 7


# ------------------------------------------------------------------------------ run


@pytest.mark.slow
def test_two_rank_run_writes_one_run_folder_equal_to_one_process(data, tmp_path):
    """Two ranks train tiny-clip with DDP (6 steps of 16), encode their shards and rank 0 writes the folder.

    Tolerance: the DDP weights equal one process's up to the order of float summation
    (tests/test_train_loop.py::test_torchrun_two_processes_equal_one bounds that); here the relative weight
    distance ||w2 - w1|| / ||w1|| must stay below 1e-5 (measured 1.5e-7; a real difference such as
    unshared negatives moves the weights by orders of magnitude more). Weights that close move embeddings
    by about 1e-6, which can only swap documents whose scores tie to that precision, so the ranked lists
    must be equal for at least 95% of the queries of every split and nDCG@10 within 1e-3 of one process's
    (measured: every ranked list and every per-query value identical)."""
    one = _start([*RUN, "--data", data, "--out", tmp_path / "one" / "run", "--json"], ranks=1,
                 cache=tmp_path / "cache1")
    two = _start([*RUN, "--data", data, "--out", tmp_path / "two" / "run", "--json"], ranks=2,
                 cache=tmp_path / "cache2")
    printed = {"one": json.loads(_finish(one)), "two": json.loads(_finish(two))}  # one document: rank 0 prints
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["run"]  # one folder, no temporaries
    runs = {name: load_run(tmp_path / name / "run") for name in ("one", "two")}
    assert printed["two"]["splits"] == json.loads((tmp_path / "two" / "run" / "result.json").read_text())["splits"]
    for split in SPLITS:
        ranked = {name: _ranked_lists(tmp_path / name / "run" / f"run_{split}.trec") for name in runs}
        assert ranked["one"].keys() == ranked["two"].keys()
        same = sum(ranked["one"][q] == ranked["two"][q] for q in ranked["one"]) / len(ranked["one"])
        assert same >= 0.95, (split, same)
        assert runs["two"].metric(split, "nDCG@10") == pytest.approx(runs["one"].metric(split, "nDCG@10"), abs=1e-3)
    _check_caches(tmp_path / "cache1", tmp_path / "cache2")


def _ranked_lists(trec: Path) -> dict[str, list[str]]:
    table = pd.read_csv(trec, sep=r"\s+", header=None, names=["qid", "q0", "doc", "rank", "score", "tag"],
                        dtype={"qid": str, "doc": str})
    return {qid: list(group.sort_values("rank")["doc"]) for qid, group in table.groupby("qid")}


def _check_caches(one: Path, two: Path) -> None:
    """The 2-rank launch wrote each cache entry once: the same entries as one process, no temporaries, one
    checkpoint trained by 2 ranks with weights that differ by summation order only."""
    assert not _temporaries(one) and not _temporaries(two)
    for kind in ("checkpoints", "embeddings", "tables"):
        entries = {c: sorted(p.relative_to(c / kind).as_posix() for p in (c / kind).rglob("*")
                             if not p.name.endswith(".lock")) for c in (one, two)}
        if kind == "embeddings":  # keyed by the weights' digest: same files, other names (and prefix folders)
            files = {c: [e for e in entries[c] if (c / kind / e).is_file()] for c in (one, two)}
            assert len(files[one]) == len(files[two]) > 0
        else:
            assert entries[one] == entries[two] and entries[one]
    folders = [p for p in (two / "checkpoints").iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "DONE").is_file()
    info = json.loads((folders[0] / "train.json").read_text())
    assert info["environment"]["world_size"] == 2
    w1 = torch.load(one / "checkpoints" / folders[0].name / "model.pt")
    w2 = torch.load(folders[0] / "model.pt")
    floats = [k for k in w1 if w1[k].is_floating_point()]
    distance = math.sqrt(sum(float(((w2[k].double() - w1[k].double()) ** 2).sum()) for k in floats))
    norm = math.sqrt(sum(float((w1[k].double() ** 2).sum()) for k in floats))
    print(f"relative weight distance, 2 ranks vs 1 process: {distance / norm:.2e}")
    assert distance / norm < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds torchrun's ranks through Linux /proc")
def test_run_killed_mid_evaluation_leaves_no_run_folder_and_the_next_run_completes(data, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "runs" / "run"
    args = [*RUN, "--data", data, "--out", out, "--json"]
    child = _start(args, ranks=2, cache=cache)
    # evaluation has started once the embedding cache folder exists (made when the retriever is built,
    # after training wrote its finished checkpoint, before anything is encoded)
    while not (cache / "embeddings").is_dir() and child.poll() is None:
        time.sleep(0.02)
    assert child.poll() is None, child.communicate()[1][-3000:]
    assert list((cache / "checkpoints").glob("*/DONE"))
    ranks = _children(child.pid)
    assert len(ranks) == 2
    for pid in ranks:  # every rank dies at once, as on a lost node: torchrun then ends the launch
        os.kill(pid, signal.SIGKILL)
    child.communicate(timeout=120)
    assert child.returncode != 0
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    for path in leftovers:  # at most a temporary that nothing takes for a run
        with pytest.raises(GclError):
            load_run(path)

    again = json.loads(_finish(_start(args, ranks=2, cache=cache)))
    assert again["timings"]["checkpoint_reused"] is True
    assert load_run(out).splits.keys() == set(SPLITS)


# ------------------------------------------------------------------------------ suite


@pytest.mark.slow
def test_two_rank_suite_writes_one_set_of_folders_and_one_summary(data, tmp_path):
    definition = tmp_path / "small.toml"
    definition.write_text("""
description = "BM25 and a tiny CLIP"
[[runs]]
preset = "bm25"
[[runs]]
label = "clip"
preset = "tiny-clip"
train = { max_steps = 3, batch_size = 16 }
""")
    out = tmp_path / "suite"
    args = ["suite", definition, "--seeds", "1", "--data", data, "--out", out, "--queries", "10", "--workers", "0",
            "--device", "cpu"]
    child = _start(args, ranks=2, cache=tmp_path / "cache")
    printed, err = child.communicate(timeout=600)
    assert child.returncode == 0, err[-3000:]
    assert printed.count("# Suite small") == 1 and printed.strip() == (out / "summary.md").read_text().strip()
    assert err.count("[1/2] bm25") == 1 and err.count("[2/2] clip") == 1  # rank 0 logs
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "bm25/per_query.parquet", "bm25/result.json", "clip/seed-0/per_query.parquet", "clip/seed-0/result.json",
        "suite.json", "summary.md"]
    report = json.loads((out / "suite.json").read_text())
    assert [r["reused"] for r in report["runs"]] == [False, False] and report["summary"]["clip"]["seeds"] == 1

    child = _start(args, ranks=2, cache=tmp_path / "cache")
    printed, err = child.communicate(timeout=600)
    assert child.returncode == 0, err[-3000:]
    assert err.count("done, reused") == 2 and printed.count("# Suite small") == 1
    assert json.loads((out / "suite.json").read_text())["summary"] == report["summary"]
