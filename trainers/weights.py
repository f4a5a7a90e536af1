"""Score-to-weight (STW) functions: a ranking score s in 1..s_max becomes a pair weight w (docs/training.md).

Position p = s_max + 1 - s (p = 1 is the top result). Every constant that the paper does not state is a
named keyword parameter with the reconstruction as its default, so a run records what it used:

- ``constant``:     w = c                              (c = 1 reproduces CLIP)
- ``linear``:       w = s, or s / s_max with normalise=True
- ``inverse``:      w = 1 / (s_max - s + c)            (c = 1 gives 1/p, the paper's default)
- ``inverse_sqrt``: w = 1 / sqrt(s_max - s + c)
- ``piecewise``:    w = 1 for p <= top, else a decay of the positions below the top:
                    "inverse" 1/(p - top + 1) (default), "inverse_sqrt" 1/sqrt(p - top + 1),
                    "linear" (s_max + 1 - p) / (s_max + 1 - top) (from 1 at p = top down to
                    1/(s_max + 1 - top) at p = s_max).

Inputs may be numpy arrays (or anything numpy accepts) or torch tensors; the result is the same kind,
floating point (numpy float64; a floating tensor keeps its dtype, an integer tensor becomes the default
float dtype). Bad input raises :class:`gcl_eval.util.errors.GclError` with a one-line message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gcl_eval.util.errors import GclError

STW_NAMES = ("constant", "linear", "inverse", "inverse_sqrt", "piecewise")
PIECEWISE_DECAYS = ("inverse", "inverse_sqrt", "linear")

# Known keyword parameters of each function and their defaults.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "constant": {"c": 1.0},
    "linear": {"normalise": False},
    "inverse": {"c": 1.0},
    "inverse_sqrt": {"c": 1.0},
    "piecewise": {"top": 10, "decay": "inverse"},
}


def score_to_weight(name: str, scores, s_max: float = 100, **params):
    """Weights w = STW(s) for ranking scores s in 1..s_max; same container kind as ``scores``, float."""
    if name not in _DEFAULTS:
        raise GclError(f"unknown score-to-weight function {name!r}; known: {', '.join(STW_NAMES)}")
    unknown = sorted(set(params) - set(_DEFAULTS[name]))
    if unknown:
        known = ", ".join(_DEFAULTS[name]) or "none"
        raise GclError(f"unknown parameter(s) {', '.join(unknown)} for score-to-weight {name!r}; known: {known}")
    p = {**_DEFAULTS[name], **params}
    s_max = _check_s_max(s_max)

    is_torch, s = _as_float_array(scores)
    _check_range(s, s_max, is_torch)
    xp = _Ops(is_torch)

    if name == "constant":
        c = _positive_number("c", p["c"], name)
        return xp.full_like(s, c)
    if name == "linear":
        return s / s_max if p["normalise"] else s * 1.0
    if name == "inverse":
        c = _positive_number("c", p["c"], name)
        return 1.0 / (s_max - s + c)
    if name == "inverse_sqrt":
        c = _positive_number("c", p["c"], name)
        return 1.0 / xp.sqrt(s_max - s + c)
    # piecewise
    top = _positive_number("top", p["top"], name)
    if top > s_max:
        raise GclError(f"piecewise top={top} is larger than s_max={s_max}")
    decay = p["decay"]
    if decay not in PIECEWISE_DECAYS:
        raise GclError(f"unknown piecewise decay {decay!r}; known: {', '.join(PIECEWISE_DECAYS)}")
    pos = s_max + 1 - s
    # Below the top the tail is evaluated with pos clamped to >= top, so no branch divides by <= 0.
    tail_pos = xp.maximum(pos, top)
    if decay == "inverse":
        tail = 1.0 / (tail_pos - top + 1)
    elif decay == "inverse_sqrt":
        tail = 1.0 / xp.sqrt(tail_pos - top + 1)
    else:  # linear
        tail = (s_max + 1 - tail_pos) / (s_max + 1 - top)
    return xp.where(pos <= top, xp.ones_like(s), tail)


def _check_s_max(s_max) -> float:
    try:
        value = float(s_max)
    except (TypeError, ValueError):
        raise GclError(f"s_max must be a number >= 1, got {s_max!r}") from None
    if not math.isfinite(value) or value < 1:
        raise GclError(f"s_max must be a number >= 1, got {s_max!r}")
    return value


def _positive_number(key: str, value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GclError(f"score-to-weight {name!r} parameter {key} must be a finite number, got {value!r}")
    if value <= 0:
        raise GclError(f"score-to-weight {name!r} parameter {key} must be > 0, got {value!r}")
    return float(value)


def _as_float_array(scores):
    """(is_torch, floating array/tensor) without copying more than needed."""
    try:
        import torch
    except ImportError:  # numpy-only use
        torch = None
    if torch is not None and isinstance(scores, torch.Tensor):
        if not scores.is_floating_point():
            scores = scores.to(torch.get_default_dtype())
        return True, scores
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise GclError(f"scores must be numbers, got {type(scores).__name__}") from None
    return False, arr


def _check_range(s, s_max: float, is_torch: bool) -> None:
    if s.numel() == 0 if is_torch else s.size == 0:
        return
    if is_torch:
        import torch

        bad = torch.isnan(s) | (s < 1) | (s > s_max)
        n_bad = int(bad.sum())
        first = s[bad][0].item() if n_bad else None
    else:
        bad = np.isnan(s) | (s < 1) | (s > s_max)
        n_bad = int(bad.sum())
        first = s[bad].flat[0].item() if n_bad else None
    if n_bad:
        raise GclError(f"scores must lie in 1..{s_max:g}: {n_bad} value(s) outside, e.g. {first!r}")


class _Ops:
    """The few array operations the formulas need, for numpy or torch."""

    def __init__(self, is_torch: bool):
        if is_torch:
            import torch

            self.sqrt = torch.sqrt
            self.where = torch.where
            self.ones_like = torch.ones_like
            self.full_like = torch.full_like
            self.maximum = lambda a, b: torch.clamp(a, min=b)
        else:
            self.sqrt = np.sqrt
            self.where = np.where
            self.ones_like = np.ones_like
            self.full_like = np.full_like
            self.maximum = np.maximum
