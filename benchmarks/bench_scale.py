"""Evaluation-scale benchmark: exact top-k over a memory-mapped million-document corpus, against peers
that hold the corpus in RAM. Peak memory and time; ratios printed against the named peers.

Workload: random unit vectors (float32, seeded), the corpus written chunk by chunk to a .npy in a temp
folder (never whole in memory), queries in RAM, top-k by inner product.
Default shape: 10,000 queries x 1,000,000 documents x 256 dims, k = 1,000.

Calls, each in a fresh subprocess (so each peak is its own):
- ours-mmap: `np.load(corpus.npy, mmap_mode="r")` (what the embedding cache returns) and
  `gcl_eval.retrieval.topk.search(queries, corpus, k)` (backend "auto");
- ours-mmap-2shards: the same memory map searched as two halves, one after the other, and the two top-k
  lists merged with `topk.merge_topk`: what two torchrun ranks do (gcl_eval.retrieval.dense), run
  serially in one process; the merge time is printed separately;
- faiss-ram (peer): the corpus read into RAM, `faiss.IndexFlatIP(d).add(corpus)` (untimed; it copies the
  corpus), `.search(queries, k)`;
- torch-ram (peer): the corpus read into RAM, `torch.topk(q @ corpus.T, k)` per block of 128 queries.

Memory: peak RSS is the process's high-water mark (VmHWM) over the whole worker (imports, inputs, search);
"anon" is the peak of RssAnon sampled every 10 ms: memory the process owns, as opposed to file pages of a
memory map, which the kernel can drop and re-read at will (RssFile, counted in RSS once touched).
"over imports" is the peak minus the value after the imports, before the inputs are loaded.

    python benchmarks/bench_scale.py [--docs 1000000 --queries 10000 --dim 256 --k 1000]
        [--calls ours-mmap,ours-mmap-2shards,faiss-ram,torch-ram] [--out benchmarks/results/scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import cpu_seconds, torch_raw, write_unit_vectors  # noqa: E402

CALLS = ("ours-mmap", "ours-mmap-2shards", "faiss-ram", "torch-ram")
PEERS = ("faiss-ram", "torch-ram")


# ---------------------------------------------------------------------------------------------------
# Worker: one call in this process


def proc_status_mb(*fields: str) -> dict[str, float]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in fields:
                values[name] = int(value.split()[0]) / 1024
    return values


class AnonPeak:
    """Samples RssAnon every `interval` seconds in a thread; `peak` is the largest value seen (MB)."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status_mb("RssAnon")["RssAnon"])
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status_mb("RssAnon")["RssAnon"])


