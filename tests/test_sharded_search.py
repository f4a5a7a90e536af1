"""Sharded exact search: merged per-shard top-k lists == one search over the whole corpus (ties at the
k-th place and across shard boundaries included); two gloo ranks of a DenseRetriever == one process,
with and without the embedding cache; cache entries are memory-mapped and written by rank 0 only.

The data are chosen so that every inner product is exact in float32 (halves and small integers), so
any two correct kernels agree bit for bit and every tie is a real tie."""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from gcl_eval.data.dataset import Documents, ImageStore, make_documents
from gcl_eval.retrieval.dense import CorpusShard, DenseRetriever, search_shards
from gcl_eval.retrieval.embedding_cache import EmbeddingCache
from gcl_eval.retrieval.fields import FieldWeights
from gcl_eval.retrieval.topk import exact_search_reference, merge_topk, search
from gcl_eval.util.errors import GclError

WORLD = 2
N_DOCS = 23
BATCH = 4  # 6 batches: rank 0 holds rows 0-11, rank 1 rows 12-22
TIED = range(9, 15)  # one vector for docs 9-14: a tie group across the shard boundary at row 12
KS = (1, 3, 5, 8, N_DOCS, 50)
TITLE = FieldWeights.of(title=1.0, image=0.0)


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """Rows with four entries of +-0.5 (norm exactly 1): inner products with integers are exact."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, dim), dtype=np.float32)
    for row in rows:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return rows


def _doc_vectors() -> np.ndarray:
    rows = _unit_rows(N_DOCS, 8, seed=3)
    rows[list(TIED)] = rows[TIED[0]]
    rows[20] = rows[0]  # another tie, one member in each shard
    return rows


def _query_vectors() -> np.ndarray:
    queries = np.random.default_rng(4).integers(-2, 3, size=(6, 8)).astype(np.float32)
    queries[0] = 2 * _doc_vectors()[TIED[0]]  # the tie group scores highest: k=3 cuts inside it
    queries[1] = 0  # every document ties
    return queries


class VectorEncoder:
    """A deterministic encoder: document "doc i" -> _doc_vectors()[i], query "q j" -> _query_vectors()[j]."""

    num_workers = 0
    batch_size = BATCH

    def fingerprint(self) -> str:
        return "vector-encoder-1"

    def encode_field(self, documents: Documents, field: str):
        assert field == "title"
        rows = [int(title.split()[1]) for title in documents.titles()]
        return _doc_vectors()[rows], np.ones(len(rows), dtype=bool)

    def encode_queries(self, texts):
        return _query_vectors()[[int(text.split()[1]) for text in texts]]


def _documents() -> Documents:
    table = make_documents([f"d{i:02d}" for i in range(N_DOCS)], [f"doc {i}" for i in range(N_DOCS)],
                           [None] * N_DOCS)
    return Documents(table, ImageStore())


QUERY_TEXTS = [f"q {j}" for j in range(len(_query_vectors()))]


# ----------------------------------------------------------------------------- merge_topk in one process


def _shard_lists(queries, corpus, k, bounds):
    lists = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            ids, scores = search(queries, corpus[lo:hi], min(k, corpus.shape[0]))
            lists.append((ids + lo, scores))
    return lists


@pytest.mark.parametrize("bounds", [(0, 12, 23), (0, 9, 12, 15, 23), (0, 1, 22, 23), (0, 23)],
                         ids=["two", "four", "singletons", "one"])
@pytest.mark.parametrize("k", KS)
def test_merged_shard_lists_equal_one_search(bounds, k):
    corpus, queries = _doc_vectors(), _query_vectors()
    merged = merge_topk(_shard_lists(queries, corpus, k, bounds), min(k, N_DOCS))
    whole = search(queries, corpus, k)
    reference = exact_search_reference(queries, corpus, k)
    for got, want, oracle in zip(merged, whole, reference):
        assert np.array_equal(got, want) and np.array_equal(got, oracle)


def test_a_tie_across_the_boundary_is_cut_by_corpus_index():
    corpus, queries = _doc_vectors(), _query_vectors()
    ids, _ = merge_topk(_shard_lists(queries, corpus, 3, (0, 12, 23)), 3)
    assert ids[0].tolist() == [9, 10, 11]  # 12-14 score the same, but come later in the corpus
    ids, _ = merge_topk(_shard_lists(queries, corpus, 5, (0, 12, 23)), 5)
    assert ids[1].tolist() == [0, 1, 2, 3, 4]  # all tied


def test_many_random_splits_with_many_ties():
    rng = np.random.default_rng(0)
    corpus = rng.integers(-2, 3, size=(500, 6)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(40, 6)).astype(np.float32)
    for trial in range(10):
        cuts = np.sort(rng.choice(np.arange(1, 500), size=trial + 1, replace=False))
        k = int(rng.integers(1, 120))
        merged = merge_topk(_shard_lists(queries, corpus, k, (0, *cuts.tolist(), 500)), k)
        for got, want in zip(merged, exact_search_reference(queries, corpus, k)):
            assert np.array_equal(got, want)


def test_lists_in_any_order_merge_the_same():
    """Shards in corpus order take the stable-sort-by-score path; any other order sorts by (score, id):
    both give the oracle's lists."""
    from gcl_eval.retrieval.topk import _in_corpus_order

    rng = np.random.default_rng(1)
    corpus = rng.integers(-2, 3, size=(300, 5)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(30, 5)).astype(np.float32)
    lists = _shard_lists(queries, corpus, 40, (0, 70, 71, 200, 300))
    want = exact_search_reference(queries, corpus, 40)
    assert _in_corpus_order(lists) and not _in_corpus_order(lists[::-1])
    for order in (lists, lists[::-1], [lists[2], lists[0], lists[3], lists[1]]):
        got = merge_topk(order, 40)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_padding_never_reaches_the_result_and_blocks_do_not_matter():
    corpus, queries = _doc_vectors(), _query_vectors()
    lists = _shard_lists(queries, corpus, 20, (0, 3, 23))  # the first shard has only 3 rows
    padded = [(np.pad(ids, ((0, 0), (0, 20 - ids.shape[1])), constant_values=-1),
               np.pad(scores, ((0, 0), (0, 20 - scores.shape[1])), constant_values=-np.inf)) for ids, scores in lists]
    want = search(queries, corpus, 20)
    for got in (merge_topk(padded, 20), merge_topk(padded, 20, block_rows=1)):
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("lists, k, message", [
    ([], 3, "at least one"),
    ([(np.zeros((2, 3), np.int64), np.zeros((2, 2), np.float32))], 3, "one shape"),
    ([(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32)),
      (np.zeros((3, 3), np.int64), np.zeros((3, 3), np.float32))], 3, "queries"),
    ([(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32))], 0, "at least 1"),
])
def test_merge_rejects_bad_lists(lists, k, message):
    with pytest.raises(GclError, match=message):
        merge_topk(lists, k)


