"""Metric benchmark: gcl_eval.measures.metrics against pytrec_eval and a per-query Python loop.

Workload: 20,000 queries x 1,000 retrieved documents; qrels of 100 graded documents per query (grades
100..1, as Marqo-GS positions 1..100 give); about 30 of them retrieved per query at random ranks, the rest
of each list unjudged; tie-free scores. Ours computes nDCG@10, ERR, RBP(p=0.9), MAP@1000 and MRR@1000
together; pytrec_eval computes only ndcg_cut_10, map and recall (its default cutoffs) on the same queries.

    python benchmarks/bench_metrics.py [--queries N] [--loop-queries N] [--out benchmarks/results/metrics.md]

Timings are the best of --repeats runs (pytrec_eval and our dict path: best of 2, they are slow). The
two per-query Python loops (reference_loop, in the reference code's structure, and fused_loop) run on
--loop-queries queries (best of 3) and are scaled linearly to the full query count. Peak memory of each of
our calls is measured afterwards in separate, untimed calls with tracemalloc (numpy reports its buffers to
it); the process's peak RSS comes from getrusage. Exit status 1 when a target ratio is missed.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from gcl_eval.measures import PAPER_MEASURES
from gcl_eval.measures.metrics import evaluate, evaluate_arrays

MEASURES = [*PAPER_MEASURES, "MAP@1000", "MRR@1000"]
TARGETS = {"arrays_vs_pytrec": 20.0, "dicts_vs_pytrec": 2.0, "arrays_vs_loop": 100.0}


def make_workload(n: int, k: int, m: int, hit_rate: float, seed: int):
    """Arrays (what retrieval produces) and the equivalent pytrec_eval dicts."""
    rng = np.random.default_rng(seed)
    grades_by_slot = np.arange(m, 0, -1, dtype=np.int64)  # judged doc j of a query has grade m - j
    hit = rng.random((n, m)) < hit_rate
    ranks = np.argsort(rng.random((n, k)), axis=1)[:, :m]  # m distinct random ranks per query
    ranked_ids = n * m + np.arange(n * k, dtype=np.int64).reshape(n, k)  # unjudged docs by default
    ranked_grades = np.zeros((n, k), dtype=np.int64)
    rows, slots = np.nonzero(hit)
    ranked_ids[rows, ranks[rows, slots]] = rows * m + slots
    ranked_grades[rows, ranks[rows, slots]] = grades_by_slot[slots]
    relevant_grades = np.tile(grades_by_slot, (n, 1))
    scores = np.sort(rng.random((n, k)), axis=1)[:, ::-1]  # descending; ties have probability ~0

    qids = [f"q{i}" for i in range(n)]
    doc_keys = list(map("d{}".format, ranked_ids.ravel().tolist()))
    score_list = scores.ravel().tolist()
    run = {}
    for i, q in enumerate(qids):
        run[q] = dict(zip(doc_keys[i * k : (i + 1) * k], score_list[i * k : (i + 1) * k]))
    judged_keys = list(map("d{}".format, range(n * m)))
    grade_list = grades_by_slot.tolist()
    qrels = {q: dict(zip(judged_keys[i * m : (i + 1) * m], grade_list)) for i, q in enumerate(qids)}
    return ranked_grades, relevant_grades, qrels, run


def best_of(fn, repeats: int):
    best, result = math.inf, None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_bytes(fn) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _ranked(retrieved: dict) -> list:
    """The reference code's ranking: sorted(retrieved.items(), key=score, reverse=True)."""
    return sorted(retrieved.items(), key=lambda x: x[1], reverse=True)


