"""Ranking measures, TREC files and paired statistics: pure numpy, knows no model.

- definitions: the measures as named objects (`nDCG @ 10`, `RBP(p=0.9)`), the parsing of their names,
  PAPER_MEASURES (the paper's reported triple) and RUN_MEASURES (what an evaluation run computes);
- metrics: `evaluate` / `evaluate_arrays`, the two entry points and the metric profiles, built on
  flat (the form every measure is computed from), dict_runs (that form from qrels and run dicts) and
  kernels (one vectorised kernel per measure family);
- trec: TREC qrels and run files; stats: paired significance tests.
"""

from gcl_eval.measures.definitions import (
    ERR,
    KNOWN_MEASURES,
    MAP,
    MRR,
    P,
    PAPER_MEASURES,
    R,
    RBP,
    RUN_MEASURES,
    Measure,
    measure_names,
    nDCG,
    parse_measure,
    parse_measures,
)

__all__ = [
    "ERR", "KNOWN_MEASURES", "MAP", "MRR", "P", "PAPER_MEASURES", "R", "RBP", "RUN_MEASURES", "Measure",
    "measure_names", "nDCG", "parse_measure", "parse_measures",
]
