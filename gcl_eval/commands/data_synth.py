"""`gcl-eval data synth`: write the built-in synthetic product-search dataset."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("synth")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Folder to write (Marqo-GS layout); must not exist unless --overwrite.")
@click.option("--queries", default=2000, show_default=True, type=click.IntRange(min=10),
              help="Number of distinct queries (intents).")
@click.option("--docs-per-query", default=100, show_default=True, type=click.IntRange(1, 100),
              help="Ranked list length K; score = 101 - position.")
@click.option("--products", default=None, type=click.IntRange(min=1),
              help="Number of products [default: queries * K / 8].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed: same seed, same bytes.")
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(16, 512),
              help="Side of the square PNG images, in pixels.")
@click.option("--images/--no-images", default=True, show_default=True,
              help="Write PNG images (turn off for fast scale tests).")
@click.option("--quality-visible/--quality-hidden", default=True, show_default=True,
              help="Whether titles and images show the quality latent that orders the lists; "
                   "--quality-hidden is the control world.")
@click.option("--noise", default=0.25, show_default=True, type=click.FloatRange(min=0),
              help="Std of the per-(query, product) ranking noise.")
@click.option("--quality-weight", default=1.5, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the quality latent in the hidden relevance (an attribute match is 1).")
@click.option("--product-codes/--no-product-codes", default=False, show_default=True,
              help="Append a unique product code to titles (a memorisation ablation).")
@click.option("--no-diagnostics", is_flag=True, help="Skip the cue correlations and the content ceiling.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def synth(out, queries, docs_per_query, products, seed, image_size, images, quality_visible, noise,
          quality_weight, product_codes, no_diagnostics, overwrite, as_json):
    """Generate the synthetic product world and write it in the Marqo-GS layout.

    Products have attributes (category, colour, material, pattern, style, brand) and a hidden
    quality that their titles (rating, bestseller/premium/budget words, brand tier) and images
    (frame colour) show. Each query's list of K products is ordered by attribute match plus
    quality plus noise. synth.json in the folder holds the configuration and diagnostics.
    """
    from gcl_eval.data.synth import SynthConfig
    from gcl_eval.data.synth.build import write_synthetic

    config = SynthConfig(queries=queries, docs_per_query=docs_per_query, products=products, seed=seed,
                         image_size=image_size, images=images, quality_visible=quality_visible,
                         noise=noise, quality_weight=quality_weight, product_codes=product_codes)
    config.validate()
    report = write_synthetic(config, out, overwrite=overwrite, diagnostics=not no_diagnostics)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report, out)


def _print_report(report: dict, out: Path) -> None:
    from gcl_eval.util.console import print_table

    click.echo(f"wrote {out}")
    print_table("splits", ["split", "pairs", "queries"],
                [[s, v["pairs"], v["queries"]] for s, v in report["splits"].items()])
    if "quality_cues" in report:
        cues = report["quality_cues"]
        click.echo(f"quality cues vs hidden latent: r = {cues['estimate_held_out']:.3f} (all cues, held out)")
        rows = [[split, *[by[name][m] for name in ("content", "attributes_only") for m in ("nDCG@10", "ERR")]]
                for split, by in report["ceiling"].items()]
        print_table("content-only ceiling ranker", ["split", "nDCG@10", "ERR", "nDCG@10 (attr only)",
                                                     "ERR (attr only)"], rows)
