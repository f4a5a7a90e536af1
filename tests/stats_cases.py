"""Paired per-query-like scores for the significance-test tests and their scipy comparison."""

import numpy as np


def pairs(seed, n, shift, discrete=False):
    """Per-query-like scores: in [0, 1], optionally on a coarse grid so that many differences tie."""
    rng = np.random.default_rng(seed)
    a = rng.random(n)
    b = np.clip(a - shift + rng.normal(0, 0.2, n), 0, 1)
    if discrete:
        a, b = np.round(a * 4) / 4, np.round(b * 4) / 4
    return a, b


FIXED_INPUTS = [pairs(0, 10, 0.1), pairs(1, 30, 0.0), pairs(2, 200, 0.03), pairs(3, 57, -0.05, discrete=True),
                pairs(4, 2, 0.2), (np.array([0.1, 0.9, 0.4]), np.array([0.3, 0.2, 0.8]))]