def run_call(name: str, queries: np.ndarray, corpus_path: Path, k: int, timings: dict):
    """(ids, scores) of one call; fills timings with wall seconds of the parts."""
    from gcl_eval.retrieval.topk import merge_topk, search

    start = time.perf_counter()
    if name.startswith("ours"):
        corpus = np.load(corpus_path, mmap_mode="r")
    else:
        corpus = np.array(np.load(corpus_path, mmap_mode="r"), copy=True)
    timings["load_s"] = time.perf_counter() - start
    if name == "faiss-ram":
        import faiss

        start = time.perf_counter()
        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus)
        timings["setup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores, ids = index.search(queries, k)
        timings["search_s"] = time.perf_counter() - start
        return ids, scores
    start = time.perf_counter()
    if name == "torch-ram":
        result = torch_raw(queries, corpus, k)
    elif name == "ours-mmap":
        result = search(queries, corpus, k)
    else:
        half = corpus.shape[0] // 2
        lists = []
        for lo, hi in ((0, half), (half, corpus.shape[0])):
            ids, scores = search(queries, corpus[lo:hi], k)
            lists.append((ids + lo, scores))
        merge_start = time.perf_counter()
        result = merge_topk(lists, k)
        timings["merge_s"] = time.perf_counter() - merge_start
    timings["search_s"] = time.perf_counter() - start
    return result


def worker(args) -> None:
    import faiss  # noqa: F401  (imports outside the measurement)
    import torch  # noqa: F401

    import gcl_eval.retrieval.topk  # noqa: F401

    data = Path(args.data)
    after_imports = proc_status_mb("VmRSS", "RssAnon")
    timings: dict[str, float] = {}
    cpu0 = cpu_seconds()
    with AnonPeak() as anon:
        queries = np.load(data / "queries.npy")
        ids, scores = run_call(args.worker, queries, data / "corpus.npy", args.k, timings)
    cpu = cpu_seconds() - cpu0
    status = proc_status_mb("VmHWM", "RssFile")
    np.save(Path(args.result) / f"{args.worker}.ids.npy", np.asarray(ids, dtype=np.int64))
    np.save(Path(args.result) / f"{args.worker}.scores.npy", np.asarray(scores, dtype=np.float32))
    print(json.dumps({"call": args.worker, **timings, "cpu_s": cpu, "peak_rss_mb": status["VmHWM"],
                      "peak_anon_mb": anon.peak, "rss_file_mb": status["RssFile"],
                      "over_imports_mb": status["VmHWM"] - after_imports["VmRSS"],
                      "anon_over_imports_mb": anon.peak - after_imports["RssAnon"]}))


# ---------------------------------------------------------------------------------------------------
# Parent


def spawn(call: str, data: Path, result: Path, k: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", call, "--data", str(data), "--result", str(result), "--k", str(k)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {call} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(result: Path, call: str, reference: str) -> str:
    ids_a, ids_b = (np.load(result / f"{c}.ids.npy") for c in (call, reference))
    sc_a, sc_b = (np.load(result / f"{c}.scores.npy") for c in (call, reference))
    differ = int((ids_a != ids_b).sum())
    same_set = np.mean([len(np.intersect1d(a, b)) / len(a) for a, b in zip(ids_a, ids_b)])
    return (f"{call} vs {reference}: ids differ at {differ:,} of {ids_a.size:,} ranks, "
            f"top-k sets overlap {same_set:.6f}, max |score diff| {float(np.abs(sc_a - sc_b).max()):.1e}")


def table(rows: list[dict], args, elapsed: float) -> str:
    import faiss
    import torch

    ours = {row["call"]: row for row in rows}
    lines = [
        f"`python benchmarks/bench_scale.py --docs {args.docs} --queries {args.queries} --dim {args.dim} "
        f"--k {args.k}`, {time.strftime('%Y-%m-%d')}. Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other work), Python {platform.python_version()}, numpy "
        f"{np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), faiss "
        f"{faiss.__version__}. Load average {os.getloadavg()[0]:.1f} at the end; whole run {elapsed / 60:.1f} min.",
        "",
        f"### {args.queries:,} queries x {args.docs:,} docs x {args.dim} dims, k={args.k}",
        "",
        "| call | search s | cpu s | load s | peak RSS MB | peak anon MB | RSS over imports MB | anon over imports MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['call']} | {row['search_s']:.2f} | {row['cpu_s']:.2f} | {row['load_s']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} | {row['peak_anon_mb']:.0f} | {row['over_imports_mb']:.0f} | "
                     f"{row['anon_over_imports_mb']:.0f} |")
    lines.append("")
    for mine in ("ours-mmap", "ours-mmap-2shards"):
        for peer in PEERS:
            if mine in ours and peer in ours:
                a, b = ours[mine], ours[peer]
                lines.append(f"- {mine} / {peer}: time {a['search_s'] / b['search_s']:.2f}x, anon over imports "
                             f"{a['anon_over_imports_mb'] / b['anon_over_imports_mb']:.2f}x, peak RSS "
                             f"{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")
    if "ours-mmap-2shards" in ours:
        lines.append(f"- merging the two shards' lists: {ours['ours-mmap-2shards']['merge_s']:.2f} s")
    if "ours-mmap" in ours:
        pairs = args.queries * args.docs / ours["ours-mmap"]["search_s"]
        lines.append(f"- ours-mmap throughput: {pairs / 1e9:.2f} G query-document pairs/s at {args.dim} dims "
                     f"({pairs * args.dim / 1e9:.0f} G multiply-adds/s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--calls", default=",".join(CALLS), help="comma-separated subset of " + ", ".join(CALLS))
    parser.add_argument("--out", help="also write the markdown here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    calls = [c for c in args.calls.split(",") if c]
    unknown = set(calls) - set(CALLS)
    if unknown:
        raise SystemExit(f"unknown calls {sorted(unknown)}; expected some of {', '.join(CALLS)}")
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        write_unit_vectors(workdir / "corpus.npy", args.docs, args.dim, seed=1)
        write_unit_vectors(workdir / "queries.npy", args.queries, args.dim, seed=2)
        rows = [spawn(call, workdir, workdir, args.k) for call in calls]
        text = table(rows, args, time.perf_counter() - started)
        for call in calls[1:]:
            text += "\n- " + agreement(workdir, call, calls[0])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(text)
    if args.out:
        Path(args.out).write_text("## Evaluation at scale: memory-mapped corpus, sharded search\n\n" + text + "\n")


if __name__ == "__main__":
    main()