def test_search_shards_without_torchrun_is_search():
    corpus, queries = _doc_vectors(), _query_vectors()
    got = search_shards(queries, CorpusShard(corpus, 0, N_DOCS), 5)
    want = search(queries, corpus, 5)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


# ----------------------------------------------------------------------------- the cache: mmap, rank 0 writes


def test_cached_corpus_is_memory_mapped_and_searches_the_same(tmp_path):
    retriever = DenseRetriever(VectorEncoder(), doc_weights=TITLE, cache=EmbeddingCache(tmp_path))
    first = retriever.search("in_domain", QUERY_TEXTS, "c", _documents(), 7)
    again = DenseRetriever(VectorEncoder(), doc_weights=TITLE, cache=EmbeddingCache(tmp_path))
    shard = again.corpus_shard("c", _documents(), TITLE)
    assert isinstance(shard.embeddings, np.memmap) and not shard.embeddings.flags.writeable
    second = again.search("in_domain", QUERY_TEXTS, "c", _documents(), 7)
    assert again.cache.stats.hits == 2 and again.cache.stats.misses == 0  # the corpus and the queries
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_only_rank_0_writes_cache_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cache = EmbeddingCache(tmp_path)
    array = cache.get_or_compute({"role": "test"}, lambda: np.ones((3, 2), np.float32))
    assert np.array_equal(array, np.ones((3, 2))) and not list(tmp_path.rglob("*.npy"))
    monkeypatch.setenv("RANK", "0")
    cache.get_or_compute({"role": "test"}, lambda: np.ones((3, 2), np.float32))
    assert len(list(tmp_path.rglob("*.npy"))) == 1


# ----------------------------------------------------------------------------- two gloo ranks


def _search_all(retriever) -> dict[str, np.ndarray]:
    out = {}
    for k in KS:
        ids, scores = retriever.search("in_domain", QUERY_TEXTS, "c", _documents(), k)
        out[f"ids{k}"], out[f"scores{k}"] = ids, scores
    return out


def _worker(rank, init_file, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        cache_root = os.path.join(out_dir, "cache")
        runs = {"nocache": DenseRetriever(VectorEncoder(), doc_weights=TITLE)}
        runs["miss"] = DenseRetriever(VectorEncoder(), doc_weights=TITLE, cache=EmbeddingCache(cache_root))
        results = {name: _search_all(retriever) for name, retriever in runs.items()}
        dist.barrier()  # rank 0 has written the entries
        hit = DenseRetriever(VectorEncoder(), doc_weights=TITLE, cache=EmbeddingCache(cache_root))
        results["hit"] = _search_all(hit)
        shard = hit.corpus_shard("c", _documents(), TITLE)
        flat = {f"{name}/{key}": value for name, arrays in results.items() for key, value in arrays.items()}
        flat["shard"] = np.array([shard.offset, len(shard.embeddings), isinstance(shard.embeddings, np.memmap),
                                  hit.cache.stats.hits, hit.cache.stats.misses])
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **flat)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, start_method="spawn")
    return tmp, [dict(np.load(tmp / f"rank{r}.npz")) for r in range(WORLD)]


@pytest.mark.parametrize("run", ["nocache", "miss", "hit"])
def test_two_ranks_return_what_one_process_returns(two_ranks, run):
    one = _search_all(DenseRetriever(VectorEncoder(), doc_weights=TITLE))
    for results in two_ranks[1]:
        for key, want in one.items():
            assert np.array_equal(results[f"{run}/{key}"], want), key
    ids, _ = exact_search_reference(_query_vectors(), _doc_vectors(), 3)
    assert one["ids3"][0].tolist() == ids[0].tolist() == [9, 10, 11]


def test_each_rank_maps_its_own_rows_and_rank_0_wrote_the_cache(two_ranks):
    tmp, results = two_ranks
    # (offset, rows, memory-mapped, hits, misses): batch-aligned shards, both mapped from the cache
    lookups = 1 + len(KS)  # the pooled corpus once, the queries at every search
    assert results[0]["shard"].tolist() == [0, 12, 1, lookups, 0]
    assert results[1]["shard"].tolist() == [12, 11, 1, lookups, 0]
    stored = sorted(np.load(path).shape for path in (tmp / "cache").rglob("*.npy"))
    assert stored == [(6, 8), (N_DOCS, 8), (N_DOCS, 8)]  # queries, the title field, the pooled corpus
