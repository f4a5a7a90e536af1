"""A small shop corpus, the BM25Okapi formula written out, and a tiny synthetic dataset, for the BM25 tests
and their rank-bm25 comparison."""

from __future__ import annotations

import math

import numpy as np

from baselines.bm25 import tokenize
from gcl_eval.data.dataset import Documents, make_documents
from gcl_eval.data.io import read_dataset
from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import write_synthetic


def corpus(titles) -> Documents:
    return Documents(make_documents([f"d{i}" for i in range(len(titles))], titles, [None] * len(titles)))


# Term counts chosen so that every query below ranks its matches with distinct scores.
SHOP = corpus([
    "red wool rug",                     # 0
    "Red red wool rug, large",          # 1
    "blue cotton shirt",                # 2
    "red cotton shirt slim fit",        # 3
    "green wool socks",                 # 4
    "wool wool wool blanket",           # 5
    "brown leather boots",              # 6
    "blue denim jacket",                # 7
    "red leather boots for hiking",     # 8
    "grey felt hat",                    # 9
])
QUERIES = ["red wool", "wool rug", "leather boots", "blue shirt", "red red cotton"]


def okapi_scores(titles, query, k1=1.5, b=0.75, epsilon=0.25):
    """BM25Okapi written out from its definition, in float64, as the oracle for both backends."""
    docs = [tokenize(t) for t in titles]
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    vocab = list(dict.fromkeys(t for d in docs for t in d))
    df = {t: sum(t in d for d in docs) for t in vocab}
    idf = {t: math.log((n - df[t] + 0.5) / (df[t] + 0.5)) for t in vocab}
    floor = epsilon * sum(idf.values()) / len(idf)
    idf = {t: (floor if v < 0 else v) for t, v in idf.items()}
    out = []
    for d in docs:
        s = 0.0
        for t in tokenize(query):
            tf = d.count(t)
            s += idf.get(t, 0.0) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return np.array(out)


def tiny_dataset(folder):
    """`gcl-eval data synth --queries 100 --docs-per-query 20 --no-images`, read back by the reader."""
    write_synthetic(SynthConfig(queries=100, docs_per_query=20, images=False), folder, diagnostics=False)
    return read_dataset(folder)
