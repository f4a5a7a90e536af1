"""Watching a training run: metrics.jsonl (content, flushing, resume without duplicates), evaluations during
training and the best export, epoch snapshots (plain open_clip and `gcl-eval eval --checkpoint`), reporters,
plain progress lines, and that none of it changes the trained weights or the checkpoint cache key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from gcl_eval.experiments.checkpoints import checkpoint_dir
from gcl_eval.experiments.preset import load_preset
from gcl_eval.retrieval.models import open_clip_module
from gcl_eval.util.errors import GclError
from trainers import checkpoint as ckpt
from trainers.config import TrainConfig
from trainers.loop import train
from trainers.monitor import read_metrics
from train_helpers import assert_same_tensors, make_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = dict(arch="tiny-clip", epochs=2, batch_size=16, num_workers=0, device="cpu", warmup=2, seed=3)
TIMING = ("time", "samples_per_s", "eval_s")  # the fields of a record that depend on the clock


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("monitor") / "tiny")


@pytest.fixture(scope="module")
def plain(data, tmp_path_factory):
    """The same recipe without any watching: the weights every watched run must end with."""
    out = tmp_path_factory.mktemp("plain") / "run"
    result = train(TrainConfig(**BASE), data, out)
    return out, result


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{**BASE, **kw})


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


class FakeEvaluation:
    """A deterministic evaluation by step that also disturbs what the training must not feel (RNGs,
    threads, eval mode) and reads metrics.jsonl while the run goes on."""

    SCORES = {5: 0.30, 10: 0.90, 15: 0.50, 20: 0.10}

    def __init__(self, out: Path, fail_at: int | None = None):
        self.out, self.fail_at, self.calls, self.seen = out, fail_at, [], []

    def __call__(self, model, step: int, epoch: int):
        if step == self.fail_at:
            raise RuntimeError("killed")
        self.calls.append((step, epoch))
        self.seen.append([r["step"] for r in read_metrics(self.out)])  # what was flushed so far
        torch.rand(7)
        torch.set_num_threads(2)
        model.model.model.eval()  # the live open_clip model
        score = self.SCORES.get(step, 0.0)
        return {"in_domain": {"nDCG@10": score, "ERR": score / 2}, "novel_corpus": {"nDCG@10": 1 - score}}


# ------------------------------------------------------------------------------------------ records, best, snapshots


@pytest.fixture(scope="module")
def watched(data, plain, tmp_path_factory):
    out = tmp_path_factory.mktemp("watched") / "run"
    evaluation = FakeEvaluation(out)
    config = _config(log_every=1, eval_every=5, keep_best="nDCG@10:in_domain", save_every_epoch=True,
                     progress_every=0)
    result = train(config, data, out, evaluate=evaluation)
    return out, result, evaluation


def test_watching_does_not_change_the_weights(plain, watched):
    assert_same_tensors(torch.load(plain[0] / "model.pt"), torch.load(watched[0] / "model.pt"))
    assert watched[1].history == plain[1].history


def test_every_step_is_logged_once_with_its_fields(watched):
    out, result, _ = watched
    records = read_metrics(out)
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, result.steps + 1))
    per_epoch = result.steps // 2
    for r in train_records:
        assert r["epoch"] == 1 + (r["step"] - 1) // per_epoch
        assert r["weight_min"] <= r["weight_mean"] <= r["weight_max"] and r["weight_min"] > 0
        assert r["grad_norm"] > 0 and 0 < r["logit_scale"] <= 100 and r["samples_per_s"] > 0
        assert all(isinstance(r[k], float) for k in ("loss", "epoch_loss", "lr"))
    last_of_epoch = [r for r in train_records if r["step"] % per_epoch == 0]
    assert [r["epoch_loss"] for r in last_of_epoch] == pytest.approx([h["loss"] for h in result.history])


def test_records_are_flushed_as_they_are_written(watched):
    _, _, evaluation = watched
    for (step, _), seen in zip(evaluation.calls, evaluation.seen):
        assert seen[-1] == step and seen == sorted(seen)  # the step's record was on disk when it evaluated


def test_evaluations_run_every_n_steps_and_at_epoch_ends(watched):
    out, result, evaluation = watched
    per_epoch = result.steps // 2
    expected = sorted({s for s in range(5, result.steps + 1, 5)} | {per_epoch, 2 * per_epoch})
    assert [s for s, _ in evaluation.calls] == expected
    evals = [r for r in read_metrics(out) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == expected
    assert evals[0]["splits"]["in_domain"]["nDCG@10"] == FakeEvaluation.SCORES.get(expected[0], 0.0)


def test_keep_best_exports_the_best_evaluated_weights(watched):
    out, result, _ = watched
    per_epoch = result.steps // 2
    assert per_epoch == 10  # the fake scores make step 10, the end of epoch 1, the best
    assert result.best == {"measure": "nDCG@10:in_domain", "value": 0.9, "step": 10, "folder": "best"}
    assert_same_tensors(torch.load(out / "best" / "model.pt"), torch.load(out / "epoch-1" / "model.pt"))
    info = ckpt.read_train_info(out / "best")
    assert info["snapshot"]["step"] == 10 and info["snapshot"]["evaluation"]["in_domain"]["nDCG@10"] == 0.9
    assert json.loads((out / "train.json").read_text())["result"]["best"]["step"] == 10


def test_epoch_snapshots_load_in_plain_open_clip(watched):
    out, result, _ = watched
    assert sorted(p.name for p in out.glob("epoch-*")) == ["epoch-1", "epoch-2"]
    assert_same_tensors(torch.load(out / "epoch-2" / "model.pt"), torch.load(out / "model.pt"))
    open_clip = open_clip_module()
    model, _, _ = open_clip.create_model_and_transforms("tiny-clip", pretrained=str(out / "epoch-1" / "model.pt"))
    assert_same_tensors(model.state_dict(), torch.load(out / "epoch-1" / "model.pt"))
    assert ckpt.load_trained(out / "epoch-1").info["snapshot"]["epoch"] == 1


# ------------------------------------------------------------------------------------------ resume


def test_a_resumed_run_appends_without_duplicates(data, watched, tmp_path):
    out = tmp_path / "run"
    config = _config(log_every=1, eval_every=5, keep_best="nDCG@10:in_domain", checkpoint_every=3,
                     save_every_epoch=True, progress_every=0)
    with pytest.raises(RuntimeError, match="killed"):
        train(config, data, out, evaluate=FakeEvaluation(out, fail_at=15))  # dies after step 15's record
    assert ckpt.read_checkpoint(out)["position"]["step"] == 12
    assert max(r["step"] for r in read_metrics(out)) == 15
    resumed = train(config, data, out, resume=True, evaluate=FakeEvaluation(out))
    assert resumed.resumed_from_step == 12
    assert _without_timing(read_metrics(out)) == _without_timing(read_metrics(watched[0]))
    assert resumed.best == watched[1].best  # the best before the checkpoint is remembered from the log
    assert_same_tensors(torch.load(out / "best" / "model.pt"), torch.load(watched[0] / "best" / "model.pt"))


# ------------------------------------------------------------------------------------------ the command line


FAST = ["--arch", "tiny-clip", "--epochs", "1", "--batch-size", "16", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def evaluated(data, tmp_path_factory, gcl):
    """A real tiny evaluation during training: every 4 steps on 20 sampled in_domain queries."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = gcl("train", *FAST, "--data", data, "--out", out, "--eval-every", "4", "--eval-queries", "20",
                 "--keep-best", "nDCG@10:in_domain", "--log-every", "1", "--progress-every", "0",
                 "--save-every-epoch")
    assert result.code == 0, result.err
    return out, result


