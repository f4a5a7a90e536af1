"""Run folders for the leaderboard tests, made in seconds with stand-in retrievers (no model).

A noisy oracle ranks each split's corpus by the true score plus seeded Gaussian noise, so the
models differ in quality the way real ones do (less noise = better) and the paired tests have
something to find. The "model" blocks carry the keys the leaderboard reads (preset, family, track,
trains, stw), except one run that looks like today's `gcl-eval eval` output (arch/source only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import build_synthetic
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset
from gcl_eval.protocol.results import save_run
from trainers.weights import score_to_weight

XSS_PRESET = "<script>alert(1)</script>"
# a pinned query sample: the noise levels of MODELS were chosen on it (some cells significant, some not)
PROTOCOL = EvalProtocol(top_k=100, queries_per_split=40, seed=0, sampling="numpy")


class NoisyOracleRetriever:
    """True score (0 for unjudged documents) + noise * N(0, 1) * 100, seeded per split and query."""

    def __init__(self, dataset, noise: float, seed: int):
        self.dataset, self.noise, self.seed = dataset, noise, seed

    def describe(self):
        return {"name": "noisy-oracle", "noise": self.noise}

    def search(self, split, query_texts, corpus_name, documents, k):
        pairs = self.dataset.pairs[split]
        position = pd.Index(documents.ids)
        by_query = {text: rows for text, rows in pairs.groupby("query")}
        indices = np.empty((len(query_texts), min(k, len(documents))), dtype=np.int64)
        scores = np.empty(indices.shape, dtype=np.float32)
        for i, text in enumerate(query_texts):
            rng = np.random.default_rng([self.seed, len(split), i])
            truth = np.zeros(len(documents))
            rows = by_query[text]
            found = position.get_indexer(rows["doc_id"])
            truth[found[found >= 0]] = rows["score"].to_numpy(dtype=float)[found >= 0]
            noisy = truth + self.noise * 100 * rng.standard_normal(len(documents))
            top = np.argsort(-noisy, kind="stable")[: indices.shape[1]]
            indices[i], scores[i] = top, noisy[top]
        return indices, scores


def stw(name: str, **params) -> dict:
    """The STW block of a trained run's model: name, params and w(s) for s = 1..100."""
    curve = score_to_weight(name, np.arange(1, 101, dtype=float), **params)
    return {"name": name, "params": params, "curve": [round(float(w), 6) for w in curve]}


# (folder, noise, model block); folder None = no extra keys (today's eval output)
MODELS = [
    ("bm25", 0.9, {"preset": "bm25", "family": "bm25", "track": "text", "trains": False, "source": "bm25s"}),
    ("e5-small-ft", 0.45, {"preset": "e5-small-ft", "family": "e5", "track": "text", "trains": True,
                           "arch": "e5-small-v2", "stw": stw("inverse", c=1.0)}),
    ("xss", 0.7, {"preset": XSS_PRESET, "family": "e5", "track": "text", "trains": False}),
    ("clip-zs", 0.8, {"preset": "vitb32-clip-zs", "family": "clip", "track": "image", "trains": False,
                      "arch": "ViT-B-32", "source": "open_clip:laion2b_s34b_b79k"}),
    ("clip-ft", 0.5, {"preset": "vitb32-clip-ft", "family": "clip", "track": "image", "trains": True,
                      "arch": "ViT-B-32", "stw": stw("constant")}),
    ("gcl-image", 0.3, {"preset": "vitb32-gcl", "family": "gcl", "track": "image", "trains": True,
                        "arch": "ViT-B-32", "checkpoint_sha256": "ab" * 32, "stw": stw("piecewise", top=10)}),
    ("gcl-multi", 0.25, {"preset": "vitb32-gcl-multi", "family": "gcl", "track": "multi", "trains": True,
                         "arch": "ViT-B-32", "doc_fields": {"title": 0.5, "image": 0.5},
                         "stw": stw("inverse_sqrt")}),
    ("plain-eval", 0.6, {"arch": "tiny-clip", "source": "random init (seed 0)", "checkpoint_sha256": None,
                         "doc_fields": {"title": 0.5, "image": 0.5}}),
]
SECOND_DATASET = [
    ("bm25", 0.9, {"preset": "bm25", "family": "bm25", "track": "text", "trains": False}),
    ("e5-small-ft", 0.4, {"preset": "e5-small-ft", "family": "e5", "track": "text", "trains": True,
                          "stw": stw("linear", normalise=True)}),
]


# a suite's label trained with three seeds: one leaderboard row (mean ± std), seeds on its page
SUITE, SEEDED_LABEL, SEEDS = "fix-suite", "e5-seeds", (0, 1, 2)
SEEDED_MODEL = {"preset": "e5-small-ft", "family": "e5", "track": "text", "trains": True, "suite": SUITE,
                "label": SEEDED_LABEL, "stw": stw("inverse")}


def make_results(root: Path) -> Path:
    """RESULTS_DIR with the runs above: root/<dataset>/<folder>/ (result.json, per_query.parquet, ...), and
    the seeds of SEEDED_MODEL in root/<first dataset>/<SUITE>/<SEEDED_LABEL>/seed-<k>/."""
    for seed, models in ((3, MODELS), (5, SECOND_DATASET)):
        _, dataset, _ = build_synthetic(SynthConfig(queries=100, docs_per_query=15, seed=seed, images=False),
                                        diagnostics=False)
        for i, (folder, noise, model) in enumerate(models):
            _save(dataset, noise, i, model, root / dataset.name / folder)
        if seed == 3:
            for k in SEEDS:
                _save(dataset, 0.5, 100 + k, {**SEEDED_MODEL, "seed": k},
                      root / dataset.name / SUITE / SEEDED_LABEL / f"seed-{k}")
    return root


def _save(dataset, noise: float, seed: int, model: dict, folder: Path) -> None:
    evaluation = evaluate_dataset(NoisyOracleRetriever(dataset, noise, seed=seed), dataset, PROTOCOL,
                                  model_info=dict(model))
    save_run(evaluation.result, folder, evaluation.runs)
