"""gcl_eval.measures.stats against scipy: ttest_rel and permutation_test, also as the suite report uses them
(seed-averaged queries, Holm). Skipped when scipy is missing."""

import math

import numpy as np
import pytest

from gcl_eval.measures.stats import paired_randomization_test, paired_t_test
from gcl_eval.report.suite_summary import compare
from run_helpers import fake_run
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


def test_compare_matches_scipy_on_seed_averaged_queries_with_holm():
    rng = np.random.default_rng(0)
    splits = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
    lift = {"in_domain": 0.2, "novel_query": 0.05, "novel_corpus": 0.0, "zero_shot": 0.1}
    base = [fake_run({s: rng.uniform(0.1, 0.5, 40) for s in splits}, k) for k in range(3)]
    ours = [fake_run({s: np.clip(base[k].per_query.query("split == @s")["nDCG@10"].to_numpy() + lift[s]
                                 + rng.normal(0, 0.05, 40), 0, 1) for s in splits}, k) for k in range(3)]
    result = compare("gcl", ours, "clip", base)
    assert len(result.cells) == 12
    raw = []
    for cell in result.cells:
        def seed_mean(runs):
            return np.mean([r.per_query.query("split == @cell.split")[cell.measure].to_numpy() for r in runs], axis=0)

        expected = scipy_stats.ttest_rel(seed_mean(ours), seed_mean(base)).pvalue
        assert math.isclose(cell.p, expected, rel_tol=1e-9, abs_tol=1e-15)
        raw.append(expected)
        per_seed = [ours[k].metric(cell.split, cell.measure) / base[k].metric(cell.split, cell.measure) for k in range(3)]
        assert np.allclose(cell.seed_ratios, per_seed)
        assert math.isclose(cell.ratio, np.mean([r.metric(cell.split, cell.measure) for r in ours])
                            / np.mean([r.metric(cell.split, cell.measure) for r in base]))
    # Holm by hand: sorted p times (m - rank), running maximum, capped at 1
    order = np.argsort(raw)
    holm_expected = np.empty(12)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, raw[i] * (12 - rank)))
        holm_expected[i] = running
    assert np.allclose([c.p_holm for c in result.cells], holm_expected)
    assert result.cell("in_domain", "nDCG@10").significant and not result.cell("novel_corpus", "nDCG@10").significant
