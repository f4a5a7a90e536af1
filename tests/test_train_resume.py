"""A run killed with a real SIGKILL mid-epoch and resumed with --resume ends with exactly the weights of an
uninterrupted run (CPU, fixed seed): torch.equal on every tensor.

The kill is deterministic: the child process wraps the step function before it runs the CLI and SIGKILLs
itself right after step k (train_helpers.killed_after_step; the training code has no hook for it).
Checkpoints are written every 3 steps and at epoch ends; k lies in the middle of epoch 2 and is not a
checkpoint step, so the resumed run restarts from the last checkpoint before k, mid-epoch, redoes
the lost steps, and must land on the same bits (with a DataLoader worker process, as by default).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gcl_eval.data.io import read_dataset
from gcl_eval.util.errors import GclError
from trainers import checkpoint as ckpt
from gcl_eval.retrieval.fields import FieldWeights
from trainers.config import TrainConfig
from trainers.loop import train
from train_helpers import GCL_EVAL_CLI, assert_same_tensors, killed_after_step, make_dataset

ROOT = Path(__file__).resolve().parents[1]
# What the command line below trains (for the in-process checks).
CONFIG = TrainConfig(arch="tiny-clip", epochs=2, batch_size=16, checkpoint_every=3, num_workers=1, device="cpu",
                     seed=7, warmup=4, stw="inverse", doc_fields=FieldWeights.of(image=0.5, title=0.5))


def _train(data: Path, out: Path, *extra: str, kill_after: int | None = None) -> subprocess.CompletedProcess:
    child = _start(data, out, *extra, kill_after=kill_after)
    stdout, stderr = child.communicate(timeout=300)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _start(data: Path, out: Path, *extra: str, kill_after: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = ["--arch", "tiny-clip", "--data", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "16",
            "--checkpoint-every", "3", "--workers", "1", "--device", "cpu", "--seed", "7", "--warmup", "4",
            "--stw", "inverse", "--fields", "image=0.5,title=0.5", *extra]
    command = [sys.executable, "-m", "gcl_eval"] if kill_after is None else killed_after_step(kill_after, GCL_EVAL_CLI)
    return subprocess.Popen([*command, "train", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    data = make_dataset(tmp_path / "data")  # ~170 in_domain pairs: ~10 batches of 16 per epoch
    per_epoch = len(read_dataset(data).pairs["in_domain"]) // 16
    kill_after = per_epoch + 2 if (per_epoch + 2) % 3 else per_epoch + 4  # mid epoch 2, not a checkpoint step
    last_checkpoint = max(per_epoch, kill_after - kill_after % 3)

    whole_run = _start(data, tmp_path / "whole")  # the uninterrupted run, side by side with the killed one
    killed = _train(data, tmp_path / "resumed", kill_after=kill_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    _, whole_err = whole_run.communicate(timeout=300)
    assert whole_run.returncode == 0, whole_err[-2000:]
    assert not ckpt.is_finished(tmp_path / "resumed")
    position = ckpt.read_checkpoint(tmp_path / "resumed")["position"]
    assert (position["step"], position["epoch"], position["batch"]) == (
        last_checkpoint, 1, last_checkpoint - per_epoch)
    with pytest.raises(GclError, match="no finished training run"):
        ckpt.load_trained(tmp_path / "resumed")  # an evaluation must not take a killed run's weights
    with pytest.raises(GclError, match="pass --resume"):
        train(CONFIG, data, tmp_path / "resumed")  # without --resume: refused

    resumed = _train(data, tmp_path / "resumed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed at step {last_checkpoint}" in resumed.stdout

    a = torch.load(tmp_path / "whole" / "model.pt")
    b = torch.load(tmp_path / "resumed" / "model.pt")
    assert_same_tensors(a, b)
    end_a = ckpt.read_checkpoint(tmp_path / "whole")
    end_b = ckpt.read_checkpoint(tmp_path / "resumed")
    assert_same_tensors(end_a["model"], end_b["model"])
    for sa, sb in zip(end_a["optimizer"]["state"].values(), end_b["optimizer"]["state"].values()):
        assert_same_tensors(sa, sb)  # AdamW moments and step counts too
    info_a = json.loads((tmp_path / "whole" / "train.json").read_text())
    info_b = json.loads((tmp_path / "resumed" / "train.json").read_text())
    assert info_b["result"]["history"] == info_a["result"]["history"]  # the logged losses as well
    assert info_b["result"]["steps"] == info_a["result"]["steps"] == 2 * per_epoch

    finished = train(CONFIG, data, tmp_path / "resumed", resume=True)  # a finished run: nothing to do
    assert finished.already_finished and finished.steps == 2 * per_epoch
    assert finished.final_loss == info_a["result"]["final_loss"]