def _ndcg_q(qrel: dict, retrieved: dict, k: int) -> float:
    dcg = 0.0
    for rank, (doc, _) in enumerate(_ranked(retrieved)[:k], start=1):
        rel = qrel.get(doc, 0)
        if rel > 0:
            dcg += rel / math.log2(rank + 1)
    ideal = sorted((g for g in qrel.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def _err_q(qrel: dict, retrieved: dict) -> float:  # the reference's calculate_individual_err
    err, p_stop = 0.0, 1.0
    max_rel = max(qrel.values())
    for rank, (doc, _) in enumerate(_ranked(retrieved), start=1):
        rel_prob = (2 ** qrel.get(doc, 0) - 1) / (2**max_rel)
        err += p_stop * rel_prob / rank
        p_stop *= 1 - rel_prob
    return err


def _rbp_q(qrel: dict, retrieved: dict, p: float) -> float:  # the reference's calculate_individual_rbp
    rbp = 0.0
    max_rel = max(qrel.values())
    for rank, (doc, _) in enumerate(_ranked(retrieved), start=1):
        rbp += (qrel.get(doc, 0) / max_rel) * (p ** (rank - 1))
    return rbp * (1 - p)


def _ap_q(qrel: dict, retrieved: dict, k: int) -> float:
    num_rel = sum(1 for g in qrel.values() if g > 0)
    found, ap = 0, 0.0
    for rank, (doc, _) in enumerate(_ranked(retrieved)[:k], start=1):
        if qrel.get(doc, 0) > 0:
            found += 1
            ap += found / rank
    return ap / num_rel if num_rel else 0.0


def _rr_q(qrel: dict, retrieved: dict, k: int) -> float:  # BEIR's MRR loop
    relevant = {doc for doc, g in qrel.items() if g > 0}
    for rank, (doc, _) in enumerate(_ranked(retrieved)[:k], start=1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def reference_loop(qrels: dict, run: dict, qids: list[str]) -> dict[str, float]:
    """The five measures in the style of the GCL evaluation code: one per-query function per measure
    (its calculate_individual_err / _rbp, BEIR's MRR, nDCG and AP written alike), each ranking the query's
    run and looking its grades up with Python floats, averaged over qids."""
    per_query = {
        "nDCG@10": lambda qrel, ret: _ndcg_q(qrel, ret, 10),
        "ERR": _err_q,
        "RBP(p=0.9)": lambda qrel, ret: _rbp_q(qrel, ret, 0.9),
        "MAP@1000": lambda qrel, ret: _ap_q(qrel, ret, 1000),
        "MRR@1000": lambda qrel, ret: _rr_q(qrel, ret, 1000),
    }
    return {
        name: sum(fn(qrels[q], run.get(q, {})) for q in qids) / len(qids) for name, fn in per_query.items()
    }


def fused_loop(qrels: dict, run: dict, qids: list[str]) -> dict[str, float]:
    """The same five measures with one ranking and one grade lookup per query shared by all of them: a
    faster Python baseline than the reference code's structure, reported beside it."""
    totals = dict.fromkeys(MEASURES, 0.0)
    for qid in qids:
        qrel = qrels[qid]
        rels = [qrel.get(doc, 0) for doc, _ in _ranked(run.get(qid, {}))]
        max_rel = max(qrel.values())
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(rels[:10]) if g > 0)
        ideal = sorted((g for g in qrel.values() if g > 0), reverse=True)[:10]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        totals["nDCG@10"] += dcg / idcg if idcg > 0 else 0.0
        err, p_stop, rbp, found, ap, rr = 0.0, 1.0, 0.0, 0, 0.0, 0.0
        for rank, rel in enumerate(rels, start=1):
            rel_prob = (2**rel - 1) / (2**max_rel)
            err += p_stop * rel_prob / rank
            p_stop *= 1 - rel_prob
            rbp += (rel / max_rel) * (0.9 ** (rank - 1))
            if rel > 0 and rank <= 1000:
                found += 1
                ap += found / rank
                rr = rr or 1.0 / rank
        num_rel = sum(1 for g in qrel.values() if g > 0)
        totals["ERR"] += err
        totals["RBP(p=0.9)"] += rbp * (1 - 0.9)
        totals["MAP@1000"] += ap / num_rel if num_rel else 0.0
        totals["MRR@1000"] += rr
    return {name: total / len(qids) for name, total in totals.items()}


def machine_note() -> str:
    from importlib.metadata import version

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
        f"pytrec-eval-terrier {version('pytrec-eval-terrier')}"
    )


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return f"{ratio:.1f}x"
    return f"{ratio:.1f}x (target >= {target:g}x: {'met' if ratio >= target else 'MISSED'})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--docs", type=int, default=1_000, help="retrieved documents per query")
    parser.add_argument("--judged", type=int, default=100, help="graded documents per query")
    parser.add_argument("--hit-rate", type=float, default=0.3, help="share of judged documents retrieved")
    parser.add_argument("--loop-queries", type=int, default=500, help="queries the Python loop is timed on")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics.md")
    return parser.parse_args(argv)