def test_a_real_evaluation_during_training_equals_gcl_eval_of_the_export(evaluated, data, tmp_path, gcl):
    out, _ = evaluated
    evals = [r for r in read_metrics(out) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8, 10]  # 10 steps in the epoch
    best = max(evals, key=lambda r: r["splits"]["in_domain"]["nDCG@10"])
    assert ckpt.read_train_info(out / "best")["snapshot"]["step"] == best["step"]
    run = gcl("eval", "--arch", "tiny-clip", "--checkpoint", out / "best", "--data", data, "--out", tmp_path / "ev",
              "--queries", "20", "--split", "in_domain", "--fields", "image=0.5,title=0.5", "--workers", "0",
              "--device", "cpu", "--json")
    assert run.code == 0, run.err
    metrics = run.json()["splits"]["in_domain"]["metrics"]
    for measure, value in best["splits"]["in_domain"].items():
        assert metrics[measure] == pytest.approx(value, abs=1e-12), measure


def test_an_epoch_snapshot_evaluates_with_gcl_eval_checkpoint(evaluated, data, tmp_path, gcl):
    out, _ = evaluated
    run = gcl("eval", "--arch", "tiny-clip", "--checkpoint", out / "epoch-1", "--data", data, "--out", tmp_path / "ev",
              "--queries", "20", "--split", "in_domain", "--workers", "0", "--device", "cpu", "--json")
    assert run.code == 0, run.err
    assert run.json()["model"]["checkpoint_sha256"] == ckpt.read_train_info(out / "epoch-1")["model_sha256"]


def test_progress_lines_without_a_terminal_have_no_escape_codes(evaluated):
    _, result = evaluated
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 10 and "\x1b" not in result.err and "\r" not in result.err
    pattern = r"train step (\d+)/10 \(\d+%\) epoch 1, loss \d+\.\d{4}, \d+ samples/s, ETA \d+:\d\d:\d\d"
    assert [int(re.fullmatch(pattern, line).group(1)) for line in lines] == list(range(1, 11))
    assert "best: " in result.out


