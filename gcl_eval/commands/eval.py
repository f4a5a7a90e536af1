"""`gcl-eval eval`: evaluate a model on the four splits and write a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcl_eval.commands.options import (DATA_HELP, device_option, json_option, mirror_option, queries_option,
                                      sampling_option, top_k_option, workers_option)
from gcl_eval.measures import RUN_MEASURES


@click.command("eval")
@click.option("--arch", required=True,
              help="open_clip architecture (e.g. ViT-B-32, or gcl-eval's tiny-clip), or an hf-hub:ORG/NAME model.")
@click.option("--checkpoint", default=None,
              help="Checkpoint to load into --arch: a local file or folder, an http(s) URL (downloaded once into "
                   "the cache) or an hf-hub:ORG/NAME open_clip model.")
@click.option("--sha256", default=None, help="sha256 the checkpoint URL's download must have.")
@mirror_option
@click.option("--pretrained", default=None, help="open_clip pretrained tag (needs the network).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the random init when neither --checkpoint nor --pretrained is given.")
@click.option("--data", "data", required=True, help=f"{DATA_HELP}.")
@click.option("--images", "images_root", type=click.Path(path_type=Path), default=None,
              help="Folder the dataset's image paths are re-rooted to.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Run folder to write.")
@queries_option
@sampling_option
@top_k_option
@click.option("--fields", default="title=0.5,image=0.5", show_default=True,
              help="Document field weights, NAME=WEIGHT,... (title, image).")
@click.option("--cold-start-fields", default=None,
              help="Field weights on novel_query, novel_corpus and zero_shot (e.g. title=1 for the paper's 0.5/0.0).")
@click.option("--measure", "-m", "measures", multiple=True,
              help=f"Measure to compute (repeatable) [default: {', '.join(RUN_MEASURES)}].")
@click.option("--profile", type=click.Choice(["gcl", "standard"]), default="gcl", show_default=True,
              help="Metric semantics: the reference protocol (gcl) or trec_eval/Chapelle (standard).")
@click.option("--ground-truth", type=click.Choice(["dev", "test"]), default=None,
              help="Use the dataset's released ground-truth files instead of sampling queries.")
@click.option("--split", "splits", multiple=True, help="Evaluate only these splits (repeatable).")
@device_option
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@workers_option("Image-decoding worker processes [default: half the CPU cores, 1 to 8].")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast precision on GPU (CPU always runs fp32).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@json_option()
def eval_command(arch, checkpoint, sha256, mirror, pretrained, seed, data, images_root, out, queries, sampling,
                 top_k, fields, cold_start_fields, measures, profile, ground_truth, splits, device, batch_size,
                 workers, precision, no_cache, as_json):
    """Evaluate an open_clip model on the four splits of a dataset and write a run folder.

    The run folder holds result.json (metrics per split with provenance), per_query.parquet, and per
    split run_<split>.trec and qrels_<split>.trec (what was ranked and what it was scored against, for
    any IR tool). Corpus embeddings are cached by content: a second run with the same model and
    data skips encoding. Under torchrun, encoding is split across the processes.
    """
    from gcl_eval.data.dataset import SPLITS
    from gcl_eval.experiments.evaluate_model import EvalRequest, ModelToEvaluate, evaluate_and_save
    from gcl_eval.protocol.evaluate import EvalProtocol
    from gcl_eval.retrieval.fields import FieldWeights
    from gcl_eval.util.console import print_result

    protocol = EvalProtocol(top_k=top_k, queries_per_split=queries, sampling=sampling, profile=profile,
                            measures=tuple(measures) or RUN_MEASURES, ground_truth=ground_truth,
                            splits=tuple(splits) or SPLITS)
    model = ModelToEvaluate(
        kind="open_clip", name=arch, pretrained=checkpoint or pretrained, sha256=sha256, mirror=mirror, seed=seed,
        doc_weights=FieldWeights.parse(fields),
        cold_start_weights=FieldWeights.parse(cold_start_fields) if cold_start_fields else None,
        batch_size=batch_size, workers=workers, precision=precision, use_cache=not no_cache)
    evaluation = evaluate_and_save(EvalRequest(model=model, data=data, out=out, protocol=protocol,
                                               images_root=images_root, device=device))
    if evaluation is None:  # a torchrun process other than the main one
        return
    if as_json:
        click.echo(json.dumps(evaluation.result.to_json(), indent=2))
    else:
        print_result(evaluation.result, title=f"{arch} on {data} -> {out}")
