"""`gcl-eval run`: every CPU preset end to end on a small synthetic dataset; reuse of checkpoints and caches."""

import pytest

from gcl_eval.experiments.pipeline import RunOptions, run_preset
from gcl_eval.protocol.evaluate import EvalProtocol
from gcl_eval.protocol.results import load_run

FAST = (("epochs", 1), ("batch_size", 32), ("num_workers", 0), ("warmup", 2))


@pytest.fixture(scope="module")
def data(make_synth):
    return make_synth("run", "--queries", "80", "--docs-per-query", "20", "--image-size", "32", "--seed", "4")


def _run(model, data, tmp_path, train_overrides=FAST, **kw):
    options = RunOptions(model=model, data=data, out=tmp_path / model, train_overrides=train_overrides, workers=0,
                         checkpoints=tmp_path / "ckpt", protocol=EvalProtocol(top_k=100, queries_per_split=40), **kw)
    evaluation, folder = run_preset(options)
    return evaluation.result, folder


IDENTITY = ["preset", "family", "track", "trains", "kind"]
RECORD_KEYS = {  # result.json's "model", in order (committed results and the leaderboard's model table rely on it)
    "tiny-gcl": IDENTITY + ["checkpoint", "checkpoint_sha256", "stw", "train", "arch", "source", "doc_fields",
                            "split_doc_fields"],
    "tiny-clip": IDENTITY + ["checkpoint", "checkpoint_sha256", "stw", "train", "arch", "source", "doc_fields",
                             "split_doc_fields"],
    "bm25": IDENTITY + ["backend", "k1", "b", "tokenizer", "method", "doc_fields", "backend_version", "epsilon"],
}


@pytest.mark.parametrize("model", ["tiny-gcl", "tiny-clip", "bm25"])
def test_cpu_presets_write_valid_run_folders(model, data, tmp_path):
    result, folder = _run(model, data, tmp_path)
    loaded = load_run(folder)
    assert loaded.model["preset"] == model and list(loaded.splits) == ["in_domain", "novel_query", "novel_corpus",
                                                                         "zero_shot"]
    assert list(loaded.model) == RECORD_KEYS[model]
    if model != "bm25":
        assert loaded.model["stw"]["name"] == ("inverse" if model == "tiny-gcl" else "constant")
        assert len(loaded.model["stw"]["curve"]) == 100 and loaded.model["trains"] is True


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-gcl-multi", "tiny-clip-multi", "tiny-siglip", "minilm-zs", "minilm-ce",
                                   "minilm-gcl"])
def test_other_cpu_presets_run_end_to_end(model, data, tmp_path):
    pytest.importorskip("transformers") if model.startswith("minilm") else None
    result, folder = _run(model, data, tmp_path)
    loaded = load_run(folder)
    assert loaded.model["preset"] == model
    if model == "tiny-gcl-multi":
        assert loaded.model["split_doc_fields"]["zero_shot"] == "title=1"


def test_second_run_reuses_the_checkpoint_and_the_embeddings(data, tmp_path):
    first, _ = _run("tiny-gcl", data, tmp_path)
    second, _ = _run("tiny-gcl", data, tmp_path)
    assert first.timings["checkpoint_reused"] is False and second.timings["checkpoint_reused"] is True
    assert second.timings["embedding_cache"]["misses"] == 0
    assert second.splits == first.splits and second.model["checkpoint_sha256"] == first.model["checkpoint_sha256"]


def test_suite_labels_come_after_the_weights_and_before_the_field_weights(data, tmp_path):
    labels = (("label", "clip"), ("seed", 1), ("suite", "s"), ("suite_key", "k"), ("world", None))
    result, folder = _run("tiny-clip", data, tmp_path, labels=labels)
    keys = list(load_run(folder).model)
    assert keys[keys.index("source") + 1:] == ["label", "seed", "suite", "suite_key", "world", "doc_fields",
                                               "split_doc_fields"]


def test_run_command_prints_the_table(gcl, data, tmp_path):
    args = ["run", "--model", "bm25", "--data", data, "--out", tmp_path / "r", "--queries", "20", "--top-k", "50",
            "--device", "auto"]
    result = gcl(args)
    assert result.code == 0, result.err
    assert "in_domain" in result.output and "nDCG@10" in result.output
    as_json = gcl(args + ["--json"])
    assert as_json.code == 0 and as_json.json()["model"]["family"] == "bm25"


def test_eval_every_records_the_learning_curve_in_the_run(data, tmp_path):
    watched = FAST + (("max_steps", 4), ("eval_every", 2))
    result, folder = _run("tiny-gcl", data, tmp_path, train_overrides=watched)
    curve = load_run(folder).model["train"]["learning_curve"]
    assert [point["step"] for point in curve] == [2, 4]
    assert all(set(point["splits"]) == {"in_domain", "novel_corpus"} for point in curve)
    assert all(0 <= point["splits"]["novel_corpus"]["ERR"] <= 1 for point in curve)
    unwatched, _ = _run("tiny-gcl", data, tmp_path / "plain", train_overrides=FAST + (("max_steps", 4),))
    assert "learning_curve" not in unwatched.model["train"]
    assert unwatched.model["checkpoint_sha256"] == result.model["checkpoint_sha256"]  # watching changes no weight
