"""Presets: the paper's lineup and the CPU presets, `gcl-eval models`, user preset files, bad presets."""

import json
import subprocess
import sys

import pytest

from gcl_eval.util.errors import GclError
from gcl_eval.experiments.preset import load_preset, preset_names

PAPER = ["vitb32-gcl", "vitl14-gcl", "vitb32-gcl-image", "vitl14-gcl-image", "vitb16-gcl-sigmoid", "e5l-gcl",
         "robb-gcl", "vitb32-clip", "vitl14-clip", "vitb16-siglip", "e5l", "vitb32-zs", "vitl14-zs", "e5l-zs", "bm25"]
CPU = ["tiny-gcl", "tiny-gcl-multi", "tiny-clip", "tiny-clip-multi", "tiny-siglip", "minilm-zs", "minilm-ce",
       "minilm-gcl", "bm25", "mini-zs", "mini-clip", "mini-gcl", "mini-clip-orig"]


def test_models_lists_every_preset_with_what_it_needs(gcl):
    result = gcl("models", "--json")
    assert result.code == 0, result.err
    listed = {p["name"]: p for p in result.json()}
    assert set(PAPER + CPU) <= set(listed)
    assert listed["vitl14-gcl"]["needs"] == ["gpu", "network"] and listed["vitl14-gcl"]["trains"]
    assert listed["tiny-gcl"]["needs"] == [] and listed["bm25"]["trains"] is False
    assert listed["minilm-zs"]["track"] == "text" and listed["tiny-gcl-multi"]["track"] == "multi"
    table = gcl("models")
    assert table.code == 0 and "vitl14-gcl" in table.output


def test_paper_multi_field_presets_follow_the_paper():
    preset = load_preset("vitl14-gcl")
    assert preset.model == {"kind": "open_clip", "arch": "ViT-L-14", "pretrained": "laion2b_s32b_b82k"}
    assert preset.train["stw"] == "inverse" and preset.train["doc_fields"] == {"title": 0.5, "image": 0.5}
    assert preset.doc_fields.as_dict() == {"image": 0.5, "title": 0.5}
    assert preset.cold_start_fields.as_dict() == {"title": 1.0}  # the paper's 0.5/0.0
    assert load_preset("vitb16-gcl-sigmoid").train["loss"] == "sigmoid"


@pytest.mark.parametrize("gcl_preset, baseline", [("tiny-gcl", "tiny-clip"), ("tiny-gcl-multi", "tiny-clip-multi"),
                                           ("minilm-gcl", "minilm-ce"), ("mini-gcl", "mini-clip"),
                                           ("vitb32-gcl", "vitb32-clip"),
                                           ("vitl14-gcl", "vitl14-clip"), ("e5l-gcl", "e5l")])
def test_each_gcl_preset_and_its_twin_differ_only_in_the_weighting(gcl_preset, baseline):
    a, b = load_preset(gcl_preset), load_preset(baseline)
    assert a.model == b.model and a.doc_fields == b.doc_fields and a.cold_start_fields == b.cold_start_fields
    assert a.train["stw"] == "inverse" and b.train["stw"] == "constant"
    assert {k: v for k, v in a.train.items() if k != "stw"} == {k: v for k, v in b.train.items() if k != "stw"}


def test_every_training_preset_builds_a_valid_train_config():
    for name in preset_names():
        preset = load_preset(name)
        if preset.trains:
            config = preset.train_config()
            assert config.stw == preset.train["stw"]


def test_a_user_preset_file_works_where_a_name_does(tmp_path):
    own = tmp_path / "mine.toml"
    own.write_text((load_preset("tiny-gcl").path).read_text().replace("epochs = 1", "epochs = 3"))
    preset = load_preset(str(own))
    assert preset.name == "mine" and preset.train["epochs"] == 3


@pytest.mark.parametrize("body, needle", [
    ("family = 'gcl'\ntrack = 'image'\n[model]\nkind = 'open_clip'\narch = 'tiny-clip'\n[eval]\ndoc_fields = {image = 1.0}\n",
     "description"),
    ("description = 'x'\nfamily = 'nope'\ntrack = 'image'\n[model]\nkind = 'open_clip'\narch = 'a'\n", "family"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'text'\n[model]\nkind = 'text'\ntext_model = 'minilm'\n"
     "[eval]\ndoc_fields = {image = 1.0}\n", "image"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'image'\n[model]\nkind = 'open_clip'\n", "arch"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'image'\nbogus = 1\n[model]\nkind = 'open_clip'\narch = 'a'\n", "bogus"),
    ("not toml at all [", "TOML"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'text'\nmodel = 'bm25'\n", "model must be a table"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'text'\nneeds = 'gpu'\n[model]\nkind = 'bm25'\n", "needs must be a list"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'text'\neval = 3\n[model]\nkind = 'bm25'\n", "eval must be a table"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'text'\ntrain = 3\n[model]\nkind = 'open_clip'\narch = 'a'\n",
     "train must be a table"),
    ("description = 'x'\nfamily = 'gcl'\ntrack = 'text'\n[model]\nkind = 'bm25'\n[eval]\nbatch_size = 'big'\n",
     "eval.batch_size 'big'"),
])
def test_bad_presets_are_one_line_errors(tmp_path, body, needle):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(GclError, match=needle):
        load_preset(str(path))


def test_unknown_preset_exits_2_listing_the_known_ones(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gcl_eval", "run", "--model", "nope", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "tiny-gcl" in proc.stderr and proc.stderr.count("\n") == 1


def test_gpu_training_preset_on_cpu_exits_2_unless_cpu_is_asked_for(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the preset would train")
    proc = subprocess.run([sys.executable, "-m", "gcl_eval", "run", "--model", "vitl14-gcl",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "trains on a GPU" in proc.stderr and "--device cpu" in proc.stderr
    assert proc.stderr.count("\n") == 1
