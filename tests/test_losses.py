"""Weighted losses (docs/training.md): open_clip equality at w = 1, hand-computed weighted cases,
multi-field composition, missing fields, and row shares that sum to the full loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from gcl_eval.util.errors import GclError
from gcl_eval.util.torchvision_guard import ensure_torchvision

ensure_torchvision()
import open_clip  # noqa: E402

from trainers.losses import (  # noqa: E402
    GCLLoss,
    multi_field_loss,
    weighted_contrastive_loss,
    weighted_sigmoid_loss,
)


def _leaves(n, d, dtype, seed, k=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True) for _ in range(k)]


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


# --------------------------------------------------------------------------------------------
# w = 1: open_clip's losses


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_ce_equals_open_clip_clip_loss(dtype, tol):
    raw_q, raw_d = _leaves(16, 8, dtype, seed=0)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=dtype, requires_grad=True)
    inputs = [raw_q, raw_d, log_scale]

    def run(fn):
        q, d = F.normalize(raw_q, dim=-1), F.normalize(raw_d, dim=-1)
        loss = fn(q, d, log_scale.exp())
        return loss, _grads(loss, inputs)

    ours, our_grads = run(lambda q, d, t: weighted_contrastive_loss(q, d, torch.ones(16, dtype=dtype), t))
    ref, ref_grads = run(lambda q, d, t: open_clip.loss.ClipLoss()(d, q, t))  # (image, text, scale)
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_sigmoid_equals_open_clip_siglip_loss(dtype, tol):
    raw_q, raw_d = _leaves(12, 8, dtype, seed=1)
    log_scale = torch.tensor(math.log(10.0), dtype=dtype, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=dtype, requires_grad=True)
    inputs = [raw_q, raw_d, log_scale, bias]

    def run(fn):
        q, d = F.normalize(raw_q, dim=-1), F.normalize(raw_d, dim=-1)
        loss = fn(q, d, log_scale.exp(), bias)
        return loss, _grads(loss, inputs)

    ones = torch.ones(12, dtype=dtype)
    ours, our_grads = run(lambda q, d, t, b: weighted_sigmoid_loss(q, d, ones, t, b))
    # SigLipLoss divides by image_features.shape[0] = N, as our 1/N; rows = images there.
    ref, ref_grads = run(lambda q, d, t, b: open_clip.loss.SigLipLoss()(d, q, t, b))
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    for a, b in zip(our_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------
# hand-computed weighted cases, N = 2

Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
D = torch.tensor([[0.6, 0.8], [0.8, -0.6]], dtype=torch.float64)
T = 2.0
# S_ij = T * q_i . d_j
S11, S12, S21, S22 = T * 0.6, T * 0.8, T * 0.8, T * -0.6


def _ce(pos, other):
    """-log softmax over two logits, at the positive one."""
    return -math.log(math.exp(pos) / (math.exp(pos) + math.exp(other)))


def test_weighted_ce_by_hand():
    w1, w2 = 1.0, 0.25
    row1, row2 = _ce(S11, S12), _ce(S22, S21)  # query i against both docs
    col1, col2 = _ce(S11, S21), _ce(S22, S12)  # doc i against both queries
    want_n = (w1 * (row1 + col1) + w2 * (row2 + col2)) / (2 * 2)
    want_sum_w = (w1 * (row1 + col1) + w2 * (row2 + col2)) / (2 * (w1 + w2))
    w = torch.tensor([w1, w2], dtype=torch.float64)
    got_n = weighted_contrastive_loss(Q, D, w, T)
    got_sum_w = weighted_contrastive_loss(Q, D, w, T, normalize_by="sum_w")
    assert got_n.item() == pytest.approx(want_n, rel=1e-12)
    assert got_sum_w.item() == pytest.approx(want_sum_w, rel=1e-12)


def test_weighted_sigmoid_by_hand():
    w1, w2, b = 3.0, 0.5, -1.0

    def log_sig(x):
        return -math.log1p(math.exp(-x))

    want = -(log_sig(w1 * (S11 + b)) + log_sig(-(S12 + b)) + log_sig(-(S21 + b)) + log_sig(w2 * (S22 + b))) / 2
    got = weighted_sigmoid_loss(Q, D, torch.tensor([w1, w2], dtype=torch.float64), T, b)
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_sum_w_is_rescaled_n():
    q, d = (F.normalize(x.detach(), dim=-1) for x in _leaves(10, 6, torch.float64, seed=2))
    w = torch.linspace(0.1, 2.0, 10, dtype=torch.float64)
    by_n = weighted_contrastive_loss(q, d, w, 5.0)
    by_sum = weighted_contrastive_loss(q, d, w, 5.0, normalize_by="sum_w")
    torch.testing.assert_close(by_sum, by_n * 10 / w.sum())


def test_constant_weight_scales_loss():
    q, d = (F.normalize(x.detach(), dim=-1) for x in _leaves(10, 6, torch.float64, seed=3))
    one = weighted_contrastive_loss(q, d, torch.ones(10, dtype=torch.float64), 5.0)
    three = weighted_contrastive_loss(q, d, torch.full((10,), 3.0, dtype=torch.float64), 5.0)
    torch.testing.assert_close(three, 3 * one)
    # sum_w undoes a constant scale: c = 3 and c = 1 give CLIP under that normaliser
    three_sum = weighted_contrastive_loss(q, d, torch.full((10,), 3.0, dtype=torch.float64), 5.0, "sum_w")
    torch.testing.assert_close(three_sum, one)


# --------------------------------------------------------------------------------------------
# row shares (what a rank computes with local_loss) sum to the full loss, values and gradients


@pytest.mark.parametrize("kind", ["ce", "ce_sum_w", "sigmoid"])
def test_row_shares_sum_to_full_loss(kind):
    raw_q, raw_d = _leaves(9, 5, torch.float64, seed=4)
    w = torch.linspace(0.2, 1.0, 9, dtype=torch.float64)

    def loss(rows):
        q, d = F.normalize(raw_q, dim=-1), F.normalize(raw_d, dim=-1)
        if kind == "sigmoid":
            return weighted_sigmoid_loss(q, d, w, 4.0, -2.0, rows=rows)
        return weighted_contrastive_loss(q, d, w, 4.0, "sum_w" if kind == "ce_sum_w" else "n", rows=rows)

    full = loss(None)
    shares = loss(slice(0, 4)) + loss(torch.tensor([4, 5, 6])) + loss(torch.arange(9) >= 7)
    torch.testing.assert_close(shares, full, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(shares, [raw_q, raw_d]), _grads(full, [raw_q, raw_d])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# multi-field


def _fields(n, seed, k):
    return [F.normalize(x.detach(), dim=-1) for x in _leaves(n, 6, torch.float64, seed=seed, k=k)]


@pytest.mark.parametrize("renormalize", [False, True])
def test_multi_field_k1_m2_is_sum_of_terms(renormalize):
    (q,) = _fields(8, 5, 1)
    img, title = _fields(8, 6, 2)
    w = torch.linspace(0.1, 1.0, 8, dtype=torch.float64)
    got = multi_field_loss([q], [img, title], w, 3.0, [1.0], [0.5, 0.5], renormalize_mean=renormalize)
    d_bar = 0.5 * img + 0.5 * title
    if renormalize:
        d_bar = d_bar / d_bar.norm(dim=-1, keepdim=True)
    want = (
        weighted_contrastive_loss(q, d_bar, w, 3.0)
        + weighted_contrastive_loss(q, img, w, 3.0)
        + weighted_contrastive_loss(q, title, w, 3.0)
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_multi_field_field_weights_and_sigmoid():
    q1, q2 = _fields(6, 7, 2)
    img, title = _fields(6, 8, 2)
    w = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    got = multi_field_loss(
        [q1, q2], [img, title], w, 3.0, [3.0, 1.0], [0.2, 0.8], logit_bias=-1.0, loss="sigmoid"
    )  # query weights (3, 1) are normalised to (0.75, 0.25)
    terms = [(0.75 * q1 + 0.25 * q2, 0.2 * img + 0.8 * title)]
    terms += [(a, b) for a in (q1, q2) for b in (img, title)]
    want = sum(weighted_sigmoid_loss(a, b, w, 3.0, -1.0) for a, b in terms)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_multi_field_missing_fields():
    n = 7
    (q,) = _fields(n, 9, 1)
    img, title = _fields(n, 10, 2)
    present = torch.ones(n, 2, dtype=torch.bool)
    present[[1, 4], 1] = False  # rows 1 and 4 have no title
    present[5, 0] = False  # row 5 has no image
    img, title = img.clone().requires_grad_(), title.clone().requires_grad_()
    with torch.no_grad():  # a missing field may hold garbage: it must never be read
        title[[1, 4]] = float("nan")
        img[5] = float("nan")
    w = torch.linspace(0.1, 1.0, n, dtype=torch.float64)

    got = multi_field_loss([q], [img, title], w, 3.0, [1.0], [0.5, 0.5], doc_field_masks=present)

    with torch.no_grad():
        d_bar = 0.5 * img + 0.5 * title
        d_bar[[1, 4]] = img[[1, 4]]  # weights renormalised over the present field
        d_bar[5] = title[5]
    has_img = torch.tensor([0, 1, 2, 3, 4, 6])
    has_title = torch.tensor([0, 2, 3, 5, 6])
    want = (
        weighted_contrastive_loss(q, d_bar, w, 3.0)
        + weighted_contrastive_loss(q[has_img], img.detach()[has_img], w[has_img], 3.0)
        + weighted_contrastive_loss(q[has_title], title.detach()[has_title], w[has_title], 3.0)
    )
    torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)
    g_img, g_title = torch.autograd.grad(got, [img, title])
    assert torch.isfinite(g_img).all() and torch.isfinite(g_title).all()
    assert (g_title[[1, 4]] == 0).all() and (g_img[5] == 0).all()


def test_multi_field_row_shares_with_masks():
    n = 8
    q1, q2 = _fields(n, 11, 2)
    img, title = _fields(n, 12, 2)
    q_present = torch.ones(n, 2, dtype=torch.bool)
    q_present[[0, 6], 1] = False
    d_present = torch.ones(n, 2, dtype=torch.bool)
    d_present[[2, 3], 1] = False
    w = torch.linspace(0.3, 1.0, n, dtype=torch.float64)

    def loss(rows, kind):
        return multi_field_loss(
            [q1, q2], [img, title], w, 3.0, [0.5, 0.5], [0.5, 0.5], logit_bias=-1.0, loss=kind,
            query_field_masks=q_present, doc_field_masks=d_present, rows=rows,
        )

    for kind in ("ce", "sigmoid"):
        full = loss(None, kind)
        shares = loss(slice(0, 4), kind) + loss(slice(4, 8), kind)
        torch.testing.assert_close(shares, full, rtol=1e-12, atol=1e-12)


def test_gcl_loss_module_matches_functions():
    q, d = _fields(6, 13, 2)
    img, title = _fields(6, 14, 2)
    w = torch.linspace(0.5, 1.0, 6, dtype=torch.float64)
    torch.testing.assert_close(GCLLoss("ce")(q, d, w, 2.0), weighted_contrastive_loss(q, d, w, 2.0))
    torch.testing.assert_close(
        GCLLoss("ce", "sum_w")(q, d, w, 2.0), weighted_contrastive_loss(q, d, w, 2.0, normalize_by="sum_w")
    )
    torch.testing.assert_close(GCLLoss("sigmoid")(q, d, w, 2.0, -1.0), weighted_sigmoid_loss(q, d, w, 2.0, -1.0))
    torch.testing.assert_close(
        GCLLoss("ce", doc_field_weights=[0.5, 0.5])(q, [img, title], w, 2.0),
        multi_field_loss([q], [img, title], w, 2.0, [1.0], [0.5, 0.5]),
    )


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input():
    q, d = _fields(4, 15, 2)
    w = torch.ones(4, dtype=torch.float64)
    cases = [
        (lambda: weighted_contrastive_loss(q, d, w, 1.0, normalize_by="max"), "normalize_by"),
        (lambda: weighted_contrastive_loss(q, d[:3], w, 1.0), "N x D"),
        (lambda: weighted_contrastive_loss(q, d, torch.ones(3), 1.0), "weights"),
        (lambda: multi_field_loss([q], [d], w, 1.0, [1.0], [1.0], loss="hinge"), "known: ce, sigmoid"),
        (lambda: multi_field_loss([q], [d], w, 1.0, [1.0], [1.0], loss="sigmoid"), "logit_bias"),
        (lambda: multi_field_loss([q], [d, d], w, 1.0, [1.0], [1.0]), "field weights"),
        (lambda: multi_field_loss([q], [d], w, 1.0, [1.0], [-1.0]), ">= 0"),
        (
            lambda: multi_field_loss(
                [q], [d, d], w, 1.0, [1.0], [0.5, 0.5], doc_field_masks=torch.tensor([[1, 1]] * 3 + [[0, 0]]).bool()
            ),
            "document record 3 has no present field",
        ),
        (
            lambda: multi_field_loss(
                [q], [d, d], w, 1.0, [1.0], [1.0, 0.0], doc_field_masks=torch.tensor([[1, 1]] * 3 + [[0, 1]]).bool()
            ),
            "document record 3 has no present field with positive weight",
        ),
        (lambda: GCLLoss("hinge"), "known: ce, sigmoid"),
        (lambda: GCLLoss("sigmoid", "sum_w"), "normalize_by='n'"),
        (lambda: GCLLoss("sigmoid")(q, d, w, 1.0), "logit_bias"),
        (lambda: GCLLoss("ce")(q, d, w, 1.0, doc_field_masks=torch.ones(4, 1, dtype=torch.bool)), "multi-field"),
    ]
    for call, fragment in cases:
        with pytest.raises(GclError) as err:
            call()
        assert fragment in str(err.value) and "\n" not in str(err.value)
