"""The four-split evaluation protocol: ground truth, query sample, per-query scores, run folders."""