def time_everything(args, ranked, relevant, qrels, run) -> tuple[dict[str, float], dict[str, dict]]:
    """({what: seconds}, {what: its output}); the loops' times are scaled to the full query count."""
    import pytrec_eval

    t, out = {}, {}
    t["arrays"], out["arrays"] = best_of(lambda: evaluate_arrays(ranked, relevant, MEASURES), args.repeats)
    print(f"ours evaluate_arrays          {t['arrays']:8.3f} s")
    ranked16, relevant16 = ranked.astype(np.int16), relevant.astype(np.int16)
    t["arrays16"], _ = best_of(lambda: evaluate_arrays(ranked16, relevant16, MEASURES), args.repeats)
    print(f"ours evaluate_arrays (int16)  {t['arrays16']:8.3f} s")
    t["dicts"], out["dicts"] = best_of(lambda: evaluate(qrels, run, MEASURES), 2)
    print(f"ours evaluate (dicts)         {t['dicts']:8.3f} s")

    trec_measures = {"ndcg_cut_10", "map", "recall"}
    t["build"], evaluator = best_of(lambda: pytrec_eval.RelevanceEvaluator(qrels, trec_measures), 2)
    print(f"pytrec_eval evaluator build   {t['build']:8.3f} s")
    t["pytrec"], out["pytrec"] = best_of(lambda: evaluator.evaluate(run), 2)
    print(f"pytrec_eval evaluate          {t['pytrec']:8.3f} s")

    loop_qids = list(qrels)[: args.loop_queries]
    scale = len(qrels) / len(loop_qids)
    for key, loop in (("loop", reference_loop), ("fused", fused_loop)):
        t[f"{key}_sub"], out[key] = best_of(lambda loop=loop: loop(qrels, run, loop_qids), 3)
        t[key] = t[f"{key}_sub"] * scale
    print(f"per-query loop, reference     {t['loop']:8.3f} s  ({t['loop_sub']:.3f} s measured)")
    print(f"per-query loop, fused         {t['fused']:8.3f} s  ({t['fused_sub']:.3f} s measured)")
    return t, out


def cross_check(qrels: dict, run: dict, loop_qids: list[str], out: dict[str, dict]) -> None:
    """The same numbers everywhere."""
    ours = out["arrays"]
    for name in MEASURES:
        assert abs(ours[name] - out["dicts"][name]) <= 1e-12, name
    sub = evaluate({q: qrels[q] for q in loop_qids}, {q: run[q] for q in loop_qids}, MEASURES)
    for name in MEASURES:
        assert abs(sub[name] - out["loop"][name]) <= 1e-9, (name, sub[name], out["loop"][name])
        assert abs(sub[name] - out["fused"][name]) <= 1e-9, (name, sub[name], out["fused"][name])
    n = len(qrels)
    pytrec_ndcg = sum(v["ndcg_cut_10"] for v in out["pytrec"].values()) / n
    pytrec_map = sum(v["map"] for v in out["pytrec"].values()) / n
    assert abs(pytrec_ndcg - ours["nDCG@10"]) <= 1e-9
    assert abs(pytrec_map - ours["MAP@1000"]) <= 1e-9
    print("values agree: arrays == dicts (1e-12); == loop on its queries, pytrec_eval nDCG@10 and MAP (1e-9)")


