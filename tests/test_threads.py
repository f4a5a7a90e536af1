"""The CPU thread budget: torch gets the cores the data-loading workers leave free."""

import os

import torch

from gcl_eval.util.threads import budget_cpu_threads, default_workers


def test_torch_gets_the_cores_the_workers_leave(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        assert default_workers() == 4
        assert budget_cpu_threads(3) == 5 and torch.get_num_threads() == 5
        assert budget_cpu_threads(8) == 1  # never fewer than one
        monkeypatch.setenv("GCL_EVAL_TORCH_THREADS", "2")
        assert budget_cpu_threads(1) == 2
        assert budget_cpu_threads(1, "cuda") == torch.get_num_threads()  # left alone on a GPU
    finally:
        torch.set_num_threads(before)
