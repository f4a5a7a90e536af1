"""gcl-eval on one GPU: training and encoding speed, the largest batch, exact search. One table.

Measured (random weights, synthetic tensors: nothing is downloaded):

- training samples/s of ViT-B-32 and ViT-L-14 in bf16 at batch 256 and 1024, with and without the
  gradient cache: the paper's multi-field GCL recipe (the vitb32-gcl / vitl14-gcl presets: a query
  text, a title and an image per pair, inverse weights), one optimizer step as the training loop runs
  it (trainers.step.Stepper: towers, GCL loss, backward, AdamW);
- the largest batch that trains with the gradient cache (ViT-B-32; the target is 16,384), found by
  doubling until a step runs out of memory, a step takes too long or the search's time cap is spent;
- image encoding, images/s (no grad, bf16 autocast, the model's encode_image);
- exact search of 2,000 queries over 1,000,000 x 768 float32 documents on the GPU
  (gcl_eval.retrieval.topk.search, top 100, the host-to-device copy of the corpus included).

Each measurement is time-boxed (``--seconds`` of timed calls after one warm-up call, at least two
calls; one with --smoke), the GPU is synchronised around every timed call, and the whole script stops starting new
measurements once ``--budget`` seconds are spent (the rest print as "skipped (time)"). A step that runs
out of GPU memory prints as "OOM". Rows print as they are measured, then the table once more.

``--smoke`` runs every code path on the CPU with tiny sizes (the tiny-gcl-multi preset, batch 8 and
16, a 20 x 2,000 x 64 search) in well under a minute: tests/test_bench_gpu.py runs it, so the script
is known to work before anyone spends GPU time. benchmarks/bench_gpu.sh runs it on a GPU machine.

    python benchmarks/bench_gpu.py [--smoke] [--device cuda] [--budget 450] [--seconds 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gcl_eval.util.torchvision_guard import ensure_torchvision  # noqa: E402

ensure_torchvision()

from gcl_eval.experiments.preset import load_preset  # noqa: E402
from gcl_eval.retrieval.topk import search  # noqa: E402
from trainers.loop import seed_everything  # noqa: E402
from trainers.optim import make_optimizer  # noqa: E402
from trainers.step import Stepper  # noqa: E402
from trainers.towers import build_towers  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    models: dict  # label -> (preset, gradient-cache chunk)
    batches: tuple
    largest_model: str
    largest_from: int
    largest_to: int
    largest_cap_s: float
    encode_batch: int
    search_shape: tuple  # (queries, documents, dimension)
    top_k: int = 100


FULL = Sizes(models={"ViT-B-32": ("vitb32-gcl", 256), "ViT-L-14": ("vitl14-gcl", 128)}, batches=(256, 1024),
             largest_model="ViT-B-32", largest_from=2048, largest_to=32768, largest_cap_s=120.0,
             encode_batch=1024, search_shape=(2000, 1_000_000, 768))
SMOKE = Sizes(models={"tiny-clip": ("tiny-gcl-multi", 4)}, batches=(8, 16), largest_model="tiny-clip",
              largest_from=16, largest_to=32, largest_cap_s=120.0, encode_batch=16, search_shape=(20, 2000, 64))


@dataclass
class Bench:
    device: torch.device
    seconds: float
    deadline: float
    min_calls: int = 2
    rows: list = field(default_factory=list)

    def add(self, what: str, value: str, note: str = "") -> None:
        self.rows.append((what, value, note))
        print(f"{what:<58} {value:>16}  {note}", flush=True)

    def out_of_time(self) -> bool:
        return time.perf_counter() > self.deadline

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn, *, max_calls: int = 50) -> float:
        """Median seconds per call of ``fn``: one untimed warm-up call, then timed calls until
        ``self.seconds`` are spent (at least ``self.min_calls``)."""
        fn()
        self.sync()
        times, start = [], time.perf_counter()
        while len(times) < self.min_calls or (time.perf_counter() - start < self.seconds and len(times) < max_calls):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _setup(preset: str, chunk: int, device: torch.device):
    """Towers (random init, bf16 autocast), one AdamW, and two steppers over them: plain and gradient cache."""
    overrides = {"device": str(device), "pretrained": None, "precision": "bf16"}
    preset = load_preset(preset)
    plain = preset.train_config({**overrides, "grad_cache_chunk": None})
    cached = preset.train_config({**overrides, "grad_cache_chunk": chunk})
    seed_everything(0)
    towers, _ = build_towers(plain, device)
    towers.train()
    optimizer = make_optimizer(towers, plain)
    return towers, Stepper(towers, plain, optimizer, None), Stepper(towers, cached, optimizer, None)


def _batch(towers, n: int, device: torch.device):
    """One synthetic training batch on ``device``: token ids, images, weights, field masks."""
    context = towers.model.context_length
    tokens = lambda: torch.randint(1, 49407, (n, context), device=device)  # noqa: E731
    doc = {f: torch.randn(n, *towers.image_shape, device=device) if f == "image" else tokens()
           for f in towers.doc_fields}
    weights = 1.0 / torch.randint(1, 101, (n,), device=device).float()
    masks = torch.ones(n, len(towers.doc_fields), dtype=torch.bool, device=device) if towers.multi_field else None
    return {"query": tokens()}, doc, weights, masks


def _train_rate(bench: Bench, stepper, towers, n: int) -> str:
    try:
        batch = _batch(towers, n, bench.device)
        return f"{n / bench.timed(lambda: stepper(*batch)):,.0f}"
    except torch.OutOfMemoryError:
        return "OOM"
    finally:
        batch = None
        _free(bench.device)


def _largest_batch(bench: Bench, stepper, towers, sizes: Sizes) -> tuple[str, str]:
    """Double the batch from ``largest_from`` while one gradient-cache step fits and the cap allows."""
    best, n, started, why = None, sizes.largest_from, time.perf_counter(), "reached the search's upper end"
    while n <= sizes.largest_to:
        if time.perf_counter() - started > sizes.largest_cap_s or bench.out_of_time():
            why = "time cap"
            break
        try:
            batch = _batch(towers, n, bench.device)
            t0 = time.perf_counter()
            stepper(*batch)
            bench.sync()
            step_s = time.perf_counter() - t0
        except torch.OutOfMemoryError:
            why = f"{n:,} OOM"
            break
        finally:
            batch = None
            _free(bench.device)
        best, n = n, n * 2
        if step_s * 2 > sizes.largest_cap_s - (time.perf_counter() - started):
            why = f"next step would pass the {sizes.largest_cap_s:.0f} s cap (last {step_s:.1f} s)"
            break
    value = f"{best:,}" if best else f"< {sizes.largest_from:,}"
    return value, why


def _encode_rate(bench: Bench, towers, n: int) -> str:
    try:
        images = torch.randn(n, *towers.image_shape, device=bench.device)

        def encode():
            with torch.no_grad(), towers.autocast():
                towers.model.encode_image(images, normalize=True)

        return f"{n / bench.timed(encode):,.0f}"
    except torch.OutOfMemoryError:
        return "OOM"
    finally:
        images = None
        _free(bench.device)


def _measure_model(bench: Bench, label: str, sizes: Sizes) -> None:
    preset, chunk = sizes.models[label]
    towers, plain, cached = _setup(preset, chunk, bench.device)
    for n in sizes.batches:
        for stepper, how in ((plain, "plain"), (cached, f"gradient cache, chunk {chunk}")):
            what = f"{label} train bf16, batch {n:,}, {how}"
            bench.add(what, "skipped (time)" if bench.out_of_time() else _train_rate(bench, stepper, towers, n),
                      "samples/s")
    if label == sizes.largest_model:
        what = f"{label} largest batch, gradient cache (target 16,384)"
        value, why = ("skipped (time)", "") if bench.out_of_time() else _largest_batch(bench, cached, towers, sizes)
        bench.add(what, value, f"stopped: {why}" if why else "")
    what = f"{label} image encoding bf16, batch {sizes.encode_batch:,}"
    bench.add(what, "skipped (time)" if bench.out_of_time() else _encode_rate(bench, towers, sizes.encode_batch),
              "images/s")
    del towers, plain, cached
    _free(bench.device)


def _measure_search(bench: Bench, sizes: Sizes) -> None:
    q, n, d = sizes.search_shape
    what = f"exact search {q:,} queries x {n:,} x {d} float32, top {sizes.top_k}"
    if bench.out_of_time():
        bench.add(what, "skipped (time)")
        return
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((q, d), dtype=np.float32)
    corpus = rng.standard_normal((n, d), dtype=np.float32)
    device = None if bench.device.type == "cpu" else str(bench.device)
    seconds = bench.timed(lambda: search(queries, corpus, sizes.top_k, backend="torch", device=device),
                          max_calls=5)
    bench.add(what, f"{seconds:.3f} s", f"{q / seconds:,.0f} queries/s, corpus copied to the device each call")


def _environment(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    return (f"{name}; torch {torch.__version__}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every code path on the CPU with tiny sizes")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds after which no measurement starts")
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per measurement")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; use --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.smoke:
        torch.set_num_threads(1)  # a shared CPU: several threads spin-waiting on each other can make a step 100x slower
    seconds = args.seconds if args.seconds is not None else (0.2 if args.smoke else 10.0)
    bench = Bench(device, seconds, time.perf_counter() + args.budget, min_calls=1 if args.smoke else 2)
    print(f"# bench_gpu: {_environment(device)}{' (smoke)' if args.smoke else ''}", flush=True)
    for label in sizes.models:
        _measure_model(bench, label, sizes)
    _measure_search(bench, sizes)
    table = _table(bench, device, args.smoke)
    print("\n" + table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


def _table(bench: Bench, device: torch.device, smoke: bool) -> str:
    lines = [f"Machine: {_environment(device)}{' (smoke run: tiny sizes on the CPU)' if smoke else ''}", "",
             "| measurement | value | unit / note |", "|---|---:|---|"]
    lines += [f"| {what} | {value} | {note} |" for what, value, note in bench.rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
