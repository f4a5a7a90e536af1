"""`gcl-eval train`: train a GCL model on a dataset's in_domain pairs into a checkpoint folder."""

from __future__ import annotations

import json

import click

from gcl_eval.commands.options import DATA_HELP, images_option, mirror_option
from gcl_eval.experiments.training_eval import DEFAULT_EVAL_QUERIES, DEFAULT_EVAL_SPLITS
from trainers.config import FUSIONS, PRECISIONS, REPORTERS, TEXT_PREFIXES, TrainConfig
from trainers.losses import LOSS_KINDS, NORMALIZERS
from trainers.weights import STW_NAMES

_DEFAULTS = TrainConfig(arch="tiny-clip")


def _parse_stw_params(values) -> tuple[tuple[str, object], ...]:
    """KEY=VALUE pairs; numbers become numbers, anything else stays a string (piecewise decay=...)."""
    from gcl_eval.util.errors import GclError

    params = []
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise GclError(f"--stw-param {item!r} is not KEY=VALUE")
        try:
            value: object = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
        params.append((key.strip(), value))
    return tuple(params)


@click.command("train")
@click.option("--arch", help="open_clip architecture to train (e.g. tiny-clip, ViT-B-32).")
@click.option("--text-model", help="Text-only model instead: 'minilm' (packaged all-MiniLM-L6-v2), "
              "a local HF model folder, or a cached hub name.")
@click.option("--pretrained", help="open_clip pretrained tag, a local checkpoint file or folder, an http(s) URL "
              "(downloaded once into the cache) or an hf-hub:ORG/NAME model (default: random init).")
@click.option("--data", "data", required=True,
              help=f"{DATA_HELP} (its in_domain pairs are trained on).")
@images_option
@mirror_option
@click.option("--out", "out", required=True, type=click.Path(), help="Checkpoint folder to write.")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size, show_default=True,
              help="Global contrastive batch (all processes together).")
@click.option("--max-steps", type=int, default=None,
              help="Stop after this many optimizer steps (a budget below --epochs; the schedule decays over it).")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True,
              help="Peak learning rate (the paper fine-tunes pretrained models with 1e-4).")
@click.option("--warmup", type=int, default=_DEFAULTS.warmup, show_default=True, help="Warm-up steps.")
@click.option("--weight-decay", type=float, default=_DEFAULTS.weight_decay, show_default=True)
@click.option("--stw", type=click.Choice(STW_NAMES), default=_DEFAULTS.stw, show_default=True,
              help="Score-to-weight function.")
@click.option("--stw-param", multiple=True, metavar="KEY=VALUE", help="A score-to-weight parameter (e.g. c=1, top=10).")
@click.option("--loss", type=click.Choice(LOSS_KINDS), default=_DEFAULTS.loss, show_default=True)
@click.option("--normalize-by", type=click.Choice(NORMALIZERS), default=_DEFAULTS.normalize_by, show_default=True,
              help="Normaliser of the CE loss: N or the sum of the weights.")
@click.option("--fields", help="Document fields and weights, e.g. image=0.5,title=0.5 "
              "(default: that for open_clip, title=1 for text models).")
@click.option("--renormalize-mean/--no-renormalize-mean", default=False, show_default=True,
              help="L2-normalise the mean field embeddings inside the loss.")
@click.option("--fusion", type=click.Choice(FUSIONS), default=_DEFAULTS.fusion, show_default=True,
              help="How a document's fields combine: fixed (the weighted mean of its present fields) or learned "
                   "(a late fusion trained with the model, written to OUT/fusion.pt and used by every evaluation "
                   "of the run; needs two document fields).")
@click.option("--field-dropout", type=float, default=_DEFAULTS.field_dropout, show_default=True, metavar="P",
              help="Hide each training document's image with probability P in [0, 1) (never its last field), "
                   "so that a learned fusion learns to score title-only documents.")
@click.option("--fusion-lr", type=float, default=None, metavar="LR",
              help="The learned fusion's own peak learning rate [default: --lr].")
@click.option("--text-prefixes", type=click.Choice(TEXT_PREFIXES), default=_DEFAULTS.text_prefixes, show_default=True,
              help="Text models: E5 role prefixes ('query: ', 'passage: ') or none.")
@click.option("--augment/--no-augment", default=False, show_default=True,
              help="Random resized crops (the model's training transform) instead of the eval transform.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=_DEFAULTS.precision, show_default=True)
@click.option("--grad-clip", type=float, help="Clip the gradient norm to this value.")
@click.option("--grad-cache-chunk", type=int, help="Gradient cache: run the towers in chunks of this many rows.")
@click.option("--device", default=_DEFAULTS.device, show_default=True,
              help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.")
@click.option("--workers", "num_workers", type=click.IntRange(min=0),
              help="DataLoader worker processes (image decoding) [default: half the CPU cores, 1 to 8].")
@click.option("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every, show_default=True,
              help="Also checkpoint every N steps (0: at epoch ends only).")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option("--log-every", type=int, default=0, show_default=True, metavar="N",
              help="Append a record to OUT/metrics.jsonl every N optimizer steps (loss, lr, samples/s, "
                   "gradient norm, logit scale, batch weights; 0: none).")
@click.option("--eval-every", type=int, default=0, show_default=True, metavar="N",
              help="Evaluate every N steps and at each epoch end on a sample of --eval-splits "
                   "(recorded in metrics.jsonl; 0: never).")
@click.option("--eval-splits", default=",".join(DEFAULT_EVAL_SPLITS), show_default=True,
              help="Comma-separated splits the evaluations during training use.")
@click.option("--eval-queries", type=int, default=DEFAULT_EVAL_QUERIES, show_default=True,
              help="Queries sampled per split for the evaluations during training.")
@click.option("--keep-best", metavar="MEASURE[:SPLIT]",
              help="Export the best evaluated weights to OUT/best/ by this measure, on SPLIT or averaged over "
                   "--eval-splits (e.g. nDCG@10:in_domain; needs --eval-every).")
@click.option("--save-every-epoch", is_flag=True, help="Export the weights after each epoch to OUT/epoch-K/.")
@click.option("--report-to", multiple=True, metavar="TARGET",
              help=f"Also report the records to {' or '.join(REPORTERS)} (W&B offline); repeatable or comma-separated.")
@click.option("--progress-every", type=float, default=_DEFAULTS.progress_every, show_default=True, metavar="SECONDS",
              help="Seconds between plain progress lines when stderr is not a terminal.")
@click.option("--resume", is_flag=True, help="Continue the run whose checkpoint is in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(data, images_root, mirror, out, resume, as_json, fields, stw_param, eval_splits, eval_queries, report_to,
          **options) -> None:
    """Train a GCL model on the in_domain pairs of a dataset.

    Writes checkpoint.pt periodically and, when done, model.pt (loads with plain
    open_clip.create_model_and_transforms(arch, pretrained=OUT/model.pt)), train.json and DONE.
    With --log-every / --eval-every, OUT/metrics.jsonl records the run as it goes (docs/training.md).
    """
    from gcl_eval.data.resolve import resolve_dataset
    from gcl_eval.retrieval.fields import FieldWeights
    from gcl_eval.retrieval.model_source import fetch_checkpoint, is_url
    from gcl_eval.util.distributed import is_main_process
    from trainers.loop import train as run_training

    if fields:
        options["doc_fields"] = FieldWeights.parse(fields)
    options["stw_params"] = _parse_stw_params(stw_param)
    options["report_to"] = tuple(t.strip() for item in report_to for t in item.split(",") if t.strip())
    config = TrainConfig(**options)
    folder = resolve_dataset(data, images="image" in config.doc_fields.active(), mirror=mirror)
    if is_url(config.pretrained):  # into the cache now, so that --mirror applies to it too
        fetch_checkpoint(config.pretrained, mirror=mirror)
    evaluate = None
    if images_root is not None or config.eval_every:
        from gcl_eval.data.io import read_dataset

        folder = read_dataset(folder, images_root=images_root)  # read once: training and evaluations share it
    if config.eval_every:
        from gcl_eval.experiments.training_eval import training_evaluation

        splits = [s.strip() for s in eval_splits.split(",") if s.strip()]
        evaluate = training_evaluation(folder, config, splits=splits, queries=eval_queries)
    result = run_training(config, folder, out, resume=resume, evaluate=evaluate)
    if not is_main_process():  # under torchrun, rank 0 reports
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    if result.already_finished:
        click.echo(f"{out} already holds this finished run ({result.steps} steps, final loss {result.final_loss:.4f})")
        return
    resumed = f", resumed at step {result.resumed_from_step}" if result.resumed_from_step is not None else ""
    click.echo(f"trained {config.model_name} ({config.loss} loss, {config.stw} weights, fields {config.doc_fields}) "
               f"for {result.epochs} epoch{'s' if result.epochs != 1 else ''}, {result.steps} steps{resumed}: final loss {result.final_loss:.4f}, "
               f"{result.samples_per_s:.0f} samples/s, {result.wall_s:.1f} s")
    click.echo(f"model: {out}/model.pt")
    if config.fusion == "learned":
        click.echo(f"field fusion: {out}/fusion.pt")
    if result.best is not None:
        click.echo(f"best: {out}/best/model.pt ({result.best['measure']} {result.best['value']:.4f} "
                   f"at step {result.best['step']})")
