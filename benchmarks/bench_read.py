"""Reading a 1M-row Marqo-GS split CSV: cold (parse + write the parquet cache), from the cache, and
the full split reader (validation + pairs frame), against pandas.read_csv(engine="c") as the peer.

Every measurement runs in a fresh Python process (time inside the process, peak memory from
resource.getrusage maxrss), repeated; the median time and the largest peak are reported, next to
the peak of a process that only imports the libraries. Results: benchmarks/results/read.md.

    python benchmarks/bench_read.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "read.md"

PRELUDE = """
import json, resource, sys, time
import pandas, pyarrow
from gcl_eval.data import tables
from gcl_eval.data.marqo import read_split_csv
path = sys.argv[1]
start = time.perf_counter()
"""

CASES = {
    "imports only (baseline)": "rows = 0",
    "gcl-eval read_csv, cold (parse CSV, write parquet cache)": "rows = tables.read_csv(path).num_rows",
    "gcl-eval read_csv, from parquet cache": "rows = tables.read_csv(path).num_rows",
    "gcl-eval read_split_csv, from cache (validated pairs frame)": "rows = len(read_split_csv(__import__('pathlib').Path(path)))",
    "pandas.read_csv(engine='c', dtype=str) (peer)": "rows = len(pandas.read_csv(path, engine='c', dtype=str, keep_default_na=False))",
}
COLD = {"gcl-eval read_csv, cold (parse CSV, write parquet cache)"}

EPILOGUE = """
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": rows,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_csv(path: Path, rows: int) -> None:
    """A split CSV like Marqo-GS: 100 products per query, titles with commas, quotes and non-ASCII."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    per_query = 100
    n_queries = rows // per_query
    q = np.repeat(np.arange(n_queries), per_query)
    rank = np.tile(np.arange(1, per_query + 1), n_queries)
    n_products = max(rows // 2, per_query)
    product = (q * 7919 + rank * (n_products // per_query)) % n_products  # distinct within a query
    pid = np.char.zfill(product.astype(str), 9)
    titles = np.char.add(np.char.add("Wool rug, \"Nordic\" – size ", (product % 97).astype(str)), " cm, grey #")
    titles = np.char.add(titles, pid)  # one title per product, as in the real data
    table = pa.table({
        "query_id": pa.array(np.char.add("q", q.astype(str))),
        "query": pa.array(np.char.add("grey wool rug for living room, style ", q.astype(str))),
        "product_id": pa.array(pid),
        "title": pa.array(titles),
        "image_local": pa.array(np.char.add(np.char.add("/data/marqo-gs/images/", pid), ".jpg")),
        "score_linear": pa.array(101 - rank),
    })
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="needed"))


def measure(case: str, path: Path, cache: Path) -> dict:
    if case in COLD and cache.exists():
        shutil.rmtree(cache)
    code = PRELUDE + CASES[case] + "\n" + EPILOGUE
    env = dict(os.environ, GCL_EVAL_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(path)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--make-csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_csv:
        make_csv(args.make_csv, args.rows)
        return
    with tempfile.TemporaryDirectory(prefix="gcl-bench-read-") as tmp:
        path = Path(tmp) / "query_0_product_id_0.csv"
        # generated in a child process: a child's maxrss starts at its parent's size at fork
        subprocess.run([sys.executable, __file__, "--make-csv", str(path), "--rows", str(args.rows)], check=True)
        size_mb = path.stat().st_size / 2**20
        cache = Path(tmp) / "cache"
        results = {}
        for case in CASES:  # in order: the cold case fills the cache the later cases read
            runs = [measure(case, path, cache) for _ in range(args.repeat)]
            results[case] = {"seconds": statistics.median(r["seconds"] for r in runs),
                             "peak_mb": max(r["peak_mb"] for r in runs), "rows": runs[0]["rows"]}
            print(f"{case:62s} {results[case]['seconds']:7.2f} s  {results[case]['peak_mb']:7.0f} MB", flush=True)
        cache_mb = sum(p.stat().st_size for p in (cache / "tables").glob("*.parquet")) / 2**20
    peer = results["pandas.read_csv(engine='c', dtype=str) (peer)"]["seconds"]
    lines = [
        "## Reading a 1M-row split CSV",
        "",
        f"`python benchmarks/bench_read.py --rows {args.rows} --repeat {args.repeat}`: a Marqo-GS split CSV of "
        f"{args.rows:,} rows ({size_mb:.0f} MB; query_id, query, product_id with leading zeros, title with commas, "
        f"quotes and non-ASCII, image_local, score_linear); parquet cache file {cache_mb:.0f} MB. "
        "Each row is one fresh process; time is the median of the runs (imports excluded), "
        "peak is the process's maximum resident memory (imports included; see the baseline row).",
        "",
        "| case | time (s) | vs pandas C | peak RSS (MB) |",
        "|---|---:|---:|---:|",
    ]
    for case, r in results.items():
        ratio = "" if case.startswith("imports") else f"{r['seconds'] / peer:.2f}x"
        lines.append(f"| {case} | {r['seconds']:.2f} | {ratio} | {r['peak_mb']:.0f} |")
    lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}; Python "
              f"{platform.python_version()}, pandas {version('pandas')}, pyarrow {version('pyarrow')}.", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
