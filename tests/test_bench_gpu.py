"""benchmarks/bench_gpu.py --smoke: every code path of the GPU benchmark, on the CPU with tiny sizes,
so that the script is known to work before anyone spends GPU time on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_run_prints_every_row(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| tiny-clip") or line.startswith("| exact")]
    assert len(rows) == 7, table  # 2 batches x (plain, gradient cache), largest batch, encoding, search
    for row in rows:
        value = row.split("|")[2].strip()
        assert value not in ("OOM", "skipped (time)", "") and value[0].isdigit(), row
    assert "| tiny-clip largest batch, gradient cache (target 16,384) | 32 |" in table or "cap" in table


def test_without_a_gpu_the_full_run_says_so_in_one_line():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["bench_gpu: no CUDA device here; use --smoke to check the script on the CPU"]
