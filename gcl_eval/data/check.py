"""Validating a Dataset's quadruple structure and summarising it per split.

Checks: every split has pairs; every pair's document is in its split's corpus; no eval query
(novel_query, zero_shot) is also a train query (in_domain, novel_corpus); no document is in both
corpora; document ids are unique; with check_images, every image reference resolves.
The first violation is raised as a one-line DataError.
"""

from __future__ import annotations

from gcl_eval.data.dataset import CORPORA, EVAL_QUERY_SPLITS, SPLITS, TRAIN_QUERY_SPLITS, Dataset
from gcl_eval.data.pairs import member_mask
from gcl_eval.util.errors import DataError


def check_dataset(dataset: Dataset, *, check_images: bool = False) -> dict:
    """{"splits": {split: {"pairs", "queries", "docs", "corpus", "corpus_size"}}} or a DataError.

    Splits appear in SPLITS order; a one-split dataset (BEIR) reports its one split.
    """
    splits = [s for s in SPLITS if s in dataset.pairs] + [s for s in dataset.pairs if s not in SPLITS]
    if not splits:
        raise DataError(f"dataset {dataset.name!r} has no split")
    for name, docs in dataset.corpora.items():
        if not docs.ids.is_unique:
            dup = docs.ids[docs.ids.duplicated()][0]
            raise DataError(f"{name}: document {dup!r} appears more than once; expected unique ids")
    summary = {}
    for split in splits:
        pairs = dataset.pairs[split]
        corpus = dataset.split_corpus.get(split)
        if corpus not in dataset.corpora:
            raise DataError(f"split {split} searches {corpus!r}, which the dataset does not have")
        if pairs.empty:
            raise DataError(f"split {split} is empty; expected at least one (query, document) pair")
        docs = dataset.corpora[corpus]
        outside = ~member_mask(pairs["doc_id"], docs.ids)
        if outside.any():
            row = int(outside.nonzero()[0][0])
            raise DataError(f"split {split} row {row + 1}: document {pairs['doc_id'].iloc[row]!r} is not in "
                            f"{corpus}, the corpus this split searches")
        summary[split] = {
            "pairs": int(len(pairs)),
            "queries": int(pairs["query_id"].nunique()),
            "docs": int(pairs["doc_id"].nunique()),
            "corpus": corpus,
            "corpus_size": int(len(docs)),
        }
    _check_query_sides(dataset)
    _check_corpora_disjoint(dataset)
    if check_images:
        for name in sorted(dataset.corpora):
            _check_images(dataset, name)
    return {"splits": summary}


def _check_query_sides(dataset: Dataset) -> None:
    train = {s: dataset.pairs[s]["query_id"].unique() for s in TRAIN_QUERY_SPLITS if s in dataset.pairs}
    for split in EVAL_QUERY_SPLITS:
        if split not in dataset.pairs:
            continue
        for train_split, ids in train.items():
            shared = member_mask(dataset.pairs[split]["query_id"], ids)
            if shared.any():
                row = int(shared.nonzero()[0][0])
                query = dataset.pairs[split]["query"].iloc[row]
                raise DataError(f"split {split} row {row + 1}: eval query {query!r} "
                                f"(query_id {dataset.pairs[split]['query_id'].iloc[row]!r}) is also a train query "
                                f"of {train_split}; expected eval and train queries to be disjoint")


def _check_corpora_disjoint(dataset: Dataset) -> None:
    if not all(name in dataset.corpora for name in CORPORA):
        return
    first, second = (dataset.corpora[name].ids for name in CORPORA)
    both = member_mask(second, first)
    if both.any():
        raise DataError(f"document {second[both][0]!r} is in both {CORPORA[0]} and {CORPORA[1]}; "
                        "expected disjoint corpora")


def _check_images(dataset: Dataset, name: str) -> None:
    docs = dataset.corpora[name]
    missing = [(doc_id, ref) for doc_id, ref in zip(docs.ids, docs.image_refs())
               if ref is not None and not docs.images.exists(ref)]
    if missing:
        doc_id, ref = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{name}: image of document {doc_id!r} not found: {ref}{more}")
