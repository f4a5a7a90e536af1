"""Overhead of watching a run: `log_every=1` (a metrics.jsonl record every step: loss, gradient norm, logit
scale and weight statistics read off the device, a flushed line) against no log, on tiny-clip.

1. Whole epochs: runs alternate (no log, every step, every 10 steps; rotated each round) so that a shared
   machine's drift hits all alike; the step-loop seconds (TrainResult.train_s) as ratios to no log.
2. Single steps, interleaved in one process on the same batches: a plain step vs a measured step plus its
   record (Stepper(measure=True) and Monitor.step_done), so that load on a shared machine cancels out.

    python benchmarks/bench_train_monitor.py [--rounds 3] [--queries 60] [--out benchmarks/results/train_monitor.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gcl_eval.data.synth import SynthConfig  # noqa: E402
from gcl_eval.data.synth.build import write_synthetic  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.loop import _set_up, _training_data, train  # noqa: E402
from trainers.monitor import Monitor, StepDone  # noqa: E402

VARIANTS = {"no log": 0, "log every step": 1, "log every 10 steps": 10}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--steps", type=int, default=40, help="interleaved steps of each kind")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_synthetic(SynthConfig(queries=args.queries, docs_per_query=20, seed=0, image_size=32), data,
                        diagnostics=False)
        seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
        steps = 0
        for round_ in range(args.rounds):
            names = list(VARIANTS)
            names = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in names:
                config = TrainConfig(arch="tiny-clip", epochs=1, batch_size=32, num_workers=0, device="cpu",
                                     log_every=VARIANTS[name], progress_every=1e9)
                result = train(config, data, Path(tmp) / f"{name}-{round_}".replace(" ", "-"))
                seconds[name].append(result.train_s)
                steps = result.steps
            plain, measured = interleaved_steps(data, Path(tmp) / "steps", args.steps)
    text = "\n".join([*epoch_table(seconds, steps, args.rounds), "", *step_table(plain, measured)]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


def epoch_table(seconds: dict[str, list[float]], steps: int, rounds: int) -> list[str]:
    base_median, base_min = statistics.median(seconds["no log"]), min(seconds["no log"])
    lines = [f"Whole epochs: tiny-clip, {steps} steps at batch 32, CPU, 1 torch thread "
             f"({platform.machine()}), {rounds} rounds", "",
             "| variant | median s | ratio | fastest s | ratio |", "|---|---:|---:|---:|---:|"]
    for name, values in seconds.items():
        median, fastest = statistics.median(values), min(values)
        lines.append(f"| {name} | {median:.2f} | {median / base_median:.3f} | {fastest:.2f} | {fastest / base_min:.3f} |")
    return lines


def interleaved_steps(data: Path, out: Path, n: int) -> tuple[list[float], list[float]]:
    """Seconds of ``n`` plain and ``n`` measured-and-recorded steps, alternating, on the loop's batches."""
    config = TrainConfig(arch="tiny-clip", epochs=50, batch_size=32, num_workers=0, device="cpu", log_every=1,
                         progress_every=1e9)
    run, _ = _set_up(config, _training_data(config, data, torch.device("cpu")), out, torch.device("cpu"), None)
    monitor = Monitor(config, out, 0, towers=run.towers, evaluate=None, live_model=None, export=None, main=True)
    batches = [b for _, b in zip(range(4), run.loader)]
    plain, measured = [], []
    for i in range(2 * n):
        q, d, w, m = batches[i % len(batches)]
        record = i % 2 == 1
        started = time.perf_counter()
        loss = run.stepper(q, d, w, m, measure=record)
        if record:
            monitor.step_done(StepDone(i + 1, 1, False, loss, loss.double(), 1, 1e-4, w, run.stepper.grad_norm))
        else:
            loss.item()  # the plain loop reads the loss too (progress, epoch end)
        (measured if record else plain).append(time.perf_counter() - started)
    monitor.close()
    return plain, measured


def step_table(plain: list[float], measured: list[float]) -> list[str]:
    p, m = statistics.median(plain), statistics.median(measured)
    return [f"Single steps, interleaved ({len(plain)} of each, batch 32)", "",
            "| step | median ms | ratio |", "|---|---:|---:|",
            f"| plain | {1000 * p:.1f} | 1.000 |", f"| measured + recorded | {1000 * m:.1f} | {m / p:.3f} |"]


if __name__ == "__main__":
    main()
