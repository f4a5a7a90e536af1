"""Titles and queries of the synthetic world, with the noise of real product text.

Titles state some of a product's attributes (which ones: the title_* flags drawn in world.py), each
with a random synonym, in one of several layouts and word orders, with marketing words that carry
no information and quality cues (rating, bestseller/premium/budget words, brand) that do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gcl_eval.data.synth import vocab


def _pick(options, rng: np.random.Generator) -> str:
    return options[rng.integers(len(options))]


def product_titles(products: pd.DataFrame, rng: np.random.Generator, *, product_codes: bool = False) -> list[str]:
    titles = []
    for row in products.itertuples():
        family = vocab.CATEGORIES[row.category][0]
        adjectives = []
        if row.title_style:
            adjectives.append(_pick(vocab.STYLES[row.style], rng))
        if row.title_colour:
            adjectives.append(_pick(vocab.COLOURS[row.colour][1], rng))
        if row.title_material:
            adjectives.append(_pick(vocab.MATERIALS[family][row.material], rng))
        if row.title_pattern:
            adjectives.append(_pick(vocab.PATTERNS[row.pattern], rng))
        if rng.random() < 0.3:
            rng.shuffle(adjectives)
        noun = _pick(vocab.CATEGORIES[row.category][1], rng)
        quality_words = []
        if row.bestseller:
            quality_words.append(_pick(vocab.BESTSELLER_WORDS, rng))
        if row.premium_word:
            quality_words.append(_pick(vocab.PREMIUM_WORDS, rng))
        if row.budget_word:
            quality_words.append(_pick(vocab.BUDGET_WORDS, rng))
        n_marketing = rng.choice(3, p=[0.45, 0.4, 0.15])
        marketing = [vocab.MARKETING_WORDS[i] for i in rng.choice(len(vocab.MARKETING_WORDS), n_marketing, replace=False)]
        brand = row.brand if row.title_brand else ""
        rating = _pick(vocab.RATING_FORMATS, rng).format(r=row.rating) if row.show_rating else ""
        layout = rng.integers(4)
        if layout == 0:
            parts = [brand, *quality_words, *adjectives, noun, *marketing, rating]
            title = " ".join(p for p in parts if p)
        elif layout == 1:
            head = " ".join(p for p in [brand, noun] if p)
            tail = " ".join(adjectives)
            extras = " | ".join(p for p in [" ".join(quality_words), " ".join(marketing), rating] if p)
            title = " - ".join(p for p in [head, tail] if p) + (f" | {extras}" if extras else "")
        elif layout == 2:
            parts = [" ".join([*quality_words, *adjectives[:2], noun])]
            parts += adjectives[2:]
            if brand:
                parts.append(f"by {brand}")
            parts += marketing
            title = ", ".join(p for p in parts if p) + (f" ({rating})" if rating else "")
        else:
            parts = [*marketing, *quality_words, brand, *adjectives, noun]
            title = " ".join(p for p in parts if p) + (f" - {rating}" if rating else "")
        if product_codes:
            title += f" SKU-{row.Index}"
        titles.append(title)
    return titles


def query_text(intent: dict, rng: np.random.Generator) -> str:
    """One natural phrasing of a query intent (category plus optional modifiers)."""
    family = vocab.CATEGORIES[intent["category"]][0]
    mods = []
    if intent["style"]:
        mods.append(_pick(vocab.STYLES[intent["style"]], rng))
    if intent["colour"]:
        mods.append(_pick(vocab.COLOURS[intent["colour"]][1], rng))
    if intent["material"]:
        mods.append(_pick(vocab.MATERIALS[family][intent["material"]], rng))
    if intent["pattern"]:
        mods.append(_pick(vocab.PATTERNS[intent["pattern"]], rng))
    if intent["brand"]:
        mods.insert(0, intent["brand"])
    if rng.random() < 0.25:
        rng.shuffle(mods)
    noun = _pick(vocab.CATEGORIES[intent["category"]][1], rng)
    if not mods:
        template = _pick(("{cat}", "{cat} for sale", "buy {cat}", "{cat} online", "best {cat}"), rng)
        return template.format(cat=noun).lower()
    template = _pick(vocab.QUERY_TEMPLATES, rng)
    return template.format(mods=" ".join(mods), cat=noun).lower()
