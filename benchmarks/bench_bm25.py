"""BM25 baseline, bm25s vs rank-bm25 (the reference): effectiveness through the full protocol, and speed.

On the default synthetic dataset (`gcl-eval data synth --no-images`: 2,000 queries x 100, written to a
temporary folder and read back through the Marqo-GS reader), each backend runs the four-split protocol
(up to 2,000 sampled queries per split, top 1,000). Reported: nDCG@10 / ERR / RBP(p=0.9) per split and
backend, their difference, how often the two rankings agree, index time and query time (median over
--repeat runs; the numbers must be identical on every run). For scale, the same comparison with bm25s
as it comes (its default Lucene variant and its own top-k selection, same tokens), the setting in
which an earlier measurement (library defaults, other data) found only ~70-77% top-10 agreement. Results: benchmarks/results/bm25.md.

    python benchmarks/bench_bm25.py [--queries 2000] [--docs-per-query 100] [--per-split 2000] [--top-k 1000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from baselines.bm25 import BACKENDS, BM25Retriever, tokenize
from gcl_eval.data.io import read_dataset
from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import write_synthetic
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset

RESULTS = Path(__file__).parent / "results" / "bm25.md"
MEASURES = ("nDCG@10", "ERR", "RBP(p=0.9)")


class TimedRetriever:
    """Wraps a retriever and records the wall time of each split's search."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds: dict[str, float] = {}
        self.queries: dict[str, int] = {}

    def describe(self) -> dict:
        return self.inner.describe()

    def search(self, split, query_texts, corpus_name, documents, k):
        start = time.perf_counter()
        out = self.inner.search(split, query_texts, corpus_name, documents, k)
        self.seconds[split] = time.perf_counter() - start
        self.queries[split] = len(query_texts)
        return out


class Bm25sAsItComes:
    """bm25s.BM25() with its defaults (Lucene idf and tf) and its own top-k; zero scores become -1."""

    def __init__(self):
        self.models = {}

    def describe(self) -> dict:
        return {"preset": "bm25s-defaults", "family": "bm25"}

    def search(self, split, query_texts, corpus_name, documents, k):
        import bm25s

        if corpus_name not in self.models:
            self.models[corpus_name] = bm25s.BM25()
            self.models[corpus_name].index([tokenize(t) for t in documents.titles()], show_progress=False)
        docs, scores = self.models[corpus_name].retrieve([tokenize(q) for q in query_texts],
                                                         k=min(k, len(documents)), show_progress=False)
        return np.where(scores > 0, docs, -1).astype(np.int64), scores.astype(np.float32)


def run_backend(backend: str, dataset, protocol: EvalProtocol) -> dict:
    """Index both corpora (timed), then the protocol with the indexes in place (search timed per split)."""
    retriever = BM25Retriever(backend)
    index_s = {}
    for name in sorted(set(dataset.split_corpus.values())):
        start = time.perf_counter()
        retriever.index(name, dataset.corpora[name])
        index_s[name] = time.perf_counter() - start
    timed = TimedRetriever(retriever)
    evaluation = evaluate_dataset(timed, dataset, protocol)
    return {"result": evaluation.result, "runs": evaluation.runs, "index_s": index_s,
            "search_s": dict(timed.seconds), "queries": dict(timed.queries)}


