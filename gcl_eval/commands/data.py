"""`gcl-eval data ...`: build, convert and check ranked datasets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcl_eval.commands.options import images_option, mirror_option, queries_option, sampling_option


@click.group("data")
def data() -> None:
    """Fetch, build, convert and check ranked datasets (Marqo-GS layout, HF parquet, BEIR)."""


@data.command("split")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Folder to write in the Marqo-GS layout; must not exist unless --overwrite.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the query and document draws.")
@click.option("--eval-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of queries that become eval queries (novel_query, zero_shot).")
@click.option("--corpus-2-fraction", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of documents that go to corpus_2 (novel_corpus, zero_shot).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-split summary as JSON.")
def split(table, out, seed, eval_fraction, corpus_2_fraction, overwrite, as_json):
    """Split a ranked pair table (CSV or parquet) four ways and write it in the Marqo-GS layout.

    TABLE has columns query, doc_id (or product_id), score (or score_linear), title and/or image
    (or image_local), and optionally query_id. Queries go 80/20 to train/eval, documents 50/50 to
    corpus_1/corpus_2 (seeded).
    """
    from gcl_eval.experiments.datasets import split_pair_table

    summary = split_pair_table(table, out, seed=seed, eval_fraction=eval_fraction,
                               corpus_2_fraction=corpus_2_fraction, overwrite=overwrite)
    _print_summary(summary, as_json, title=f"wrote {out}")


@data.command("check")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only.")
@images_option
@click.option("--check-images", is_flag=True, help="Also check that every image reference resolves.")
@click.option("--format", "fmt", type=click.Choice(["auto", "marqo", "hf", "beir"]), default="auto",
              show_default=True, help="Dataset layout.")
@click.option("--mirror", default=None, metavar="URL",
              help="Fetch a registered dataset from URL/<file name> [default: $GCL_EVAL_MIRROR].")
def check(path, as_json, images_root, check_images, fmt, mirror):
    """Validate a dataset and print, per split, pairs, queries, docs and the corpus it searches.

    PATH is a dataset folder, or the name of a registered dataset (gcl-eval data list), fetched into
    the cache the first time.

    Fails (exit 2) when the splits violate the quadruple structure: an eval query among train
    queries, a product in both corpora, a pair whose product is not in its split's corpus.
    """
    from gcl_eval.experiments.datasets import check_dataset_folder

    summary = check_dataset_folder(path, format=fmt, images_root=images_root, check_images=check_images,
                                   mirror=mirror)
    _print_summary(summary, as_json, title=f"{path}: ok")


@data.command("queries")
@click.argument("data_path", metavar="DATA")
@click.option("--split", "splits", multiple=True,
              help="Split to write (repeatable) [default: every split of the dataset].")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="File to write (one split; default: standard output), or folder for several splits "
                   "(queries_<split>.<format> in it).")
@click.option("--format", "fmt", type=click.Choice(["tsv", "jsonl"]), default="tsv", show_default=True,
              help="tsv: 'id<TAB>text' lines (Pyserini topics); jsonl: BEIR queries.jsonl ({\"_id\", \"text\"}).")
@queries_option
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the query sample (the reference's 1; eval's --sample-seed).")
@sampling_option
@click.option("--ground-truth", type=click.Choice(["dev", "test"]), default=None,
              help="The queries of the dataset's released ground-truth files instead of the sample.")
@mirror_option
def queries_command(data_path, splits, out, fmt, queries, seed, sampling, ground_truth, mirror):
    """Write the queries the protocol scores on each split (ids and texts, as `gcl-eval eval` samples them).

    DATA is a dataset folder or a registered dataset's name. Give another system these queries and the
    split's corpus, and score its TREC run with `gcl-eval eval --run-file SPLIT=RUN` under the same
    --queries, --sampling and --ground-truth options, and --seed as eval's --sample-seed (docs/evaluation.md).
    """
    from gcl_eval.experiments.external_runs import write_sampled_queries
    from gcl_eval.protocol.evaluate import EvalProtocol

    protocol = EvalProtocol(queries_per_split=queries, seed=seed, sampling=sampling, ground_truth=ground_truth)
    texts = write_sampled_queries(data_path, protocol, out, fmt, splits=tuple(splits) or None, mirror=mirror)
    if out is None:
        click.echo(next(iter(texts.values())), nl=False)
    else:
        click.echo(f"wrote {', '.join(f'{split} ({t.count(chr(10))} queries)' for split, t in texts.items())} "
                   f"to {out}", err=True)


def _print_summary(summary: dict, as_json: bool, title: str) -> None:
    if as_json:
        click.echo(json.dumps(summary))
        return
    from gcl_eval.util.console import print_table

    click.echo(title)
    rows = [[name, s["pairs"], s["queries"], s["docs"], s["corpus"], s["corpus_size"]]
            for name, s in summary["splits"].items()]
    print_table("", ["split", "pairs", "queries", "docs", "corpus", "corpus size"], rows)


from gcl_eval.commands.data_get import get_command, list_command  # noqa: E402
from gcl_eval.commands.data_synth import synth  # noqa: E402

data.add_command(synth)
data.add_command(list_command)
data.add_command(get_command)