def render_report(args, t: dict[str, float], ratios: dict[str, float], facts: dict) -> str:
    """The markdown of benchmarks/results/metrics.md."""
    n, hits, loop_n = args.queries, facts["hits"], min(args.loop_queries, args.queries)
    shown = {key: verdict(value, TARGETS.get(key)) for key, value in ratios.items()}
    means = ", ".join(f"{name} {facts['means'][name]:.6f}" for name in MEASURES)
    return f"""## Metrics benchmark

`python benchmarks/bench_metrics.py`, {time.strftime("%Y-%m-%d")}.
Machine: {machine_note()}; a shared VM (1-minute load average {facts["load_before"]:.1f} before,
{facts["load_after"]:.1f} after the timings), so expect some noise.

Workload: {n:,} queries x {args.docs:,} retrieved documents, qrels of {args.judged} graded documents
per query (grades {args.judged}..1), {hits / n:.1f} relevant documents retrieved per query at random
ranks, tie-free scores. Ours computes {", ".join(MEASURES)} together (gcl profile);
pytrec_eval computes only ndcg_cut_10, map and recall on the same queries, timed from its dicts.
Best of {args.repeats} runs for `evaluate_arrays`, best of 2 for the dict paths.

The per-query Python loops compute the same five measures with Python floats on the first
{loop_n} queries (best of 3), scaled x{n / loop_n:g}. "Reference style" has one function per
measure that ranks each query's run and looks its grades up, as the GCL evaluation code's
calculate_individual_err / calculate_individual_rbp and BEIR's MRR loop do; the 100x target is taken
against it. "Fused" ranks and looks up once per query for all five measures (a faster baseline).

| what | time (s) |
|---|---:|
| ours: `evaluate_arrays` (int64 grade arrays) | {t["arrays"]:.3f} |
| ours: `evaluate_arrays` (the same arrays as int16) | {t["arrays16"]:.3f} |
| ours: `evaluate` (pytrec_eval-style dicts) | {t["dicts"]:.3f} |
| pytrec_eval: `RelevanceEvaluator(qrels, ...)` construction | {t["build"]:.3f} |
| pytrec_eval: `evaluate(run)` | {t["pytrec"]:.3f} |
| per-query Python loop, reference style ({t["loop_sub"]:.3f} s measured, scaled) | {t["loop"]:.2f} |
| per-query Python loop, fused ({t["fused_sub"]:.3f} s measured, scaled) | {t["fused"]:.2f} |

| ratio | value |
|---|---:|
| pytrec_eval evaluate / ours `evaluate_arrays` | {shown["arrays_vs_pytrec"]} |
| pytrec_eval evaluate / ours `evaluate` | {shown["dicts_vs_pytrec"]} |
| reference-style loop / ours `evaluate_arrays` | {shown["arrays_vs_loop"]} |
| reference-style loop / ours `evaluate` | {shown["dicts_vs_loop"]} |
| fused loop / ours `evaluate_arrays` | {shown["arrays_vs_fused_loop"]} |

Peak memory allocated during one call (tracemalloc, untimed rerun): `evaluate_arrays`
{facts["peak_arrays"] / 2**20:.0f} MiB beside its {facts["input_mib"]:.0f} MiB of input arrays; `evaluate`
{facts["peak_dicts"] / 2**20:.0f} MiB beside the dicts. Process peak RSS (workload dicts and pytrec_eval
included): {facts["rss_gb"]:.1f} GB.

Cross-checks in the same run: `evaluate_arrays` == `evaluate` (1e-12); both == the two loops on
their queries and == pytrec_eval's mean ndcg_cut_10 and map (1e-9).
Means: {means}.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.queries
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    ranked, relevant, qrels, run = make_workload(n, args.docs, args.judged, args.hit_rate, args.seed)
    hits = int((ranked > 0).sum())
    print(
        f"workload: {n} queries x {args.docs} docs, {args.judged} judged/query, "
        f"{hits / n:.1f} relevant retrieved/query (built in {time.perf_counter() - t0:.1f} s)"
    )
    t, out = time_everything(args, ranked, relevant, qrels, run)
    load_after = os.getloadavg()[0]
    cross_check(qrels, run, list(qrels)[: args.loop_queries], out)
    facts = {
        "hits": hits, "means": out["arrays"], "load_before": load_before, "load_after": load_after,
        "peak_arrays": peak_bytes(lambda: evaluate_arrays(ranked, relevant, MEASURES)),
        "peak_dicts": peak_bytes(lambda: evaluate(qrels, run, MEASURES)),
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,  # KiB on Linux
        "input_mib": (ranked.nbytes + relevant.nbytes) / 2**20,
    }
    ratios = {
        "arrays_vs_pytrec": t["pytrec"] / t["arrays"],
        "dicts_vs_pytrec": t["pytrec"] / t["dicts"],
        "arrays_vs_loop": t["loop"] / t["arrays"],
        "dicts_vs_loop": t["loop"] / t["dicts"],
        "arrays_vs_fused_loop": t["fused"] / t["arrays"],
    }
    for key, value in ratios.items():
        print(f"ratio {key:20s} {verdict(value, TARGETS.get(key))}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_report(args, t, ratios, facts))
    print(f"wrote {args.out}")
    missed = [key for key, target in TARGETS.items() if ratios[key] < target]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
