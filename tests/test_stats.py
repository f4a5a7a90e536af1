"""gcl_eval.measures.stats by hand: t and randomization tests, Holm adjustments.

The comparisons with scipy (ttest_rel, permutation_test) are in tests/comparison/test_scipy_stats.py.
"""

import math

import numpy as np
import pytest

from gcl_eval.measures.stats import holm, paired_randomization_test, paired_t_test, paired_test
from stats_cases import pairs as _pairs


def test_t_test_by_hand():
    # d = [1, 2, 2, 3]: mean 2, sample variance 2/3, standard error sqrt(2/3 / 4) = 1/sqrt(6)
    t, p = paired_t_test([1, 2, 3, 4], [0, 0, 1, 1])
    assert t == pytest.approx(2 * math.sqrt(6), rel=1e-14)
    x = math.sqrt(8)  # t / sqrt(df): Student's t with 3 degrees of freedom has a closed-form tail
    assert p == pytest.approx(1 - 2 / math.pi * (x / (1 + x * x) + math.atan(x)), rel=1e-13)
    assert paired_t_test([0, 0, 1, 1], [1, 2, 3, 4])[0] == pytest.approx(-2 * math.sqrt(6), rel=1e-14)


def test_t_test_zero_variance_and_too_few_pairs():
    a = np.array([0.2, 0.5, 0.5, 1.0])
    assert paired_t_test(a, a.copy()) == (0.0, 1.0)  # scipy: nan
    assert paired_t_test(a + 0.25, a) == (math.inf, 0.0)  # constant difference: scipy gives inf and 0 too
    assert paired_t_test(a - 0.25, a) == (-math.inf, 0.0)
    assert all(math.isnan(x) for x in paired_t_test([0.5], [0.1]))
    with pytest.raises(ValueError, match="same length"):
        paired_t_test([1, 2], [1, 2, 3])


def test_randomization_by_hand():
    # d = [1, 2, 3]: the 8 sign patterns give |sum| 6, 4, 2, 0, 0, 2, 4, 6; two reach |6|
    assert paired_randomization_test([1, 2, 3], [0, 0, 0]) == pytest.approx(2 / 8)
    # d = [1, 1]: |sum| is 2, 0, 0, 2
    assert paired_randomization_test([1, 1], [0, 0]) == pytest.approx(2 / 4)


def test_randomization_is_seeded_and_never_zero():
    a, b = _pairs(1, 30, 0.05)
    assert paired_randomization_test(a, b, seed=3) == paired_randomization_test(a, b, seed=3)
    assert paired_randomization_test(a, b, seed=3) != paired_randomization_test(a, b, seed=4)
    a, b = _pairs(8, 300, 0.5)  # a huge effect: no resample reaches it, p = 1 / (1 + n_resamples)
    assert paired_randomization_test(a, b, n_resamples=999) == pytest.approx(1 / 1000)
    assert paired_randomization_test(a, a.copy()) == 1.0
    assert math.isnan(paired_randomization_test([], []))


def test_paired_test_dispatch():
    a, b = _pairs(0, 10, 0.1)
    assert paired_test(a, b, "t") == paired_t_test(a, b)[1]
    assert paired_test(a, b, "randomization") == paired_randomization_test(a, b)
    with pytest.raises(ValueError, match="unknown test"):
        paired_test(a, b, "wilcoxon")


def _holm_step_down_rejects(pvalues, alpha):
    """Holm's procedure as published: sorted ascending, reject while p_(k) <= alpha / (m - k + 1), then stop."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    rejected = set()
    for k, i in enumerate(order, start=1):
        if pvalues[i] > alpha / (m - k + 1):
            break
        rejected.add(i)
    return rejected


def test_holm_by_hand():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max so far: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]).shape == (0,)


def test_holm_ignores_untested_cells():
    adjusted = holm([0.01, math.nan, 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.04])  # m = 2


@pytest.mark.parametrize("seed", range(5))
def test_holm_rejections_equal_the_step_down_procedure(seed):
    rng = np.random.default_rng(seed)
    p = list(np.round(rng.random(15) ** 3, 3))  # rounding makes ties
    adjusted = holm(p)
    assert np.all(adjusted <= 1) and np.all(adjusted >= np.asarray(p))
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in the raw p-values
    for alpha in (0.001, 0.01, 0.05, 0.1, 0.2, 0.5):
        assert {i for i in range(len(p)) if adjusted[i] <= alpha} == _holm_step_down_rejects(p, alpha)
