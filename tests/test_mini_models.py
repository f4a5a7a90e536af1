"""The mini models: an open_clip model with the packaged MiniLM as its text tower, the pretraining stage
that aligns its image tower (cached per dataset), and the mini presets end to end."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from gcl_eval.experiments.aligned_start import aligned_start, aligned_start_dir  # noqa: E402
from gcl_eval.experiments.pipeline import RunOptions, run_preset  # noqa: E402
from gcl_eval.experiments.preset import load_preset  # noqa: E402
from gcl_eval.protocol.evaluate import EvalProtocol  # noqa: E402
from gcl_eval.protocol.results import load_run  # noqa: E402
from gcl_eval.retrieval.encoders import OpenClipEncoder  # noqa: E402
from gcl_eval.retrieval.models import load_open_clip, text_pad_id, trim_padding  # noqa: E402
from gcl_eval.util.errors import GclError  # noqa: E402

TEXTS = ["red leather handbag", "Premium Bestseller navy suede sneakers by Aurelia, 4.8 stars, Free Shipping",
         "wool scarf", "striped cotton summer dress in a casual style"]


@pytest.fixture(scope="module")
def mini():
    return load_open_clip("mini-clip", None, seed=0)


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("mini", "--queries", "60", "--docs-per-query", "20", "--image-size", "32", "--seed", "5")


def test_the_text_tower_is_the_packaged_minilm(mini):
    from trainers.text_model import load_text_model

    minilm = load_text_model("minilm", prefixes="none").eval()
    with torch.no_grad():
        expected = minilm(minilm.tokenize(TEXTS, "query")).numpy()
    got = OpenClipEncoder(mini).encode_texts(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert mini.source == "text:minilm+random:0" and mini.model.visual.output_dim == 384


def test_cutting_padding_columns_changes_no_embedding(mini):
    tokens = mini.tokenizer(TEXTS)
    cut = trim_padding(tokens, text_pad_id(mini.model))
    assert cut.shape[1] < tokens.shape[1] and (tokens[:, cut.shape[1]:] == 0).all()
    with torch.no_grad():
        full, short = mini.model.encode_text(tokens, normalize=True), mini.model.encode_text(cut, normalize=True)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=0)
    assert text_pad_id(load_open_clip("tiny-clip", None).model) is None  # a CLIP text tower: tokens left alone


def test_batches_by_length_give_each_text_its_own_embedding(mini):
    encoder = OpenClipEncoder(mini, batch_size=2)
    together = encoder.encode_texts(TEXTS)
    alone = np.concatenate([encoder.encode_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_the_pretraining_stage_runs_once_per_dataset_and_learns(data, tmp_path, monkeypatch):
    from gcl_eval.data.io import read_dataset
    import trainers.align

    dataset = read_dataset(data)
    path = aligned_start("mini-clip", dataset, device="cpu", root=tmp_path)
    record = json.loads((path.parent / "align.json").read_text())
    assert path.name == "model.pt" and path.parent == aligned_start_dir(trainers.align.AlignConfig(),
                                                                         dataset.fingerprint(), tmp_path)
    assert record["documents"] == len(dataset.corpus_for("in_domain"))
    assert record["loss_per_epoch"][-1] < record["loss_per_epoch"][0]
    assert record["image_to_title_top1"] > 5 / record["documents"]  # well above chance
    state = torch.load(path, weights_only=True)
    start = load_open_clip("mini-clip", str(path))
    assert start.source == str(path) and set(state) == set(start.model.state_dict())

    def fail(*args, **kwargs):
        raise AssertionError("the pretraining stage ran again")

    monkeypatch.setattr(trainers.align, "align_image_tower", fail)
    assert aligned_start("mini-clip", dataset, device="cpu", root=tmp_path) == path


def test_mini_gcl_and_mini_clip_differ_only_in_the_weighting():
    gcl, clip, orig = load_preset("mini-gcl"), load_preset("mini-clip"), load_preset("mini-clip-orig")
    assert gcl.model == clip.model == orig.model == {"kind": "open_clip", "arch": "mini-clip", "start": "aligned"}
    assert {k: v for k, v in gcl.train.items() if k != "stw"} == {k: v for k, v in clip.train.items() if k != "stw"}
    assert (gcl.train["stw"], clip.train["stw"]) == ("inverse", "constant")
    assert orig.train["doc_fields"] == {"image": 1.0} and orig.doc_fields == clip.doc_fields
    assert load_preset("mini-zs").trains is False


@pytest.mark.parametrize("model, needle", [
    ("start = 'web'", "model.start 'web' is not one of aligned"),
    ("start = 'aligned'\npretrained = 'x.pt'", "give one"),
])
def test_a_bad_start_is_one_line(tmp_path, model, needle):
    path = tmp_path / "bad.toml"
    path.write_text("description = 'x'\nfamily = 'gcl'\ntrack = 'multi'\n[model]\nkind = 'open_clip'\n"
                    f"arch = 'mini-clip'\n{model}\n[eval]\ndoc_fields = {{title = 1.0}}\n")
    with pytest.raises(GclError, match=needle):
        load_preset(path)


def test_mini_gcl_runs_end_to_end_from_its_aligned_start(data, tmp_path):
    overrides = (("max_steps", 3), ("batch_size", 16), ("num_workers", 0), ("warmup", 1))
    options = RunOptions(model="mini-gcl", data=data, out=tmp_path / "run", train_overrides=overrides, workers=0,
                         checkpoints=tmp_path / "ckpt", protocol=EvalProtocol(top_k=50, queries_per_split=20))
    evaluation, folder = run_preset(options)
    model = load_run(folder).model
    start = model["train"]["config"]["pretrained"]
    assert model["arch"] == "mini-clip" and start.endswith("model.pt") and "-aligned-" in start
    assert model["split_doc_fields"]["zero_shot"] == "title=1"
    assert all(0 <= s["metrics"]["nDCG@10"] <= 1 for s in evaluation.result.splits.values())
    _check_open_clip_export(next((tmp_path / "ckpt").glob("mini-gcl-*")), tmp_path / "exported")


def _check_open_clip_export(checkpoint, out):
    """The exported config names the hub model the text tower packages, not this installation's folder, and
    plain open_clip builds the trained model from the folder (the hub's config served from the package)."""
    import transformers

    from gcl_eval.experiments.export import export_checkpoint
    from gcl_eval.retrieval.model_source import resolve_text_model
    from gcl_eval.retrieval.models import open_clip_module
    from trainers.checkpoint import load_trained

    export_checkpoint(checkpoint, "open_clip", out)
    text_cfg = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == text_cfg["hf_tokenizer_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    from_hub = transformers.AutoConfig.from_pretrained
    with pytest.MonkeyPatch.context() as patch:  # offline: the hub name's config is the packaged one's
        patch.setattr(transformers.AutoConfig, "from_pretrained", lambda name, *a, **k: from_hub(
            resolve_text_model("minilm") if name == text_cfg["hf_model_name"] else name, *a, **k))
        open_clip = open_clip_module()
        model = open_clip.create_model_and_transforms(f"local-dir:{out}")[0].eval()
        tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    ours = load_trained(checkpoint).model
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_text(tokenizer(TEXTS)).numpy(),
                                   ours.model.encode_text(ours.tokenizer(TEXTS)).numpy(), atol=1e-5)
