"""Shared by the training tests: small synthetic datasets and model comparisons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import write_synthetic


def make_dataset(folder: Path, *, queries: int = 20, docs_per_query: int = 20, images: bool = True,
                 seed: int = 0) -> Path:
    """A synthetic dataset folder in the Marqo-GS layout (32 px images)."""
    write_synthetic(SynthConfig(queries=queries, docs_per_query=docs_per_query, seed=seed, image_size=32,
                                images=images), folder, diagnostics=False)
    return folder


def assert_same_tensors(a: dict, b: dict) -> None:
    """Same keys and torch.equal on every tensor (bit for bit)."""
    assert sorted(a) == sorted(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Importing this into a test module runs the module with one torch compute thread. torch's threads spin-wait for each other: on a 2-core
    machine shared with other busy processes two threads ran a tiny-clip step up to 10x slower than one
    (measured). Nothing these tests check depends on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
