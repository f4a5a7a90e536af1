"""gcl_eval.measures.stats against scipy: ttest_rel and permutation_test. Skipped when scipy is missing."""

import math

import numpy as np
import pytest

from gcl_eval.measures.stats import paired_randomization_test, paired_t_test
from stats_cases import FIXED_INPUTS, pairs

scipy_stats = pytest.importorskip("scipy.stats")


def _mean_diff(x, y, axis):
    return np.mean(x - y, axis=axis)


def _scipy_permutation_p(a, b, n_resamples=10000, rng=0):
    return scipy_stats.permutation_test((a, b), _mean_diff, permutation_type="samples", vectorized=True,
                                       n_resamples=n_resamples, alternative="two-sided", rng=rng).pvalue


@pytest.mark.parametrize("a, b", FIXED_INPUTS)
def test_t_test_equals_scipy_ttest_rel(a, b):
    t, p = paired_t_test(a, b)
    reference = scipy_stats.ttest_rel(a, b)
    assert t == pytest.approx(reference.statistic, rel=1e-12, abs=0)
    assert p == pytest.approx(reference.pvalue, rel=1e-10, abs=0)


def test_t_test_p_equals_scipy_t_distribution():
    _, p = paired_t_test([1, 2, 3, 4], [0, 0, 1, 1])  # t = 2 sqrt(6), 3 degrees of freedom
    assert p == pytest.approx(2 * scipy_stats.t.sf(2 * math.sqrt(6), df=3), rel=1e-14)


@pytest.mark.parametrize("a, b", [pairs(0, 10, 0.1), pairs(5, 13, 0.0), pairs(6, 12, 0.1, discrete=True),
                                  pairs(4, 2, 0.2), (np.array([0.1, 0.9, 0.4]), np.array([0.3, 0.2, 0.8])),
                                  (np.array([1.0, 0.5, 0.0, 0.5]), np.array([0.0, 0.5, 0.5, 0.5]))])
def test_randomization_exact_enumeration_equals_scipy(a, b):
    # 2**n <= n_resamples: both enumerate every sign pattern, with no +1 correction
    assert 2 ** len(a) <= 10000
    assert paired_randomization_test(a, b) == pytest.approx(_scipy_permutation_p(a, b), rel=1e-12, abs=0)


@pytest.mark.parametrize("a, b", [pairs(1, 30, 0.0), pairs(2, 200, 0.03), pairs(3, 57, -0.05, discrete=True),
                                  pairs(7, 40, 0.06)])
def test_randomization_monte_carlo_is_close_to_scipy(a, b):
    ours = paired_randomization_test(a, b, n_resamples=10000, seed=0)
    reference = _scipy_permutation_p(a, b, n_resamples=20000, rng=1)
    # two Monte Carlo estimates of one p: a few standard errors apart at most
    se = math.sqrt(max(reference * (1 - reference), 1e-4) / 10000)
    assert abs(ours - reference) < 5 * se + 2e-4
