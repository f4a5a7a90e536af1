"""Runs for the compare, gate and suite-report tests, built in well under a second without a model.

Stand-in retrievers on the tiny synthetic dataset: a noisy oracle (the ground truth ranked by its
score plus seeded noise, then random documents) and a random ranker, so differences between runs,
and whether they are significant, are large and known.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from gcl_eval.data.dataset import SPLITS
from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import build_synthetic
from gcl_eval.protocol.evaluate import EvalProtocol, evaluate_dataset
from gcl_eval.protocol.results import RunResult, save_run

MEASURES = ("nDCG@10", "ERR", "RBP(p=0.9)", "R@100")


@lru_cache(maxsize=None)
def tiny_dataset(seed: int = 3):
    _, data, _ = build_synthetic(SynthConfig(queries=120, docs_per_query=20, seed=seed, images=False),
                                 diagnostics=False)
    return data


def _rng(seed: int, split: str, text: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), zlib.crc32(text.encode())])


class NoisyOracle:
    """Ground-truth documents ranked by score + N(0, noise * 100), the rest of the corpus after them at random."""

    def __init__(self, dataset, noise: float, seed: int = 0, name: str = "noisy-oracle"):
        self.dataset, self.noise, self.seed, self.name = dataset, noise, seed, name

    def describe(self):
        return {"arch": self.name, "source": "stand-in", "noise": self.noise}

    def search(self, split, query_texts, corpus_name, documents, k):
        pairs = self.dataset.pairs[split]
        position = pd.Index(documents.ids)
        out = np.empty((len(query_texts), k), dtype=np.int64)
        for i, text in enumerate(query_texts):
            rng = _rng(self.seed, split, text)
            rows = pairs[pairs["query"] == text]
            noisy = rows["score"].to_numpy(dtype=float) + rng.normal(0.0, self.noise * 100, len(rows))
            found = position.get_indexer(rows["doc_id"].to_numpy()[np.argsort(-noisy, kind="stable")])
            rest = np.setdiff1d(np.arange(len(documents)), found)
            ranked = np.concatenate([found, rng.permutation(rest)])[:k]
            out[i] = ranked
        return out, -np.arange(k, dtype=np.float32)[None, :].repeat(len(out), 0)


class RandomRanker:
    """Each query's corpus in a seeded random order."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def describe(self):
        return {"arch": "random", "source": "stand-in"}

    def search(self, split, query_texts, corpus_name, documents, k):
        out = np.stack([_rng(self.seed, split, text).permutation(len(documents))[:k] for text in query_texts])
        return out, -np.arange(out.shape[1], dtype=np.float32)[None, :].repeat(len(out), 0)


def make_run(folder: Path, retriever: str, *, dataset_seed: int = 3, top_k: int = 100, queries: int = 200,
             noise: float = 0.3, seed: int = 0, preset: str | None = None,
             splits: tuple[str, ...] = SPLITS) -> Path:
    """Evaluate a stand-in ("oracle" = noisy oracle, "random") and save the run folder."""
    dataset = tiny_dataset(dataset_seed)
    model = NoisyOracle(dataset, noise, seed) if retriever == "oracle" else RandomRanker(seed)
    protocol = EvalProtocol(top_k=top_k, queries_per_split=queries, measures=MEASURES, splits=splits)
    info = model.describe() | ({"preset": preset} if preset else {})
    evaluation = evaluate_dataset(model, dataset, protocol, model_info=info)
    return save_run(evaluation.result, folder, evaluation.runs)


def build_runs(root: Path) -> dict[str, Path]:
    """The run folders the compare and gate tests share.

    good: noisy oracle (noise 0.3); copy: the same folder copied (every p-value is 1);
    reseeded: the same retriever with other noise draws (no significant difference);
    worse: noise 0.6 on the same draws (small, consistent drops: significant, some below 0.01);
    bad: random ranking (large, significant drops everywhere);
    other_data: good's retriever on another dataset; other_protocol: good with top_k 50.
    """
    import shutil

    root = Path(root)
    runs = {
        "good": make_run(root / "good", "oracle"),
        "reseeded": make_run(root / "reseeded", "oracle", seed=1),
        "worse": make_run(root / "worse", "oracle", noise=0.6),
        "bad": make_run(root / "bad", "random"),
        "other_data": make_run(root / "other_data", "oracle", dataset_seed=4),
        "other_protocol": make_run(root / "other_protocol", "oracle", top_k=50),
    }
    runs["copy"] = Path(shutil.copytree(runs["good"], root / "copy"))
    return runs


def fake_run(scores: dict[str, np.ndarray], seed: int) -> RunResult:
    """An in-memory RunResult with the given per-query nDCG@10 per split (qids q0..), ERR = nDCG@10 squared
    and RBP(p=0.9) = nDCG@10 / 2, labelled with a training seed (for the suite report)."""
    rows, splits = [], {}
    for split, values in scores.items():
        frame = pd.DataFrame({"split": split, "qid": [f"q{i}" for i in range(len(values))], "nDCG@10": values,
                              "ERR": values ** 2, "RBP(p=0.9)": values / 2})
        rows.append(frame)
        splits[split] = {"n_queries": len(values), "corpus_size": 10,
                         "metrics": {m: float(frame[m].mean()) for m in ("nDCG@10", "ERR", "RBP(p=0.9)")}}
    return RunResult(model={"seed": seed}, dataset={}, protocol={}, splits=splits, per_query=pd.concat(rows))
