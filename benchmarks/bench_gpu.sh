#!/usr/bin/env bash
# Run benchmarks/bench_gpu.py on one GPU (H100/H200: under 8 minutes) and print its table.
#
#   benchmarks/bench_gpu.sh [bench_gpu.py options]     e.g. --out benchmarks/results/gpu.md
#
# What the GPU machine needs: a Python with a CUDA build of torch and torchvision, and gcl-eval's
# other dependencies. The script runs from this checkout (PYTHONPATH=the repository root), so
# gcl-eval itself need not be installed there.
#
# Carrying them to a machine that cannot reach a package index (a CUDA torch wheel is ~1 GB, so
# use the machine's own torch when it has one and carry only what it lacks, as wheels):
#
#   1. here, in the repository root, once:
#        echo /.whl/ >> .git/info/exclude
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#            --implementation cp --platform manylinux2014_x86_64 -d .whl \
#            open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
#      (open_clip_torch and its tokenizer's ftfy are what a machine with torch, timm and
#      huggingface_hub usually lacks; name any other missing package the same way, one version each;
#      match --python-version to the machine's python3);
#   2. copy the checkout with .whl to the machine (or carry .whl with the device tool);
#   3. there: benchmarks/bench_gpu.sh --out benchmarks/results/gpu.md
#      This script installs .whl/*.whl into /tmp/gcl-eval-site (no index, no dependencies) when the
#      folder is there, then runs the benchmark.
#
# Check the script before spending GPU time: python benchmarks/bench_gpu.py --smoke (CPU, < 1 min;
# tests/test_bench_gpu.py runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gcl-eval-site .whl/*.whl
    export PYTHONPATH="/tmp/gcl-eval-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout 480 "$PYTHON" benchmarks/bench_gpu.py "$@"
