"""Ranked datasets: the in-memory model, readers, writers, the split builder and the synthetic world."""

from gcl_eval.data.dataset import (
    CORPORA,
    SPLIT_CORPUS,
    SPLIT_STEMS,
    SPLITS,
    Dataset,
    Documents,
    ImageStore,
)

__all__ = ["CORPORA", "SPLITS", "SPLIT_CORPUS", "SPLIT_STEMS", "Dataset", "Documents", "ImageStore"]
