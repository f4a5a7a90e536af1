"""Random graded qrels and runs for the metric tests and their oracle comparisons."""

from __future__ import annotations

import numpy as np


def ranked_docs(run_q: dict, profile: str) -> list[str]:
    """gcl: score descending, ties in insertion order; standard: trec_eval's score desc, then docid desc."""
    if profile == "gcl":
        return [d for d, _ in sorted(run_q.items(), key=lambda item: item[1], reverse=True)]
    return [d for d, _ in sorted(run_q.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def random_case(seed: int, n_queries: int = 40, ties: bool = False, grades: int = 5):
    """Graded qrels and a run with missing queries, unjudged retrieved docs, zero and negative grades."""
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        pool = [f"d{i}" for i in rng.choice(200, size=30, replace=False)]
        n_judged = int(rng.integers(1, 15))
        qrels[qid] = {d: int(rng.integers(-1, grades + 1)) for d in pool[:n_judged]}
        if q % 9 == 4:
            continue  # missing from the run
        n_ret = int(rng.integers(0, 30))
        retrieved = list(rng.permutation(pool)[:n_ret])
        scores = rng.integers(0, 4, size=n_ret).astype(float) if ties else rng.random(n_ret)
        run[qid] = {d: float(s) for d, s in zip(retrieved, scores)}  # not in score order
    run["not-judged"] = {"d1": 1.0, "d2": 0.5}
    qrels["no-judgements"] = {}
    return qrels, run


CUTOFFS = (1, 3, 10, 50)  # 50 is longer than every run of random_case
TREC_MEASURES = [f"{f}@{k}" for f in ("nDCG", "MAP", "R", "P") for k in CUTOFFS]
"""The measures trec_eval also computes (ndcg_cut, map_cut, recall, P): compared with pytrec_eval."""
OWN_MEASURES = ["ERR", "ERR@3", "ERR@10", "RBP(p=0.5)", "RBP(p=0.9)", "MRR@1", "MRR@10", "MRR@50"]
"""The measures trec_eval lacks or defines otherwise: compared with plain per-query loops."""
