"""Diagnostics of a synthetic world: how visible the rank signal is, and what content allows.

- quality_cues: Pearson correlation between the hidden quality latent and (a) each visible cue,
  (b) a least-squares estimate from all cues, fitted on corpus_1 products and scored on corpus_2.
- ceiling: a hand-built content-only ranker, scored with the reference protocol on every split.
  It sees exactly what a model could: the attributes the title states or the image shows (an
  attribute not shown counts as its prior probability of matching) and the quality estimate from
  the cues. It knows the world's formula: lists hold only the query's category (a filter here), a
  matching attribute raises both the odds of being listed (match_bias) and the relevance (1), and
  quality adds quality_weight * estimate. So it is a ceiling for content-based rankers, not for
  memorisation. "attributes_only" drops the quality term, to show how much of the order is quality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gcl_eval.data.dataset import Dataset
from gcl_eval.data.synth import vocab
from gcl_eval.data.synth.world import World
from gcl_eval.measures import PAPER_MEASURES

ATTRIBUTES = ("category", "colour", "material", "pattern", "style", "brand")
CATEGORY_FILTER = 100.0  # lists never leave the query's category


def cue_features(products: pd.DataFrame, with_images: bool) -> np.ndarray:
    """What a product's title and image show about its quality, as a feature matrix."""
    tier = products["brand_tier"].to_numpy()
    named = products["title_brand"].to_numpy(dtype=float)
    columns = [
        np.ones(len(products)),
        products["show_rating"].to_numpy(dtype=float),
        (products["rating"].to_numpy() - 4.0) * products["show_rating"].to_numpy(dtype=float),
        products["bestseller"].to_numpy(dtype=float),
        products["premium_word"].to_numpy(dtype=float),
        products["budget_word"].to_numpy(dtype=float),
        (tier == "premium") * named,
        (tier == "budget") * named,
    ]
    if with_images:
        cue = np.clip(products["visual_cue"].to_numpy(), 1e-6, 1 - 1e-6)
        columns.append(np.log(cue / (1 - cue)))
    return np.stack(columns, axis=1)


def quality_estimate(world: World, fit_ids) -> tuple[np.ndarray, dict]:
    """Least-squares quality estimate from visible cues (fitted on fit_ids) and the correlations."""
    products = world.products
    x = cue_features(products, world.config.images)
    latent = products["quality"].to_numpy()
    fit = products.index.isin(pd.Index(fit_ids))
    coef, *_ = np.linalg.lstsq(x[fit], latent[fit], rcond=None)
    estimate = x @ coef
    shown = products["show_rating"].to_numpy()
    named = products["title_brand"].to_numpy()
    tier_rank = products["brand_tier"].map({"budget": -1.0, "mid": 0.0, "premium": 1.0}).to_numpy()

    def corr(a, b) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and np.std(a) > 0 else float("nan")

    report = {
        "estimate_held_out": corr(estimate[~fit], latent[~fit]),
        "rating_where_shown": corr(products["rating"].to_numpy()[shown], latent[shown]),
        "brand_tier_where_named": corr(tier_rank[named], latent[named]),
        "image_frame": corr(products["visual_cue"].to_numpy(), latent) if world.config.images else None,
        "share_with_rating": float(shown.mean()),
    }
    return estimate, report


def _visible(products: pd.DataFrame, attribute: str, with_images: bool) -> np.ndarray:
    if attribute == "category":
        return np.ones(len(products), dtype=bool)
    flag = products[f"title_{attribute}"].to_numpy(dtype=bool)
    if with_images and attribute in ("colour", "pattern"):
        return np.ones(len(products), dtype=bool)
    return flag


def _prior(attribute: str) -> float:
    """Chance that a product of the right category has a given value of an attribute it hides."""
    sizes = {"colour": len(vocab.COLOURS), "pattern": len(vocab.PATTERNS), "style": len(vocab.STYLES),
             "material": 5.5, "brand": sum(len(b) for b in vocab.BRANDS.values())}
    return 1.0 / sizes[attribute]


def content_scores(world: World, queries: pd.DataFrame, products: pd.DataFrame, quality_hat: np.ndarray,
                   quality_weight: float) -> np.ndarray:
    """Score matrix (queries x products) of the content-only ranker."""
    with_images = world.config.images
    weights = {"category": CATEGORY_FILTER, **{a: 1.0 + world.config.match_bias for a in ATTRIBUTES[1:]}}
    scores = np.zeros((len(queries), len(products)), dtype=np.float32)
    for attribute in ATTRIBUTES:
        wanted = queries[attribute].to_numpy(dtype=object)
        asked = np.array([w is not None for w in wanted])
        if not asked.any():
            continue
        have = products[attribute].to_numpy(dtype=object)
        # integer codes: comparing object arrays of strings is ~10x slower
        codes, uniques = pd.factorize(np.concatenate([have, wanted[asked]]))
        have_code = codes[: len(have)]
        wanted_code = np.full(len(wanted), -2)
        wanted_code[asked] = codes[len(have):]
        equal = wanted_code[:, None] == have_code[None, :]
        visible = _visible(products, attribute, with_images)
        prior = 1.0 if attribute == "category" else _prior(attribute)
        match = np.where(visible[None, :], equal, np.float32(prior)).astype(np.float32)
        scores += np.float32(weights[attribute]) * asked[:, None].astype(np.float32) * match
    return scores + np.float32(quality_weight) * quality_hat[None, :].astype(np.float32)


def ceiling_metrics(world: World, dataset: Dataset, *, n_queries: int = 2000, top_k: int = 1000,
                    seed: int = 0) -> tuple[dict, dict]:
    """Per split, the reference metrics of the content-only ranker (and of attributes only)."""
    from gcl_eval.measures.metrics import evaluate_arrays
    from gcl_eval.protocol.qrels import build_qrels, grades_from_scores
    from gcl_eval.protocol.sampling import sample_queries

    quality_hat, cue_report = quality_estimate(world, dataset.corpora["corpus_1"].ids)
    queries = world.queries.set_index("query_id")
    result: dict[str, dict] = {}
    for split in dataset.splits:
        pairs = dataset.pairs[split].assign(grade=lambda p: grades_from_scores(p["score"]))
        corpus_ids = dataset.corpus_for(split).ids
        pairs, qids = sample_queries(pairs, n_queries, seed)
        qrels = build_qrels(pairs, corpus_ids, qids, top_k)
        products = world.products.loc[corpus_ids]
        rows = world.products.index.get_indexer(corpus_ids)
        q_table = queries.loc[qids]
        k = min(top_k, len(corpus_ids))
        result[split] = {}
        for name, weight in (("content", world.config.quality_weight), ("attributes_only", 0.0)):
            ranked = np.empty((len(qids), k), dtype=np.int64)
            for start in range(0, len(qids), 256):
                chunk = content_scores(world, q_table.iloc[start:start + 256], products, quality_hat[rows], weight)
                top = np.argpartition(-chunk, k - 1, axis=1)[:, :k]
                order = np.argsort(-np.take_along_axis(chunk, top, axis=1), axis=1, kind="stable")
                ranked[start:start + 256] = np.take_along_axis(top, order, axis=1)
            metrics = evaluate_arrays(qrels.grade(ranked), qrels.grades, list(PAPER_MEASURES))
            result[split][name] = {m: round(float(v), 4) for m, v in metrics.items()}
    return result, cue_report
