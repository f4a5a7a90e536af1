"""The synthetic product world: products, queries and their ranked lists.

What carries the rank signal (docs/synthetic-world.md has the measurements behind each choice):
- every product has a hidden quality latent (standard normal); its own content shows it through
  noisy cues: a star rating, bestseller/premium/budget words, the brand's tier and the image frame;
- a query names a category and 0-3 more attributes; its list holds K products of that category,
  drawn with a preference for matching ones, and ordered by the hidden relevance
  ``matched attributes + quality_weight * quality + noise * N(0, 1)``; score = 101 - position;
- with ``quality_visible=False`` (the control world) the cues are drawn from an independent latent
  with the same distribution: the content looks the same but says nothing about the order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from gcl_eval.data.synth import vocab
from gcl_eval.util.errors import GclError

GENERATOR_VERSION = 1  # bump when a change to the generator changes the bytes it writes
CATEGORY_NAMES = tuple(vocab.CATEGORIES)
COLOUR_NAMES = tuple(vocab.COLOURS)
PATTERN_NAMES = tuple(vocab.PATTERNS)
STYLE_NAMES = tuple(vocab.STYLES)
PATTERN_PROBS = np.array([0.30, 0.15, 0.13, 0.14, 0.14, 0.14])
MODIFIERS = ("colour", "material", "pattern", "style", "brand")
MODIFIER_PROBS = np.array([0.32, 0.24, 0.2, 0.18, 0.06])
N_MODIFIER_PROBS = np.array([0.2, 0.35, 0.3, 0.15])  # 0..3 modifiers besides the category


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic world. Defaults are the measured honest world (docs/synthetic-world.md)."""

    queries: int = 2000
    docs_per_query: int = 100
    products: int | None = None  # default: queries * docs_per_query / 8, at least 2 full lists per category
    seed: int = 0
    image_size: int = 64
    images: bool = True
    quality_visible: bool = True
    noise: float = 0.25
    quality_weight: float = 1.5
    match_bias: float = 2.5  # how strongly a list prefers matching products (Gumbel top-K logits)
    product_codes: bool = False  # unique codes in titles: a memorisation ablation, off by default

    def n_products(self) -> int:
        if self.products is not None:
            return self.products
        return max(self.queries * self.docs_per_query // 8, 2 * self.docs_per_query * len(CATEGORY_NAMES))

    def validate(self) -> None:
        if self.queries < 10:
            raise GclError(f"--queries must be at least 10 (got {self.queries})")
        if not 1 <= self.docs_per_query <= 100:
            raise GclError(f"--docs-per-query must be in 1..100 so that score = 101 - position (got {self.docs_per_query})")
        per_category = self.n_products() // len(CATEGORY_NAMES)
        if per_category < self.docs_per_query:
            raise GclError(f"--products {self.n_products()} gives {per_category} per category, fewer than "
                           f"--docs-per-query {self.docs_per_query}: raise --products")
        if self.image_size < 16 or self.image_size > 512:
            raise GclError(f"--image-size must be in 16..512 (got {self.image_size})")
        if self.noise < 0 or self.quality_weight < 0:
            raise GclError("--noise and --quality-weight must be >= 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["products"] = self.n_products()
        return d


# The built-in worlds (SynthConfig options), by name. "default" is what `gcl-eval run` uses; "control"
# hides the quality cues (a bi-encoder cannot see why a product ranks high, so rank weighting should not
# help on new products); "second" is another draw of another size, to show results are not tuned to one;
# "heldout" is a draw no preset or recipe was ever tried on before its suite ran (a check, not a tuning set).
BUILTIN_WORLDS: dict[str, dict] = {
    "default": {},
    "control": {"quality_visible": False},
    "second": {"seed": 1, "queries": 1600},
    "heldout": {"seed": 7},
}


@dataclass
class World:
    """Products (attributes, hidden quality, visible cues, title) and queries with ranked lists."""

    config: SynthConfig
    products: pd.DataFrame  # indexed by doc_id
    queries: pd.DataFrame  # query_id, query, category, colour, material, pattern, style, brand
    pairs: pd.DataFrame  # query_id, query, doc_id, score, relevance


def generate_world(config: SynthConfig) -> World:
    config.validate()
    rng = np.random.default_rng([config.seed, 2404_08535])
    products = _products(config, rng)
    queries = _queries(config, rng, products)
    pairs = _ranked_lists(config, rng, products, queries)
    return World(config, products, queries, pairs)


def _products(config: SynthConfig, rng: np.random.Generator) -> pd.DataFrame:
    n = config.n_products()
    # balanced categories: every category has at least n // 12 products, enough for a full list
    category = rng.permutation(np.arange(n) % len(CATEGORY_NAMES))
    colour = rng.integers(0, len(COLOUR_NAMES), n)
    pattern = rng.choice(len(PATTERN_NAMES), n, p=PATTERN_PROBS)
    style = rng.integers(0, len(STYLE_NAMES), n)
    material_u = rng.random(n)
    quality = rng.standard_normal(n)
    independent = rng.standard_normal(n)
    cue_latent = quality if config.quality_visible else independent

    # brand tier follows the (cue) latent: premium brands sell better products
    p_premium = 1 / (1 + np.exp(-(1.6 * cue_latent - 1.3)))
    p_budget = 1 / (1 + np.exp(-(-1.6 * cue_latent - 1.3)))
    u = rng.random(n)
    tier = np.where(u < p_premium, 2, np.where(u < p_premium + p_budget, 0, 1))
    brand_u = rng.random(n)
    rating = np.clip(np.round(4.0 + 0.35 * cue_latent + 0.25 * rng.standard_normal(n), 1), 1.0, 5.0)
    show_rating = rng.random(n) < 0.6
    bestseller = (cue_latent > 0.8) & (rng.random(n) < 0.6)
    premium_word = (cue_latent > 0.4) & (rng.random(n) < 0.35)
    budget_word = (cue_latent < -0.6) & (rng.random(n) < 0.5)
    visual_cue = 1 / (1 + np.exp(-(1.2 * cue_latent + 0.8 * rng.standard_normal(n))))

    shift = max(1, config.image_size // 16)
    table = pd.DataFrame({
        "category": [CATEGORY_NAMES[i] for i in category],
        "colour": [COLOUR_NAMES[i] for i in colour],
        "pattern": [PATTERN_NAMES[i] for i in pattern],
        "style": [STYLE_NAMES[i] for i in style],
        "quality": quality,
        "brand_tier": [vocab.BRAND_TIERS[t] for t in tier],
        "rating": rating,
        "show_rating": show_rating,
        "bestseller": bestseller,
        "premium_word": premium_word,
        "budget_word": budget_word,
        "visual_cue": visual_cue,
        "shift_x": rng.integers(-shift, shift + 1, n),
        "shift_y": rng.integers(-shift, shift + 1, n),
    }, index=pd.Index([f"{i:07d}" for i in range(n)], name="doc_id", dtype=object))
    materials, brands = [], []
    for cat, mu, t, bu in zip(table["category"], material_u, table["brand_tier"], brand_u):
        options = tuple(vocab.MATERIALS[vocab.CATEGORIES[cat][0]])
        materials.append(options[int(mu * len(options))])
        tier_brands = vocab.BRANDS[t]
        brands.append(tier_brands[int(bu * len(tier_brands))])
    table["material"] = materials
    table["brand"] = brands

    # which attributes the title states (the image always shows colour, category and pattern)
    table["title_colour"] = rng.random(n) < 0.65
    table["title_material"] = rng.random(n) < 0.75
    table["title_pattern"] = rng.random(n) < np.where(table["pattern"] == "solid", 0.2, 0.7)
    table["title_style"] = rng.random(n) < 0.55
    table["title_brand"] = rng.random(n) < 0.8
    from gcl_eval.data.synth.text import product_titles

    table["title"] = product_titles(table, rng, product_codes=config.product_codes)
    return table


def _queries(config: SynthConfig, rng: np.random.Generator, products: pd.DataFrame) -> pd.DataFrame:
    """Unique intents (category + modifiers), one phrasing each: a novel query is a novel intent."""
    from gcl_eval.data.synth.text import query_text

    seen_intents: set[tuple] = set()
    seen_text: set[str] = set()
    rows = []
    attempts = 0
    while len(rows) < config.queries:
        attempts += 1
        if attempts > config.queries * 50:
            raise GclError(f"cannot draw {config.queries} distinct queries from this vocabulary")
        category = CATEGORY_NAMES[rng.integers(len(CATEGORY_NAMES))]
        n_mods = rng.choice(4, p=N_MODIFIER_PROBS)
        kinds = rng.choice(len(MODIFIERS), size=n_mods, replace=False, p=MODIFIER_PROBS)
        intent = {"category": category, "colour": None, "material": None, "pattern": None,
                  "style": None, "brand": None}
        family = vocab.CATEGORIES[category][0]
        for k in sorted(kinds):
            kind = MODIFIERS[k]
            if kind == "colour":
                intent["colour"] = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
            elif kind == "material":
                options = tuple(vocab.MATERIALS[family])
                intent["material"] = options[rng.integers(len(options))]
            elif kind == "pattern":
                intent["pattern"] = PATTERN_NAMES[rng.integers(len(PATTERN_NAMES))]
            elif kind == "style":
                intent["style"] = STYLE_NAMES[rng.integers(len(STYLE_NAMES))]
            else:
                brands = [b for tier in vocab.BRAND_TIERS for b in vocab.BRANDS[tier]]
                intent["brand"] = brands[rng.integers(len(brands))]
        key = tuple(intent.values())
        if key in seen_intents:
            continue
        text = query_text(intent, rng)
        if text in seen_text:
            continue
        seen_intents.add(key)
        seen_text.add(text)
        rows.append({"query_id": f"q{len(rows):06d}", "query": text, **intent})
    return pd.DataFrame(rows)


def _ranked_lists(config: SynthConfig, rng: np.random.Generator, products: pd.DataFrame,
                  queries: pd.DataFrame) -> pd.DataFrame:
    """For each query: K products of its category (Gumbel top-K on match), ordered by relevance."""
    k = config.docs_per_query
    doc_ids = products.index.to_numpy()
    quality = products["quality"].to_numpy()
    out_q, out_d, out_rel = [], [], []
    for category in CATEGORY_NAMES:
        q_idx = np.flatnonzero(queries["category"].to_numpy() == category)
        p_idx = np.flatnonzero(products["category"].to_numpy() == category)
        if len(q_idx) == 0:
            continue
        matches = np.ones((len(q_idx), len(p_idx)))  # the category itself
        for attr in ("colour", "material", "pattern", "style", "brand"):
            wanted = queries[attr].to_numpy()[q_idx]
            have = products[attr].to_numpy()[p_idx]
            asked = np.array([w is not None for w in wanted])
            matches += asked[:, None] & (wanted[:, None] == have[None, :])
        gumbel = -np.log(-np.log(rng.random(matches.shape)))
        chosen = np.argpartition(-(config.match_bias * matches + gumbel), k - 1, axis=1)[:, :k]
        chosen_match = np.take_along_axis(matches, chosen, axis=1)
        relevance = (chosen_match + config.quality_weight * quality[p_idx][chosen]
                     + config.noise * rng.standard_normal(chosen.shape))
        order = np.argsort(-relevance, axis=1, kind="stable")
        out_q.append(np.repeat(q_idx, k))
        out_d.append(p_idx[np.take_along_axis(chosen, order, axis=1)].ravel())
        out_rel.append(np.take_along_axis(relevance, order, axis=1).ravel())
    q_all = np.concatenate(out_q)
    # lists were built category by category: restore query order, keeping each list's rank order
    by_query = np.argsort(q_all, kind="stable")
    q_all = q_all[by_query]
    d_all = np.concatenate(out_d)[by_query]
    rel_all = np.concatenate(out_rel)[by_query]
    position = np.tile(np.arange(1, k + 1), len(queries))
    return pd.DataFrame({
        "query_id": queries["query_id"].to_numpy()[q_all],
        "query": queries["query"].to_numpy()[q_all],
        "doc_id": doc_ids[d_all],
        "score": (101 - position).astype(np.float64),
        "relevance": rel_all,
    })
