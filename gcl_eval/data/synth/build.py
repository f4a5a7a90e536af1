"""Generate a synthetic world and write it as a Marqo-GS folder, through the same writer users get.

Besides the Marqo-GS files the folder holds synth.json (the configuration and the diagnostics) and
synth/products.parquet, synth/queries.parquet (attributes and the hidden quality latent), which no
reader passes to a model: they exist for diagnostics and for explaining results.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from gcl_eval import __version__
from gcl_eval.util.console import status
from gcl_eval.data.dataset import BytesImageStore, Dataset, Documents, make_documents
from gcl_eval.data.synth.world import SynthConfig, World, generate_world

PRODUCT_COLUMNS = ("category", "colour", "material", "pattern", "style", "brand", "brand_tier", "quality",
                   "rating", "show_rating", "bestseller", "premium_word", "budget_word", "visual_cue",
                   "title_colour", "title_material", "title_pattern", "title_style", "title_brand")


def world_documents(world: World) -> Documents:
    """All products as Documents; images are rendered on demand from each product's attributes."""
    products = world.products
    size = world.config.image_size
    refs = list(products.index) if world.config.images else [None] * len(products)
    table = make_documents(products.index, products["title"], refs)

    drawn = dict(zip(products.index, zip(products["category"], products["colour"], products["pattern"],
                                         products["visual_cue"], products["shift_x"].astype(int),
                                         products["shift_y"].astype(int))))

    def render(doc_id: str) -> bytes:
        from gcl_eval.data.synth.images import encode_png, render_product

        return encode_png(render_product(*drawn[doc_id], size))

    return Documents(table, BytesImageStore(render, has=drawn.__contains__))


def build_synthetic(config: SynthConfig, *, diagnostics: bool = True) -> tuple[World, Dataset, dict]:
    """The world, its quadruple split and its report (configuration, sizes, diagnostics)."""
    from gcl_eval.data.split import build_quadruple_split

    with status("generating the synthetic world"):
        world = generate_world(config)
    pairs = world.pairs[["query_id", "query", "doc_id", "score"]]
    dataset = build_quadruple_split(pairs, world_documents(world), seed=config.seed,
                                    name=f"synth-s{config.seed}")
    report: dict = {"generator": f"gcl-eval {__version__}", "config": config.to_dict(),
                    "splits": {s: {"pairs": len(p), "queries": int(p["query_id"].nunique())}
                               for s, p in dataset.pairs.items()}}
    if diagnostics:
        from gcl_eval.data.synth.diagnostics import ceiling_metrics

        with status("diagnostics: cue correlations and the content-only ceiling"):
            ceiling, cues = ceiling_metrics(world, dataset, seed=config.seed)
        report["quality_cues"] = cues
        report["ceiling"] = ceiling
    return world, dataset, report


def write_synthetic(config: SynthConfig, out: Path, *, overwrite: bool = False,
                    diagnostics: bool = True) -> dict:
    """Write the synthetic dataset folder atomically; returns the report also saved as synth.json."""
    from gcl_eval.data.marqo import write_marqo

    world, dataset, report = build_synthetic(config, diagnostics=diagnostics)
    extra = {
        "synth.json": (json.dumps(report, indent=2, sort_keys=True) + "\n").encode(),
        "synth/products.parquet": _parquet_bytes(world.products[list(PRODUCT_COLUMNS)].reset_index()),
        "synth/queries.parquet": _parquet_bytes(world.queries),
    }
    write_marqo(dataset, Path(out), extra_files=extra, overwrite=overwrite)
    return report


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
