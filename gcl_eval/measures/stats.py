"""Paired significance tests on per-query scores, and Holm's correction for many of them.

Two runs evaluated on the same queries give paired scores a[i], b[i]; both tests look at the
differences d = a - b. The paired t-test assumes d is roughly normal; the randomisation (sign-flip)
test assumes only that, under the null hypothesis, each d[i] is as likely to be positive as negative.
Pure numpy/scipy and no CLI code, so the leaderboard and notebooks can import it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TESTS = ("t", "randomization")
TEST_NAMES = {"t": "paired t-test", "randomization": "paired randomisation test"}

_BATCH_CELLS = 1 << 21  # sign matrix entries per Monte Carlo batch (16 MiB as float64)


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired tests need two 1-d arrays of the same length (got {a.shape} and {b.shape})")
    return a - b


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test of mean(a - b) = 0: (t, p), the same as scipy.stats.ttest_rel.

    Where scipy returns nan for zero variance, this decides: no difference at all (a == b) gives
    (0.0, 1.0), a constant non-zero difference gives (+-inf, 0.0). Fewer than two pairs: (nan, nan).
    """
    d = _differences(a, b)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    mean = float(np.mean(d))
    var = float(np.var(d, ddof=1))
    if var == 0.0:
        if mean == 0.0:
            return 0.0, 1.0
        return math.copysign(math.inf, mean), 0.0
    from scipy.special import stdtr  # Student's t CDF, what scipy.stats.t.sf uses; lighter to import

    t = mean / math.sqrt(var / n)
    p = 2.0 * float(stdtr(n - 1, -abs(t)))
    return t, min(p, 1.0)


def paired_randomization_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000,
                              seed: int = 0) -> float:
    """Two-sided sign-flip test of mean(a - b) = 0; returns the p-value.

    When 2**n <= n_resamples every sign pattern is enumerated and p is exact (#extreme / 2**n, the
    observed pattern included). Otherwise n_resamples random patterns from
    numpy.random.default_rng(seed) give p = (1 + #extreme) / (1 + n_resamples), which is never 0 and
    is a valid p-value (Phipson & Smyth 2010). "Extreme": |sum of flipped d| >= |sum of d|, with a
    tiny tolerance so that patterns equal in exact arithmetic count as ties. This equals
    scipy.stats.permutation_test(..., permutation_type="samples") for exact enumeration.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive (got {n_resamples})")
    d = _differences(a, b)
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(float(d.sum()))
    if observed == 0.0:
        return 1.0
    threshold = observed - 1e-9 * float(np.abs(d).sum())
    if n < 63 and 2 ** n <= n_resamples:
        patterns = np.arange(2 ** n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
        signs = 1.0 - 2.0 * (patterns & 1)
        extreme = int(np.count_nonzero(np.abs(signs @ d) >= threshold))
        return extreme / 2 ** n
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_CELLS // n)
    extreme = 0
    for start in range(0, n_resamples, batch):
        rows = min(batch, n_resamples - start)
        # uniform random bits, 8 per random byte: much faster than integers(0, 2) per entry
        bits = np.unpackbits(rng.integers(0, 256, size=(rows, (n + 7) // 8), dtype=np.uint8), axis=1, count=n)
        signs = bits.astype(np.float64)
        signs *= -2.0
        signs += 1.0
        extreme += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
    return (1 + extreme) / (1 + n_resamples)


def paired_test(a: Sequence[float], b: Sequence[float], test: str = "t", *, n_resamples: int = 10000,
                seed: int = 0) -> float:
    """The p-value of the named paired test ("t" or "randomization")."""
    if test == "t":
        return paired_t_test(a, b)[1]
    if test == "randomization":
        return paired_randomization_test(a, b, n_resamples=n_resamples, seed=seed)
    raise ValueError(f"unknown test {test!r}; known: {', '.join(TESTS)}")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Sorted ascending, p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)): monotone in the
    raw p-values and capped at 1. Rejecting where adjusted <= alpha controls the family-wise error
    rate at alpha. NaN entries (cells with no test) stay NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted
