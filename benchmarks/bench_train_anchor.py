"""gcl-eval's training loop against its anchor, open_clip_train's ``train_one_epoch``.

Same model (tiny-clip, random init, one copy of the weights for every variant), same synthetic
batches (random images and token ids, scores 1..100), same batch size, precision and torch threads:

- ``open_clip_train``: ``open_clip_train.train.train_one_epoch`` with open_clip's ``ClipLoss``, the
  AdamW and ``cosine_lr`` schedule its ``main`` builds (the peer);
- ``open_clip_train (again)``: the peer once more, an independent copy: its ratio to the peer is the
  noise floor of the measurement;
- ``open_clip_train, fused AdamW``: the peer with the fused AdamW kernel gcl-eval uses: the difference
  that is left is the loop's own;
- ``ours, constant``: gcl-eval's loop as ``trainers/loop.py`` runs an epoch (the preset's
  ``TrainConfig``, ``build_towers``, ``make_optimizer``, ``CosineSchedule``, ``Stepper``, ``move_to``,
  the epoch's loss sum) with constant weights: plain CLIP, the tiny-clip preset;
- ``ours, GCL inverse``: the same with the GCL inverse-weighted loss (the tiny-gcl preset).

Variants run interleaved: one epoch of ``--steps`` batches each per round, the order rotated every
round, so drift in a shared machine's speed hits all alike. Reported: samples/s, median and spread
(min-max) over the rounds, and the median of the per-round ratios. Targets: ours (constant) >= 0.95x
open_clip_train; the GCL loss costs < 3% over constant weights.

    python benchmarks/bench_train_anchor.py [--batch 128] [--steps 10] [--rounds 20] [--threads 2]
        [--precision fp32|bf16] [--out benchmarks/results/train_anchor.md]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gcl_eval.util.torchvision_guard import ensure_torchvision  # noqa: E402

ensure_torchvision()
import open_clip  # noqa: E402
import open_clip_train  # noqa: E402,F401
from open_clip_train.scheduler import cosine_lr  # noqa: E402
from open_clip_train.train import train_one_epoch  # noqa: E402

from gcl_eval.experiments.preset import load_preset  # noqa: E402
from trainers.data import move_to  # noqa: E402
from trainers.loop import seed_everything  # noqa: E402
from trainers.optim import CosineSchedule, make_optimizer  # noqa: E402
from trainers.step import Stepper  # noqa: E402
from trainers.towers import build_towers  # noqa: E402
from trainers.weights import score_to_weight  # noqa: E402

PEER_PRECISION = {"fp32": "fp32", "bf16": "amp_bf16"}


class _Batches:
    """A fixed list of batches, with the two attributes train_one_epoch reads from its dataloader. (Not
    open_clip_train.data.DataInfo: that module needs webdataset, which a training step never uses.)"""

    def __init__(self, batches: list, batch_size: int):
        self.batches = batches
        self.num_batches = len(batches)
        self.num_samples = len(batches) * batch_size

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return self.num_batches


class _DataInfo:
    """What train_one_epoch reads of ``data["train"]``: the dataloader and set_epoch."""

    def __init__(self, dataloader):
        self.dataloader = dataloader

    def set_epoch(self, epoch: int) -> None:
        pass


def _synthetic(image_shape, context: int, batch: int, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *image_shape, generator=g), torch.randint(1, 49407, (batch, context), generator=g),
             torch.randint(1, 101, (batch,), generator=g).double()) for _ in range(steps)]


def _ours(preset: str, args, device, data, total_steps: int):
    """An epoch function of gcl-eval's loop over ``data``, and its towers."""
    config = load_preset(preset).train_config({"device": str(device), "batch_size": args.batch,
                                               "precision": args.precision})
    seed_everything(config.seed)
    towers, _ = build_towers(config, device)
    towers.train()
    optimizer = make_optimizer(towers, config)
    schedule = CosineSchedule(config.lr, config.warmup, total_steps)
    stepper = Stepper(towers, config, optimizer, None)
    batches = [({"query": texts}, {"image": images}, score_to_weight(config.stw, scores, s_max=config.s_max).float(),
                None) for images, texts, scores in data]
    counter = {"epoch": 0}

    def epoch():
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for b, (query, doc, weights, masks) in enumerate(batches):
            schedule.apply(optimizer, counter["epoch"] * len(batches) + b)
            loss_sum += stepper(move_to(query, device), move_to(doc, device), weights.to(device), masks).double()
        counter["epoch"] += 1
        return loss_sum.item()

    return epoch, towers, config


def _peer(model, config, args, device, data, total_steps: int, fused: bool = False):
    """An epoch function of open_clip_train's train_one_epoch, set up as its main() does (``fused``: with
    torch's fused AdamW kernel, which gcl-eval's make_optimizer picks, instead of the default one)."""
    model = copy.deepcopy(model)
    model.output_dict = True  # as create_model_and_transforms(..., output_dict=True) in its main()
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
         {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": config.weight_decay}],
        lr=config.lr, betas=config.betas, eps=config.eps, fused=fused or None)
    scheduler = cosine_lr(optimizer, config.lr, config.warmup, total_steps)
    loader = _Batches([(images, texts) for images, texts, _ in data], args.batch)
    info = {"train": _DataInfo(loader)}
    peer_args = Namespace(device=str(device), precision=PEER_PRECISION[args.precision], distill=False, accum_freq=1,
                          skip_scheduler=False, horovod=False, grad_clip_norm=None, log_every_n_steps=100,
                          batch_size=args.batch, world_size=1, rank=0, local_rank=0, wandb=False,
                          save_logs=False)
    loss = open_clip.loss.ClipLoss(cache_labels=True)  # as open_clip_train's create_loss
    counter = {"epoch": 0}

    def epoch():
        train_one_epoch(model, info, loss, counter["epoch"], optimizer, None, scheduler, None, peer_args)
        counter["epoch"] += 1

    return epoch


def _interleaved(variants: dict, rounds: int, device) -> dict[str, list[float]]:
    names = list(variants)
    for name in names:  # warm-up epoch
        variants[name]()
    seconds = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            variants[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def _report(seconds: dict, args) -> str:
    samples = args.batch * args.steps
    rate = {name: [samples / s for s in times] for name, times in seconds.items()}

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(rate[a], rate[b]))

    lines = [f"Workload: tiny-clip (random init), batch {args.batch}, {args.steps} steps per epoch, {args.rounds} "
             f"interleaved rounds, {args.precision}, {args.threads} torch threads, synthetic tensors.",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
             f"Python {platform.python_version()}, torch {torch.__version__}, open_clip {open_clip.__version__}.",
             "", "| variant | samples/s (median) | spread (min-max) | vs open_clip_train |", "|---|---:|---:|---:|"]
    for name in rate:
        lines.append(f"| {name} | {statistics.median(rate[name]):.0f} | {min(rate[name]):.0f}-{max(rate[name]):.0f} "
                     f"| {ratio(name, 'open_clip_train'):.3f}x |")
    ours, peer = ratio("ours, constant", "open_clip_train"), ratio("ours, GCL inverse", "ours, constant")
    lines += ["", f"ours (constant) / open_clip_train: {ours:.3f}x (target >= 0.95x: {'met' if ours >= 0.95 else 'missed'}); "
              f"noise floor (peer again / peer): {ratio('open_clip_train (again)', 'open_clip_train'):.3f}x",
              f"ours (constant) / open_clip_train with fused AdamW (the loop alone): "
              f"{ratio('ours, constant', 'open_clip_train, fused AdamW'):.3f}x",
              f"GCL inverse / constant (ours): {peer:.3f}x, cost {100 * (1 / peer - 1):+.1f}% "
              f"(target < 3%: {'met' if 1 / peer - 1 < 0.03 else 'missed'})"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch (per round and variant)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=sorted(PEER_PRECISION), default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_anchor.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    total_steps = (args.rounds + 1) * args.steps
    probe = _ours("tiny-clip", args, device, [], total_steps)[1]  # the input shapes
    data = _synthetic(probe.image_shape, probe.model.context_length, args.batch, args.steps)
    constant, towers, config = _ours("tiny-clip", args, device, data, total_steps)
    inverse, _, _ = _ours("tiny-gcl", args, device, data, total_steps)
    variants = {"open_clip_train": _peer(towers.model, config, args, device, data, total_steps),
                "open_clip_train (again)": _peer(towers.model, config, args, device, data, total_steps),
                "open_clip_train, fused AdamW": _peer(towers.model, config, args, device, data, total_steps, True),
                "ours, constant": constant, "ours, GCL inverse": inverse}
    report = _report(_interleaved(variants, args.rounds, device), args)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# Training loop vs open_clip_train ({time.strftime('%Y-%m-%d')})\n\n{report}\n")


if __name__ == "__main__":
    main()
