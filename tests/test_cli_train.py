"""`gcl-eval train` through the real entry point: a short run, and bad input -> exit 2 with one line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from gcl_eval.data.io import read_dataset
from train_helpers import make_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--epochs", "1", "--batch-size", "16", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cli-train") / "tiny")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory, gcl):
    """A finished tiny-clip run (the resume-refusal tests need a real checkpoint folder)."""
    out = tmp_path_factory.mktemp("cli-run") / "ckpt"
    result = gcl("train", "--arch", "tiny-clip", "--data", data, "--out", out, *FAST, "--json")
    assert result.code == 0, result.err
    return out, result.json()


def _fails_with_one_line(gcl, args, *expected: str) -> str:
    result = gcl(args)
    lines = result.error_lines
    assert result.code == 2, (result.code, result.out, result.err)
    assert len(lines) == 1 and lines[0].startswith("gcl-eval: error: "), result.err
    assert "Traceback" not in result.err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_short_run_prints_a_summary_and_json(trained):
    out, result = trained
    assert result["epochs"] == 1 and result["resumed_from_step"] is None
    assert (out / "model.pt").is_file() and (out / "DONE").is_file() and (out / "train.json").is_file()
    info = json.loads((out / "train.json").read_text())
    assert info["tool"] == "gcl-eval" and info["config"]["arch"] == "tiny-clip"
    pairs = len(read_dataset(info["data"]["path"]).pairs["in_domain"])
    assert info["data"]["pairs"] == pairs and result["steps"] == pairs // 16  # drop_last
    assert info["timings"]["train_s"] > 0


def test_help_lists_the_options(gcl):
    result = gcl("train", "--help")
    assert result.code == 0
    for option in ("--arch", "--text-model", "--stw", "--loss", "--precision", "--grad-cache-chunk", "--resume",
                   "--fields", "--pretrained"):
        assert option in result.out


@pytest.mark.parametrize("option, value, expected", [
    ("--stw", "cubic", "'cubic' is not one of"),
    ("--loss", "triplet", "'triplet' is not one of"),
    ("--precision", "fp8", "'fp8' is not one of"),
])
def test_unknown_names_exit_2(gcl, data, tmp_path, option, value, expected):
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--data", str(data), "--out", str(tmp_path / "o"),
                               *FAST, option, value], expected)


def test_scores_outside_1_to_s_max_exit_2(gcl, data, tmp_path):
    bad = tmp_path / "bad"
    make_dataset(bad)
    csv = bad / "query_0_product_id_0.csv"
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.loc[3, "score_linear"] = "150"
    table.to_csv(csv, index=False)
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--data", str(bad), "--out", str(tmp_path / "o"),
                               *FAST], "in_domain", "1..100", "150")
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_batch_larger_than_the_data_exit_2(gcl, data, tmp_path):
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--data", str(data), "--out", str(tmp_path / "o"),
                               "--batch-size", "5000", "--workers", "0"], "batch size 5000", "in_domain training pairs")


def test_resume_from_another_model_exit_2(gcl, trained, data):
    out, _ = trained
    _fails_with_one_line(gcl, ["train", "--arch", "ViT-B-32", "--data", str(data), "--out", str(out), *FAST,
                               "--resume"], "another run", "arch", "tiny-clip", "ViT-B-32")
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--loss", "sigmoid", "--data", str(data), "--out",
                               str(out), *FAST, "--resume"], "another run", "loss")


def test_resume_on_other_data_exit_2(gcl, trained, tmp_path):
    out, _ = trained
    other = make_dataset(tmp_path / "other", seed=1)
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--data", str(other), "--out", str(out), *FAST,
                               "--resume"], "other data")


@pytest.mark.parametrize("args, expected", [
    ([], "exactly one model"),
    (["--arch", "tiny-clip", "--text-model", "minilm"], "exactly one model"),
    (["--arch", "no-such-arch"], "unknown open_clip architecture"),
    (["--arch", "tiny-clip", "--fields", "image=0.5,colour=0.5"], "unknown field"),
    (["--arch", "tiny-clip", "--stw", "piecewise", "--stw-param", "slope=2"], "unknown parameter"),
    (["--arch", "tiny-clip", "--grad-cache-chunk", "0"], "chunk"),
    (["--arch", "tiny-clip", "--epochs", "0"], "epochs"),
    (["--arch", "tiny-clip", "--device", "cuda:0"], None),
])
def test_bad_options_exit_2(gcl, data, tmp_path, args, expected):
    import torch

    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    common = ["--data", str(data), "--out", str(tmp_path / "o"), "--epochs", "1", "--workers", "0", "--device", "cpu"]
    _fails_with_one_line(gcl, ["train", *common, *args], *([expected] if expected else []))  # later options win


def test_out_folder_rules_exit_2(gcl, trained, data, tmp_path):
    out, _ = trained
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--data", str(data), "--out", str(out), *FAST],
                         "already holds a finished training run")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--data", str(data), "--out", str(busy), *FAST],
                         "not empty")
    _fails_with_one_line(gcl, ["train", "--arch", "tiny-clip", "--data", str(tmp_path / "nowhere"), "--out",
                               str(tmp_path / "o"), *FAST], "nowhere")
