"""Gradient cache == plain full-batch gradients (CE, multi-field, sigmoid), dropout on, float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gcl_eval.util.errors import GclError
from trainers.gradcache import GradCache, plain_step, split_batch
from trainers.losses import GCLLoss

N, CHUNK, VOCAB = 12, 5, 50  # chunks of 5, 5, 2


class Towers(nn.Module):
    """A tiny two-tower model: a text tower (embedding bag + MLP) and an image tower (MLP), both with
    dropout, a learnable logit scale (stored as its log) and bias."""

    def __init__(self, dropout=0.3, dim=16):
        super().__init__()
        self.tok = nn.EmbeddingBag(VOCAB, 24, mode="mean")
        self.text = nn.Sequential(nn.Linear(24, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, dim))
        self.image = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-5.0))

    def encode_text(self, tokens):
        return F.normalize(self.text(self.tok(tokens)), dim=-1)

    def encode_image(self, images):
        return F.normalize(self.image(images), dim=-1)

    def encode_product(self, doc):
        return [self.encode_image(doc["image"]), self.encode_text(doc["title"])]


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randint(0, VOCAB, (N, 6), generator=g)
    docs = {
        "image": torch.randn(N, 3, 8, 8, generator=g, dtype=torch.float64),
        "title": torch.randint(0, VOCAB, (N, 5), generator=g),
    }
    weights = 1.0 / torch.randint(1, 101, (N,), generator=g).double()  # inverse STW
    present = torch.ones(N, 2, dtype=torch.bool)
    present[[2, 7], 1] = False  # two products without a title
    return queries, docs, weights, present


def _setup(case, dropout=0.3):
    torch.manual_seed(0)
    model = Towers(dropout).double()
    queries, docs, weights, present = _batch()
    if case == "ce":
        loss = GCLLoss("ce")
        return model, model.encode_text, model.encode_image, queries, docs["image"], (
            lambda q, d, w: loss(q, d, w, model.logit_scale.exp()),
            (weights,),
        )
    if case == "sigmoid":
        loss = GCLLoss("sigmoid")
        return model, model.encode_text, model.encode_image, queries, docs["image"], (
            lambda q, d, w: loss(q, d, w, model.logit_scale.exp(), model.logit_bias),
            (weights,),
        )
    if case == "multi_field":
        loss = GCLLoss("ce", doc_field_weights=[0.5, 0.5])
        return model, model.encode_text, model.encode_product, queries, docs, (
            lambda q, d, w, masks: loss(q, d, w, model.logit_scale.exp(), doc_field_masks=masks),
            (weights, present),
        )
    raise AssertionError(case)


def _run(case, how, dropout=0.3, seed=123):
    model, enc_q, enc_d, queries, docs, (loss_fn, args) = _setup(case, dropout)
    model.train()
    torch.manual_seed(seed)
    if how == "plain":
        loss = plain_step(enc_q, enc_d, loss_fn, queries, docs, *args)
    elif how == "plain_chunked":
        loss = plain_step(enc_q, enc_d, loss_fn, queries, docs, *args, chunk_size=CHUNK)
    else:
        cache = GradCache(enc_q, enc_d, loss_fn, CHUNK, replay_rng=(how == "cache"))
        loss = cache.step(queries, docs, *args)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss, grads, torch.get_rng_state()


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("case", ["ce", "multi_field", "sigmoid"])
def test_cache_equals_plain_with_dropout(case):
    ref_loss, ref_grads, ref_rng = _run(case, "plain_chunked")
    loss, grads, rng = _run(case, "cache")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert set(grads) == set(ref_grads)
    assert len(ref_grads) == len(list(_setup(case)[0].parameters())) - (case != "sigmoid")  # bias: sigmoid only
    for name in ref_grads:
        assert ref_grads[name].abs().max() > 0, name  # every parameter takes part
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-10, msg=name)
    assert torch.equal(rng, ref_rng)  # the RNG stream continues as after a plain step


@pytest.mark.parametrize("case", ["ce", "multi_field", "sigmoid"])
def test_cache_without_replay_differs(case):
    """The control: without RNG replay, dropout draws new masks and the gradients are wrong."""
    _, ref_grads, _ = _run(case, "plain_chunked")
    _, grads, _ = _run(case, "cache_no_replay")
    assert _max_diff(grads, ref_grads) > 1e-4


@pytest.mark.parametrize("case", ["ce", "multi_field", "sigmoid"])
def test_cache_equals_one_full_batch_forward_without_dropout(case):
    ref_loss, ref_grads, _ = _run(case, "plain", dropout=0.0)
    loss, grads, _ = _run(case, "cache", dropout=0.0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert set(grads) == set(ref_grads)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-10, msg=name)


def test_split_batch_structures():
    t = torch.arange(7)
    batch = {"image": torch.zeros(7, 2), "title": ["a", "b", "c", "d", "e", "f", "g"]}
    chunks = split_batch(batch, 3)
    assert [len(c["title"]) for c in chunks] == [3, 3, 1]
    assert chunks[2]["title"] == ["g"] and chunks[1]["image"].shape == (3, 2)
    assert [c.tolist() for c in split_batch(t, 4)] == [[0, 1, 2, 3], [4, 5, 6]]
    fields = split_batch((t, t * 2), 5)
    assert fields[1][1].tolist() == [10, 12]
    with pytest.raises(GclError, match="different numbers of rows"):
        split_batch({"a": torch.zeros(3), "b": torch.zeros(4)}, 2)
    with pytest.raises(GclError, match="chunk size"):
        GradCache(lambda x: x, lambda x: x, lambda q, d: q.sum(), 0)