def agreement(a, b) -> dict:
    """Per split: share of queries with the same top-10 ids in the same order, and with the same whole list."""
    out = {}
    for split in a:
        top10 = [x[:10] == y[:10] for x, y in zip(a[split].doc_ids, b[split].doc_ids)]
        whole = [x == y for x, y in zip(a[split].doc_ids, b[split].doc_ids)]
        overlap = [len(set(x[:10]) & set(y[:10])) / max(1, min(10, len(x), len(y)))
                   for x, y in zip(a[split].doc_ids, b[split].doc_ids)]
        rel = [np.max(np.abs(sx - sy) / np.maximum(np.abs(sy), 1e-30)) if x == y and len(x) else 0.0
               for x, y, sx, sy in zip(a[split].doc_ids, b[split].doc_ids, a[split].scores, b[split].scores)]
        out[split] = {"top10_same": float(np.mean(top10)), "list_same": float(np.mean(whole)),
                      "overlap10": float(np.mean(overlap)), "max_rel_score_diff": float(np.max(rel))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--docs-per-query", type=int, default=100)
    parser.add_argument("--per-split", type=int, default=2000)
    parser.add_argument("--top-k", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    protocol = EvalProtocol(top_k=args.top_k, queries_per_split=args.per_split, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="gcl-bench-bm25-") as tmp:
        folder = Path(tmp) / "synth"
        write_synthetic(SynthConfig(queries=args.queries, docs_per_query=args.docs_per_query, images=False),
                        folder, diagnostics=False)
        dataset = read_dataset(folder)
    corpus_sizes = {name: len(docs) for name, docs in dataset.corpora.items()}
    results: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    for _ in range(args.repeat):
        for backend in BACKENDS:
            results[backend].append(run_backend(backend, dataset, protocol))
            first, last = results[backend][0]["result"], results[backend][-1]["result"]
            if first.splits != last.splits:
                raise SystemExit(f"{backend}: the numbers changed between repeats")
    fast, ref = results["bm25s"][0], results["rank_bm25"][0]
    splits = list(fast["result"].splits)
    agree = agreement(fast["runs"], ref["runs"])
    as_it_comes = evaluate_dataset(Bm25sAsItComes(), dataset, protocol)
    agree_default = agreement(as_it_comes.runs, ref["runs"])
    load = os.getloadavg()[0]

    def median(backend, key):
        return {name: statistics.median(r[key][name] for r in results[backend]) for name in results[backend][0][key]}

    index_s = {b: median(b, "index_s") for b in BACKENDS}
    search_s = {b: median(b, "search_s") for b in BACKENDS}
    n_queries = sum(fast["queries"].values())

    lines = [
        "## BM25: bm25s vs rank-bm25",
        "",
        f"`python benchmarks/bench_bm25.py --queries {args.queries} --docs-per-query {args.docs_per_query} "
        f"--per-split {args.per_split} --top-k {args.top_k} --repeat {args.repeat}`: the synthetic dataset of "
        f"`gcl-eval data synth --queries {args.queries} --docs-per-query {args.docs_per_query} --no-images` "
        f"(corpus_1 {corpus_sizes['corpus_1']:,} and corpus_2 {corpus_sizes['corpus_2']:,} titles), the full "
        f"protocol (up to {args.per_split:,} sampled queries per split, seed {args.seed}, top {args.top_k}, "
        "gcl metric profile), `BM25Retriever(backend)` with the defaults: okapi (BM25Okapi), k1 1.5, b 0.75, "
        "epsilon 0.25, tokenizer alnum.",
        "",
        "The last two columns: bm25s as it comes (`bm25s.BM25()`, Lucene variant, its own top-k; same "
        "tokens, zero scores dropped) and its difference to rank-bm25.",
        "",
        "| split | queries | measure | bm25s | rank-bm25 | bm25s - rank-bm25 | bm25s as it comes | difference |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for split in splits:
        for measure in MEASURES:
            a, b = fast["result"].metric(split, measure), ref["result"].metric(split, measure)
            c = as_it_comes.result.metric(split, measure)
            lines.append(f"| {split} | {fast['result'].splits[split]['n_queries']:,} | {measure} | {a:.4f} | "
                         f"{b:.4f} | {_diff(a, b)} | {c:.4f} | {_diff(c, b)} |")
    lines += [
        "",
        "Agreement with rank-bm25's ranked lists (per split: share of queries whose top 10 are the same "
        "documents in the same order; mean top-10 overlap; share whose whole top-k list is identical; "
        "largest relative score difference over queries with identical lists):",
        "",
        "| split | same top 10 | top-10 overlap | same list | max rel. score diff | as it comes: same top 10 | "
        "top-10 overlap |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for split in splits:
        g, h = agree[split], agree_default[split]
        lines.append(f"| {split} | {g['top10_same']:.2%} | {g['overlap10']:.4f} | {g['list_same']:.2%} | "
                     f"{g['max_rel_score_diff']:.1e} | {h['top10_same']:.2%} | {h['overlap10']:.4f} |")
    total_search = {b: sum(search_s[b].values()) for b in BACKENDS}
    total_index = {b: sum(index_s[b].values()) for b in BACKENDS}
    lines += [
        "",
        f"Time (median of {args.repeat} run{'s' if args.repeat > 1 else ''}; search = `BM25Retriever.search` over "
        f"all {n_queries:,} queries of the four splits at top {args.top_k}, including tokenisation and the "
        "top-k selection; index = both corpora):",
        "",
        "| backend | index (s) | search (s) | ms / query | search time vs bm25s |",
        "|---|---:|---:|---:|---:|",
    ]
    for b in BACKENDS:
        lines.append(f"| {b} | {total_index[b]:.2f} | {total_search[b]:.2f} | "
                     f"{1000 * total_search[b] / n_queries:.2f} | {total_search[b] / total_search['bm25s']:.1f}x |")
    lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}; Python "
              f"{platform.python_version()}, bm25s {version('bm25s')}, rank-bm25 {version('rank-bm25')}, "
              f"numpy {version('numpy')}; 1-minute load average {load:.1f} at the end (a shared VM: "
              "absolute times move, compare the ratio).", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {RESULTS}")


def _diff(a: float, b: float) -> str:
    return "0 (identical)" if a == b else f"{a - b:+.2e}"


if __name__ == "__main__":
    main()
