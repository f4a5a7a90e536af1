"""Score-to-weight functions against their formulas (docs/training.md), written out per score."""

import math

import numpy as np
import pytest
import torch

from gcl_eval.util.errors import GclError
from trainers.weights import STW_NAMES, score_to_weight

SCORES = list(range(1, 101))


def _expected(name, s, s_max=100, **params):
    p = s_max + 1 - s
    if name == "constant":
        return params.get("c", 1.0)
    if name == "linear":
        return s / s_max if params.get("normalise") else float(s)
    if name == "inverse":
        return 1.0 / (s_max - s + params.get("c", 1.0))
    if name == "inverse_sqrt":
        return 1.0 / math.sqrt(s_max - s + params.get("c", 1.0))
    if name == "piecewise":
        top = params.get("top", 10)
        decay = params.get("decay", "inverse")
        if p <= top:
            return 1.0
        if decay == "inverse":
            return 1.0 / (p - top + 1)
        if decay == "inverse_sqrt":
            return 1.0 / math.sqrt(p - top + 1)
        if decay == "linear":
            return (s_max + 1 - p) / (s_max + 1 - top)
    raise AssertionError(name)


CASES = [
    ("constant", {}),
    ("constant", {"c": 2.5}),
    ("linear", {}),
    ("linear", {"normalise": True}),
    ("inverse", {}),
    ("inverse", {"c": 3.0}),
    ("inverse_sqrt", {}),
    ("inverse_sqrt", {"c": 0.5}),
    ("piecewise", {}),
    ("piecewise", {"top": 5}),
    ("piecewise", {"decay": "inverse_sqrt"}),
    ("piecewise", {"decay": "linear", "top": 20}),
]


@pytest.mark.parametrize("name,params", CASES)
def test_formula_numpy(name, params):
    got = score_to_weight(name, np.array(SCORES), **params)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    want = np.array([_expected(name, s, **params) for s in SCORES])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name,params", CASES)
def test_formula_torch(name, params):
    got = score_to_weight(name, torch.tensor(SCORES), **params)  # int64 in, default float out
    assert isinstance(got, torch.Tensor) and got.dtype == torch.get_default_dtype()
    got64 = score_to_weight(name, torch.tensor(SCORES, dtype=torch.float64), **params)
    assert got64.dtype == torch.float64
    want = torch.tensor([_expected(name, s, **params) for s in SCORES], dtype=torch.float64)
    torch.testing.assert_close(got64, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)


def test_named_values():
    s = np.array([100, 91, 90, 1])  # p = 1, 10, 11, 100
    np.testing.assert_allclose(score_to_weight("inverse", s), [1, 1 / 10, 1 / 11, 1 / 100])
    np.testing.assert_allclose(score_to_weight("piecewise", s), [1, 1, 1 / 2, 1 / 91])
    np.testing.assert_allclose(score_to_weight("constant", s), [1, 1, 1, 1])
    np.testing.assert_allclose(score_to_weight("linear", s, normalise=True), [1, 0.91, 0.90, 0.01])


def test_other_s_max_and_lists():
    got = score_to_weight("inverse", [1, 5, 10], s_max=10)
    np.testing.assert_allclose(got, [1 / 10, 1 / 6, 1 / 1])
    assert set(STW_NAMES) == {"constant", "linear", "inverse", "inverse_sqrt", "piecewise"}


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: score_to_weight("cubic", [1]), "known: constant, linear, inverse, inverse_sqrt, piecewise"),
        (lambda: score_to_weight("inverse", [1], k=2), "unknown parameter"),
        (lambda: score_to_weight("linear", [1], c=2), "unknown parameter"),
        (lambda: score_to_weight("inverse", [0]), "1..100"),
        (lambda: score_to_weight("inverse", [101]), "1..100"),
        (lambda: score_to_weight("inverse", [50, float("nan")]), "1..100"),
        (lambda: score_to_weight("inverse", torch.tensor([0.5])), "1..100"),
        (lambda: score_to_weight("inverse", torch.tensor([1.0, float("nan")])), "1..100"),
        (lambda: score_to_weight("inverse", [5], s_max=4), "1..4"),
        (lambda: score_to_weight("inverse", [1], s_max=0), "s_max"),
        (lambda: score_to_weight("inverse", ["a"]), "numbers"),
        (lambda: score_to_weight("inverse", [1], c=0), "c must be > 0"),
        (lambda: score_to_weight("piecewise", [1], decay="cubic"), "known: inverse"),
        (lambda: score_to_weight("piecewise", [1], top=200), "top"),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises(GclError) as err:
        call()
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg
