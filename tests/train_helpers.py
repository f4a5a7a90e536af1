"""Shared by the training tests: small synthetic datasets and model comparisons."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from gcl_eval.data.synth import SynthConfig
from gcl_eval.data.synth.build import write_synthetic


def make_dataset(folder: Path, *, queries: int = 20, docs_per_query: int = 20, images: bool = True,
                 seed: int = 0) -> Path:
    """A synthetic dataset folder in the Marqo-GS layout (32 px images)."""
    write_synthetic(SynthConfig(queries=queries, docs_per_query=docs_per_query, seed=seed, image_size=32,
                                images=images), folder, diagnostics=False)
    return folder


_KILL_AFTER_STEP = """
import os, signal
from trainers.step import Stepper

_step, _taken = Stepper.__call__, [0]

def _step_or_die(self, *args, **kwargs):
    if _taken[0] == {kill_after}:  # that step and any checkpoint it wrote are done: die as the next begins
        os.kill(os.getpid(), signal.SIGKILL)
    _taken[0] += 1
    return _step(self, *args, **kwargs)

Stepper.__call__ = _step_or_die
"""

# Python code that runs `gcl-eval` with the arguments that follow it on the command line.
GCL_EVAL_CLI = "import runpy; runpy.run_module('gcl_eval', run_name='__main__')"


def killed_after_step(kill_after: int, code: str) -> list[str]:
    """A command line that runs Python ``code`` in a process which SIGKILLs itself right after its
    ``kill_after``-th optimizer step (and the checkpoint that step may write), as the next step begins.

    The kill is set up inside the child by wrapping ``Stepper.__call__`` before ``code`` runs: the training
    code knows nothing of it, the point where the run dies is deterministic, and it is a real SIGKILL
    (no handler, no clean-up). Counts the steps of this process, so meant for runs that start fresh.
    """
    return [sys.executable, "-c", _KILL_AFTER_STEP.format(kill_after=int(kill_after)) + code]


def assert_same_tensors(a: dict, b: dict) -> None:
    """Same keys and torch.equal on every tensor (bit for bit)."""
    assert sorted(a) == sorted(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"

