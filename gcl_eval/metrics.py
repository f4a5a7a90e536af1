"""The public entry point for scoring runs: ``evaluate`` and ``evaluate_arrays``.

The implementation lives in gcl_eval.measures; this module keeps the documented import path
``gcl_eval.metrics.evaluate`` stable for users' scripts.
"""

from gcl_eval.measures.metrics import evaluate, evaluate_arrays  # noqa: F401

__all__ = ["evaluate", "evaluate_arrays"]
