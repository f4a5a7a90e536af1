"""`gcl-eval eval`: evaluate a model on the four splits and write a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcl_eval.commands.options import (DATA_HELP, device_option, images_option, json_option, mirror_option,
                                      queries_option, sampling_option, top_k_option, workers_option)
from gcl_eval.measures import RUN_MEASURES


@click.command("eval")
@click.option("--arch", default=None,
              help="open_clip architecture (e.g. ViT-B-32, or gcl-eval's tiny-clip), or an hf-hub:ORG/NAME model "
                   "(not needed with --run-file).")
@click.option("--text-model", default=None,
              help="A text model instead of --arch: minilm (the packaged all-MiniLM-L6-v2), a Hugging Face name "
                   "(offline: when cached) or a local sentence-transformers/transformers folder.")
@click.option("--pooling", type=click.Choice(["mean", "cls", "lasttoken"]), default=None,
              help="Text models: token pooling [default: what the model's sentence-transformers config states; "
                   "required when it states none].")
@click.option("--query-prefix", default=None,
              help="Text models: prefix of every query [default: a checkpoint's training prefix, else the model's "
                   "sentence-transformers prompt 'query', else 'query: ' (E5)]; give --doc-prefix too, '' for none.")
@click.option("--doc-prefix", default=None,
              help="Text models: prefix of every title [default: a checkpoint's, else the prompt 'document', else "
                   "'passage: ' (E5)].")
@click.option("--max-length", type=click.IntRange(min=1), default=None,
              help="Text models: tokens per text [default: a checkpoint's training length, else 128].")
@click.option("--checkpoint", default=None,
              help="Checkpoint to load into --arch: a local file or folder, an http(s) URL (downloaded once into "
                   "the cache) or an hf-hub:ORG/NAME open_clip model; with --text-model, the folder of a finished "
                   "gcl-eval train --text-model run.")
@click.option("--sha256", default=None, help="sha256 the checkpoint URL's download must have.")
@mirror_option
@click.option("--pretrained", default=None, help="open_clip pretrained tag (needs the network).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the random init when neither --checkpoint nor --pretrained is given.")
@click.option("--data", "data", required=True, help=f"{DATA_HELP}.")
@images_option
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Run folder to write.")
@queries_option
@sampling_option
@top_k_option
@click.option("--fields", default=None,
              help="Document field weights, NAME=WEIGHT,... (title, image) [default: title=0.5,image=0.5; "
                   "title=1 for a text model].")
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
              help="Autocast precision: bf16 on any device, fp16 on CUDA only (elsewhere fp32).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--run-file", "run_files", multiple=True, metavar="SPLIT=PATH",
              help="Score another system's TREC run of SPLIT instead of a model (repeatable; the queries are "
                   "those of `gcl-eval data queries`; docs/evaluation.md).")
@click.option("--name", default=None, help="With --run-file: the system's name in result.json and tables.")
@click.option("--track", type=click.Choice(["text", "image", "multi"]), default=None,
              help="With --run-file: the leaderboard track of the system.")
@click.option("--sample-seed", default=1, show_default=True, type=int,
              help="Seed of the query sample (the reference's 1; `data queries --seed`).")
@json_option()
def eval_command(arch, text_model, pooling, query_prefix, doc_prefix, max_length, checkpoint, sha256, mirror,
                 pretrained, seed, data, images_root, out, queries, sampling,
                 top_k, fields, cold_start_fields, measures, profile, ground_truth, splits, device, batch_size,
                 workers, precision, no_cache, as_json, run_files, name, track, sample_seed):
    """Evaluate an open_clip model (--arch) or a text model (--text-model) on the four splits of a dataset
    and write a run folder.

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
                            splits=tuple(splits) or SPLITS, seed=sample_seed)
    if run_files:
        if arch or text_model:
            from gcl_eval.util.errors import GclError

            raise GclError("--run-file scores another system's run: give it without --arch or --text-model")
        return _score_run_files(data, run_files, protocol, out, name, track, mirror, as_json)
    kind, text = _model_kind(arch, text_model, pooling, query_prefix, doc_prefix, max_length,
                             open_clip_only={"--pretrained": pretrained, "--sha256": sha256})
    model = ModelToEvaluate(
        kind=kind, name=arch or text_model, pretrained=checkpoint or pretrained, sha256=sha256, mirror=mirror,
        seed=seed, **text, doc_weights=FieldWeights.parse(fields or ("title=1" if text_model else
                                                                     "title=0.5,image=0.5")),
        cold_start_weights=FieldWeights.parse(cold_start_fields) if cold_start_fields else None,
        batch_size=batch_size, workers=workers, precision=precision, use_cache=not no_cache)
    evaluation = evaluate_and_save(EvalRequest(model=model, data=data, out=out, protocol=protocol,
                                               images_root=images_root, device=device))
    if evaluation is None:  # a torchrun process other than the main one
        return
    if as_json:
        click.echo(json.dumps(evaluation.result.to_json(), indent=2))
    else:
        print_result(evaluation.result, title=f"{arch or text_model} on {data} -> {out}")


def _model_kind(arch, text_model, pooling, query_prefix, doc_prefix, max_length, *,
                open_clip_only: dict) -> tuple[str, dict]:
    """("open_clip" or "text", the text model's ModelToEvaluate settings); one line for a wrong mix."""
    from gcl_eval.util.errors import GclError

    if (arch is None) == (text_model is None):
        raise GclError("give exactly one of --arch (an open_clip model) and --text-model (a text model), or "
                       "--run-file SPLIT=PATH to score another system's run")
    text_options = {"--pooling": pooling, "--query-prefix": query_prefix, "--doc-prefix": doc_prefix,
                    "--max-length": max_length}
    if arch is not None:
        given = [option for option, value in text_options.items() if value is not None]
        if given:
            raise GclError(f"{', '.join(given)}: only with --text-model")
        return "open_clip", {}
    given = [option for option, value in open_clip_only.items() if value is not None]
    if given:
        raise GclError(f"{', '.join(given)}: only with --arch (a text checkpoint is given with --checkpoint)")
    if (query_prefix is None) != (doc_prefix is None):
        raise GclError("give both --query-prefix and --doc-prefix ('' for no prefix), or neither")
    prefixes = None if query_prefix is None else {"query": query_prefix, "document": doc_prefix}
    return "text", {"prefixes": prefixes, "pooling": pooling or "stated", "max_length": max_length}


def _score_run_files(data, run_files, protocol, out, name, track, mirror, as_json):
    from gcl_eval.experiments.external_runs import ExternalSystem, evaluate_and_save_run_files, run_file_summary
    from gcl_eval.util.console import print_result
    from gcl_eval.util.errors import GclError

    paths = {}
    for item in run_files:
        split, sep, path = item.partition("=")
        if not sep or not split or not path:
            raise GclError(f"--run-file {item!r} is not SPLIT=PATH")
        if split in paths:
            raise GclError(f"--run-file gives split {split} twice")
        paths[split] = Path(path)
    system = ExternalSystem(name=name or "external", track=track)
    evaluation = evaluate_and_save_run_files(data, paths, protocol, out, system, mirror=mirror)
    if as_json:
        click.echo(json.dumps(evaluation.result.to_json(), indent=2))
        return
    print_result(evaluation.result, title=f"{system.name} (run files) on {data} -> {out}")
    for line in run_file_summary(evaluation.result):
        click.echo(line)
