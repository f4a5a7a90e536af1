"""The synthetic product world: structure, where the rank signal lives, determinism."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from gcl_eval.data.synth import SynthConfig, generate_world
from gcl_eval.data.synth.diagnostics import quality_estimate
from gcl_eval.data.synth.images import render_product
from gcl_eval.data.synth.vocab import COLOURS
from gcl_eval.util.errors import GclError

SMALL = SynthConfig(queries=300, docs_per_query=40, seed=5)


@pytest.fixture(scope="module")
def world():
    return generate_world(SMALL)


def test_every_query_has_a_full_list_scored_101_minus_position(world):
    pairs = world.pairs
    assert len(pairs) == 300 * 40
    assert world.queries["query"].is_unique and world.queries["query_id"].is_unique
    for _, group in pairs.groupby("query_id", sort=False):
        assert group["score"].tolist() == [float(101 - p) for p in range(1, 41)]
        assert group["doc_id"].is_unique
        assert (np.diff(group["relevance"].to_numpy()) <= 0).all()  # ordered by hidden relevance


def test_ids_are_strings_with_leading_zeros(world):
    assert world.products.index[0] == "0000000"
    assert all(isinstance(d, str) for d in world.pairs["doc_id"].head(100))


def test_lists_hold_the_query_category_and_prefer_matching_products(world):
    products = world.products
    queries = world.queries.set_index("query_id")
    merged = world.pairs.join(queries[["category", "colour"]], on="query_id").join(
        products[["category", "colour"]].add_suffix("_doc"), on="doc_id")
    assert (merged["category"] == merged["category_doc"]).all()
    asked = merged[merged["colour"].notna()]
    share = (asked["colour"] == asked["colour_doc"]).mean()
    assert share > 2.0 / len(COLOURS)  # well above the 1/12 a random product of the category has


def test_position_follows_quality(world):
    quality = world.products["quality"]
    pairs = world.pairs.assign(quality=quality.loc[world.pairs["doc_id"]].to_numpy())
    top = pairs[pairs["score"] > 90]["quality"].mean()
    bottom = pairs[pairs["score"] <= 70]["quality"].mean()
    assert top > bottom + 0.8


def test_titles_show_quality_only_in_the_visible_world(world):
    _, visible = quality_estimate(world, world.products.index[::2])
    assert visible["estimate_held_out"] > 0.7
    hidden_world = generate_world(SynthConfig(queries=300, docs_per_query=40, seed=5, quality_visible=False))
    _, hidden = quality_estimate(hidden_world, hidden_world.products.index[::2])
    assert abs(hidden["estimate_held_out"]) < 0.1


def test_titles_are_noisy_but_name_the_category(world):
    titles = world.products["title"]
    assert titles.str.len().between(5, 200).all()
    assert titles.nunique() > 0.95 * len(titles)
    assert not titles.str.contains("SKU-").any()
    coded = generate_world(SynthConfig(queries=50, docs_per_query=20, seed=1, product_codes=True))
    assert coded.products["title"].str.contains("SKU-").all()


def test_same_seed_same_world_other_seed_other_world():
    a = generate_world(SynthConfig(queries=100, docs_per_query=20, seed=11))
    b = generate_world(SynthConfig(queries=100, docs_per_query=20, seed=11))
    c = generate_world(SynthConfig(queries=100, docs_per_query=20, seed=12))
    assert a.pairs.equals(b.pairs) and a.products.equals(b.products)
    assert not a.pairs["query"].equals(c.pairs["query"])


def test_image_shows_the_colour_and_the_frame_shows_quality():
    px = render_product("mug", "red", "solid", 1.0, 0, 0, 64)
    centre = px[28:36, 20:28].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - np.array(COLOURS["red"][0])).max() < 20
    gold, grey = px[0, 32], render_product("mug", "red", "solid", 0.0, 0, 0, 64)[0, 32]
    assert gold[0] > grey[0] and gold[2] < grey[2]
    assert not np.array_equal(render_product("mug", "red", "striped", 0.5, 0, 0, 64),
                              render_product("mug", "red", "solid", 0.5, 0, 0, 64))


@pytest.mark.parametrize("kwargs, needle", [
    ({"docs_per_query": 101}, "docs-per-query"),
    ({"queries": 3}, "queries"),
    ({"products": 100}, "products"),
    ({"image_size": 8}, "image-size"),
])
def test_bad_configurations_are_one_line_errors(kwargs, needle):
    with pytest.raises(GclError, match=needle):
        SynthConfig(**kwargs).validate()


def test_smallest_valid_world_has_full_lists():
    world = generate_world(SynthConfig(queries=10, docs_per_query=2, products=30))
    assert world.pairs.groupby("query_id").size().eq(2).all()
