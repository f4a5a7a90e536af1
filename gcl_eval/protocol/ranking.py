"""The protocol's tie rule: how a retriever's top-k becomes the ranked list that is scored and written.

Each query's retrieved documents are ordered by score descending and, among equal scores, by document
id descending, comparing the ids as strings (code point by code point, which for UTF-8 text is
trec_eval's strcmp on the docno). That is the order in which trec_eval, and pytrec_eval with it, reads
a run with tied scores, so the reference code's nDCG@10 (through pytrec_eval) and its ERR and RBP
loops (a stable sort of the retrieval dict, which keeps this order) see one ranking, and so does any
IR tool that reads the written run file.

Only the order inside the list follows the rule: which documents make the top k when a tie straddles
the k-th place is the retriever's choice (the dense top-k kernel and BM25 keep the lower corpus row).
"""

from __future__ import annotations

import numpy as np

TIE_RULE = "score desc, doc id desc"
"""result.json's name for the rule (protocol "ties")."""


def rank_retrieved(indices: np.ndarray, scores: np.ndarray, corpus_ids) -> tuple[np.ndarray, np.ndarray]:
    """Each row of (corpus indices, scores) ordered by the tie rule; -1 (nothing retrieved) goes last.

    Rows already strictly descending in score (most dense rows) are returned as they are; the others
    are sorted by (score descending, document id descending).
    """
    indices, scores = np.asarray(indices), np.asarray(scores)
    valid = indices >= 0
    key = np.where(valid, -scores.astype(np.float64), np.inf)  # ascending key = best first, padding last
    unordered = ((key[:, 1:] <= key[:, :-1]) & valid[:, 1:]).any(axis=1)  # a tie, or out of order
    if not unordered.any():
        return indices, scores
    rows = np.flatnonzero(unordered)
    sub_indices, sub_valid = indices[rows], valid[rows]
    id_rank = np.where(sub_valid, _id_ranks(sub_indices, sub_valid, corpus_ids), 0)
    order = np.lexsort((-id_rank, key[rows]), axis=-1)
    indices, scores = indices.copy(), scores.copy()
    indices[rows] = np.take_along_axis(sub_indices, order, axis=1)
    scores[rows] = np.take_along_axis(scores[rows], order, axis=1)
    return indices, scores


def _id_ranks(indices: np.ndarray, valid: np.ndarray, corpus_ids) -> np.ndarray:
    """Each valid position's rank of its document id among the retrieved ids, as strings, ascending."""
    used = np.unique(indices[valid])
    ids = np.asarray(corpus_ids, dtype=object)[used].astype(str)  # numpy compares str by code point
    by_id = np.argsort(ids, kind="stable")
    rank_of_used = np.empty(len(used), dtype=np.int64)
    rank_of_used[by_id] = np.arange(len(used))
    return rank_of_used[np.searchsorted(used, np.where(valid, indices, used[0]))]