def test_an_absent_reporter_is_skipped_with_one_warning_line(data, tmp_path, gcl, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.setenv("GCL_EVAL_PROGRESS", "0")  # no progress lines: only the warning is left on stderr
    result = gcl("train", *FAST, "--max-steps", "2", "--data", data, "--out", tmp_path / "r", "--log-every", "1",
                 "--report-to", "wandb", "--progress-every", "1000")
    assert result.code == 0, result.err
    assert result.error_lines == ["gcl-eval: warning: --report-to wandb: the wandb package is not installed "
                                  "(pip install 'gcl-eval[wandb]'); not reporting there"]
    assert len(read_metrics(tmp_path / "r")) == 2


def test_tensorboard_event_files_hold_the_logged_scalars(data, tmp_path, gcl):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    result = gcl("train", *FAST, "--max-steps", "3", "--data", data, "--out", out, "--log-every", "1",
                 "--report-to", "tensorboard", "--progress-every", "1000")
    assert result.code == 0, result.err
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    logged = [(r["step"], r["loss"]) for r in read_metrics(out)]
    assert [s for s, _ in losses] == [1, 2, 3]
    assert [v for _, v in losses] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert {"train/lr", "train/grad_norm", "train/logit_scale", "train/weight_mean"} <= set(events.Tags()["scalars"])


@pytest.mark.slow
def test_wandb_writes_an_offline_run(data, tmp_path, gcl, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "r"
    result = gcl("train", *FAST, "--max-steps", "2", "--data", data, "--out", out, "--log-every", "1",
                 "--report-to", "wandb", "--progress-every", "1000", "--json")
    assert result.code == 0, result.err
    assert result.json()["steps"] == 2  # stdout is still only the JSON
    runs = [p for p in (out / "wandb").glob("offline-run-*/run-*.wandb") if p.stat().st_size > 0]
    assert len(runs) == 1


@pytest.mark.parametrize("args, message", [
    (["--keep-best", "nDCG@10"], "--keep-best needs --eval-every"),
    (["--eval-every", "2", "--keep-best", "nDCG@10:zero_shot"], "split zero_shot is not evaluated"),
    (["--eval-every", "2", "--keep-best", "nDCG@"], "nDCG@"),
    (["--eval-every", "2", "--eval-splits", "nowhere"], "nowhere"),
    (["--report-to", "mlflow"], "unknown report target 'mlflow'"),
    (["--log-every", "-1"], "log_every must be an integer >= 0"),
    (["--progress-every", "-1"], "progress interval"),
])
def test_bad_watch_options_fail_with_one_line(data, tmp_path, gcl, args, message):
    result = gcl("train", *FAST, "--data", data, "--out", tmp_path / "r", *args)
    assert result.code == 2 and len(result.error_lines) == 1, result.err
    assert message in result.err and not (tmp_path / "r").exists()


def test_eval_every_without_an_evaluation_is_refused(data, tmp_path):
    with pytest.raises(GclError, match="--eval-every needs an evaluation"):
        train(_config(eval_every=2), data, tmp_path / "r")


def test_watch_options_do_not_change_the_recipe_and_only_a_learning_curve_changes_the_cache_key():
    preset = load_preset("tiny-gcl")
    plain = preset.train_config({"device": "cpu"})
    watched = preset.train_config({"device": "cpu", "log_every": 1, "eval_every": 5, "keep_best": "ERR",
                                   "save_every_epoch": True, "report_to": ("tensorboard",), "progress_every": 0})
    assert watched.recipe() == plain.recipe() and set(watched.recipe()) == set(plain.recipe())
    assert TrainConfig.from_dict(watched.to_dict()) == watched
    logged = preset.train_config({"device": "cpu", "log_every": 1, "save_every_epoch": True,
                                  "report_to": ("tensorboard",), "progress_every": 0})
    assert checkpoint_dir(preset, logged, "fp") == checkpoint_dir(preset, plain, "fp")
    # a learning curve lives in the checkpoint folder: a run that records one gets a folder of its own
    assert checkpoint_dir(preset, watched, "fp") != checkpoint_dir(preset, plain, "fp")


def test_gcl_eval_run_passes_the_log_through_to_its_checkpoint_folder(data, tmp_path, gcl):
    result = gcl("run", "--model", "tiny-gcl", "--data", data, "--out", tmp_path / "run", "--max-steps", "2",
                 "--queries", "20", "--device", "cpu", "--workers", "0", "--log-every", "1", "--json")
    assert result.code == 0, result.err
    model = result.json()["model"]
    folder = Path(model["checkpoint"]).parent
    steps = model["train"]["result"]["steps"]
    assert 1 <= steps <= 2 and [r["step"] for r in read_metrics(folder)] == list(range(1, steps + 1))
