"""Exact top-k search: every backend and tile configuration equals the slow reference.

Most tests use small-integer embeddings: their inner products are exact in float32 whatever the kernel's
summation order, so ids AND scores must equal the reference bit for bit, and ties are everywhere
(the tie rule: equal scores in corpus order). Random float data is checked with a tolerance that only
lets near-equal scores (last-bit rounding differences between BLAS kernels) swap places.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcl_eval.retrieval import topk as retrieval
from gcl_eval.util.errors import GclError
from gcl_eval.retrieval.topk import _plan_blocks, exact_search_reference, search

# (backend, extra keyword arguments): every path the implementation has.
CONFIGS = [
    ("auto", {}),
    ("faiss", {}),
    ("torch", {}),
    ("torch", {"device": "cpu"}),
    ("torch", {"block_size": 1}),  # one corpus row per tile: the exact merge only
    ("torch", {"block_size": 7}),  # tiles narrower than k, ragged
    ("torch", {"block_size": 64}),  # group pre-selection per tile (small k), tiles merged
    ("torch", {"block_size": 100}),  # groups plus tail columns, ragged last tile
    ("torch", {"tiles": (1, 40)}),  # budget + block size: 1 query x 40 docs per tile
    ("torch", {"tiles": (3, 96)}),  # budget + block size: 3 queries x 96 docs per tile
    ("torch", {"budget_for": (40, 64)}),  # a budget alone, small enough to force narrow tiles
]
CONFIG_IDS = [f"{b}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for b, kw in CONFIGS]


def run(backend, kwargs, queries, corpus, k):
    """search() with CONFIGS' kwargs. {"tiles": (q, c)} becomes the block size and memory budget that
    make the planner choose tiles of q query rows x c corpus rows (checked); {"budget_for": (q, c)} only
    the budget (see test_budget_alone_narrows_tiles for the tiles it gives)."""
    kwargs = dict(kwargs)
    k_eff = min(k, corpus.shape[0])
    expected = None
    if "tiles" in kwargs:
        query_rows, corpus_rows = kwargs.pop("tiles")
        kwargs["block_size"] = corpus_rows
        kwargs["memory_budget_bytes"] = query_rows * retrieval._row_bytes(corpus_rows, k_eff)
        expected = (min(query_rows, len(queries)), min(corpus_rows, corpus.shape[0]))
    if "budget_for" in kwargs:
        query_rows, corpus_rows = kwargs.pop("budget_for")
        kwargs["memory_budget_bytes"] = query_rows * retrieval._row_bytes(corpus_rows, k_eff)
    planned = _plan_blocks(len(queries), corpus.shape[0], corpus.shape[1], k_eff, torch.device("cpu"),
                           kwargs.get("memory_budget_bytes"), kwargs.get("block_size"))
    if expected is not None:
        assert planned == expected
    return search(queries, corpus, k, backend=backend, **kwargs)


def integer_data(rng, num_queries, num_docs, dim, low=-2, high=3):
    """Small integers as float32: exact inner products, many ties."""
    queries = rng.integers(low, high, size=(num_queries, dim)).astype(np.float32)
    corpus = rng.integers(low, high, size=(num_docs, dim)).astype(np.float32)
    return queries, corpus


def assert_exact(got, ref):
    ids, scores = got
    ref_ids, ref_scores = ref
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.shape == ref_ids.shape and scores.shape == ref_scores.shape
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)


def assert_same_ranking(got, queries, corpus, k, atol=1e-5):
    """Float data: scores match the reference; ids match wherever the reference score is more than
    2*atol from its neighbours (only near-ties may swap); every id's score is its true score."""
    ids, scores = got
    ref_ids, ref_scores = exact_search_reference(queries, corpus, corpus.shape[0])
    width = min(k, corpus.shape[0])
    assert ids.shape == scores.shape == (queries.shape[0], width)
    np.testing.assert_allclose(scores, ref_scores[:, :width], rtol=0, atol=atol)
    true = np.einsum("qd,qkd->qk", queries.astype(np.float64), corpus[ids].astype(np.float64))
    np.testing.assert_allclose(scores, true, rtol=0, atol=atol)
    padded = np.concatenate(
        [np.full((len(ref_scores), 1), np.inf), ref_scores, np.full((len(ref_scores), 1), -np.inf)], axis=1
    )
    separated = (padded[:, :-2] - padded[:, 1:-1] > 2 * atol) & (padded[:, 1:-1] - padded[:, 2:] > 2 * atol)
    separated = separated[:, :width]
    np.testing.assert_array_equal(ids[separated], ref_ids[:, :width][separated])
    assert all(len(set(row)) == width for row in ids.tolist())


@pytest.mark.parametrize(("backend", "kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize(
    ("num_queries", "num_docs", "dim", "k"),
    [(37, 500, 8, 10), (5, 300, 4, 40), (1, 200, 6, 1), (9, 130, 3, 130), (6, 50, 5, 80), (12, 700, 2, 25)],
)
def test_integer_data_equals_reference(backend, kwargs, num_queries, num_docs, dim, k):
    rng = np.random.default_rng(num_queries * 1000 + num_docs + k)
    queries, corpus = integer_data(rng, num_queries, num_docs, dim)
    assert_exact(run(backend, kwargs, queries, corpus, k), exact_search_reference(queries, corpus, k))


@pytest.mark.parametrize(("backend", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_duplicated_rows_ties_straddle_k(backend, kwargs):
    """Blocks of identical rows, shuffled: tie groups larger than faiss's extra fetch and than a tile,
    cut by the k-th place, spread over many tiles."""
    rng = np.random.default_rng(3)
    distinct = rng.integers(-3, 4, size=(6, 8)).astype(np.float32)
    corpus = distinct[rng.integers(0, len(distinct), size=900)]
    queries = rng.integers(-3, 4, size=(15, 8)).astype(np.float32)
    for k in (1, 10, 150, 899, 900, 1000):
        assert_exact(run(backend, kwargs, queries, corpus, k), exact_search_reference(queries, corpus, k))


@pytest.mark.parametrize(("backend", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_all_scores_equal_gives_corpus_order(backend, kwargs):
    corpus = np.ones((300, 4), dtype=np.float32)
    queries = np.ones((3, 4), dtype=np.float32)
    ids, scores = run(backend, kwargs, queries, corpus, 120)
    np.testing.assert_array_equal(ids, np.tile(np.arange(120), (3, 1)))
    assert (scores == 4.0).all()


@pytest.mark.parametrize(("backend", "kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("direction", [1, -1])
def test_monotone_scores(backend, kwargs, direction):
    """Scores rising along the corpus (each tile's top-k displaces the earlier tiles' in the merge) and
    falling (later tiles contribute nothing), with every score three times."""
    base = np.arange(600, dtype=np.float32) // 3  # each score appears three times
    corpus = np.stack([base * direction, np.ones_like(base)], axis=1)
    queries = np.array([[1.0, 0.0], [1.0, 5.0], [-1.0, 0.0]], dtype=np.float32)
    for k in (1, 2, 50, 301):
        assert_exact(run(backend, kwargs, queries, corpus, k), exact_search_reference(queries, corpus, k))


@pytest.mark.parametrize(("backend", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_random_float_data(backend, kwargs):
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((23, 32), dtype=np.float32)
    corpus = rng.standard_normal((1000, 32), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for k in (1, 17, 100):
        assert_same_ranking(run(backend, kwargs, queries, corpus, k), queries, corpus, k)


@pytest.mark.parametrize("data", ["integer", "float"])
@pytest.mark.parametrize(("rows", "width", "k"), [(7, 5000, 10), (3, 1000, 1), (5, 997, 12), (4, 3000, 300)])
def test_group_preselection_equals_plain_topk(monkeypatch, data, rows, width, k):
    """_tile_topk's group-maximum shortcut (with its tail columns and its full-row fallback when group
    maxima tie at the k-th place) gives the same top-k, in the same order, as the reference."""
    rng = np.random.default_rng(rows * width + k)
    if data == "integer":
        tile = rng.integers(-4, 5, size=(rows, width)).astype(np.float32)
    else:
        tile = rng.standard_normal((rows, width), dtype=np.float32)
    assert retrieval._group_size(width, k) > 1
    full_rows = []
    original = retrieval._topk_columns

    def spy(values, k_, **kwargs):
        full_rows.append(values.shape == (1, width))
        return original(values, k_, **kwargs)

    monkeypatch.setattr(retrieval, "_topk_columns", spy)
    scores, ids = retrieval._tile_topk(torch.from_numpy(tile), k, 1000)
    assert any(full_rows) == (data == "integer")  # group maxima tie at the cut only in integer data
    ref_ids, ref_scores = exact_search_reference(np.eye(rows, dtype=np.float32), tile.T.copy(), k)
    ranked_scores, ranked_ids = retrieval._order_ties(scores, ids)
    np.testing.assert_array_equal(ranked_ids.numpy(), ref_ids + 1000)
    np.testing.assert_array_equal(ranked_scores.numpy(), ref_scores)


def test_order_ties_sorts_only_unsettled_rows():
    scores = torch.tensor([[5.0, 4.0, 3.0], [2.0, 2.0, 1.0], [1.0, 3.0, 3.0]])
    ids = torch.tensor([[9, 1, 4], [7, 3, 8], [0, 6, 2]])
    ranked_scores, ranked_ids = retrieval._order_ties(scores.clone(), ids.clone())
    assert ranked_ids.tolist() == [[9, 1, 4], [3, 7, 8], [2, 6, 0]]
    assert ranked_scores.tolist() == [[5.0, 4.0, 3.0], [2.0, 2.0, 1.0], [3.0, 3.0, 1.0]]


def test_faiss_research_when_tie_runs_past_fetch():
    """A tie group much larger than k + the extra fetch at the k-th place: faiss must search again."""
    corpus = np.zeros((2000, 3), dtype=np.float32)
    corpus[::7, 0] = 1.0  # 286 rows score 1, the rest 0
    queries = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    for k in (5, 300, 1500):
        assert_exact(search(queries, corpus, k, backend="faiss"), exact_search_reference(queries, corpus, k))


def test_k_larger_than_corpus_and_shapes():
    rng = np.random.default_rng(0)
    queries, corpus = integer_data(rng, 4, 6, 3)
    for backend in ("auto", "faiss", "torch"):
        ids, scores = search(queries, corpus, 50, backend=backend)
        assert ids.shape == scores.shape == (4, 6)
        assert_exact((ids, scores), exact_search_reference(queries, corpus, 50))
        ids, scores = search(queries[:0], corpus, 3, backend=backend)
        assert ids.shape == scores.shape == (0, 3) and ids.dtype == np.int64 and scores.dtype == np.float32


def test_inputs_are_not_modified_and_readonly_ok():
    rng = np.random.default_rng(1)
    queries, corpus = integer_data(rng, 5, 100, 4)
    queries.setflags(write=False)
    corpus.setflags(write=False)
    before = corpus.copy()
    for backend in ("faiss", "torch"):
        assert_exact(search(queries, corpus, 7, backend=backend), exact_search_reference(queries, corpus, 7))
    np.testing.assert_array_equal(corpus, before)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(2)
    queries, corpus = integer_data(rng, 6, 200, 10)
    q_view, c_view = queries[:, ::2], corpus[::2, ::2]
    ref = exact_search_reference(np.ascontiguousarray(q_view), np.ascontiguousarray(c_view), 9)
    for backend in ("faiss", "torch"):
        assert_exact(search(q_view, c_view, 9, backend=backend, block_size=33), ref)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q, c: search(q, c, 0), "k must be at least 1"),
        (lambda q, c: search(q, c, -3), "k must be at least 1"),
        (lambda q, c: search(q, c, 2.5), "k must be an integer"),
        (lambda q, c: search(q, c, True), "k must be an integer"),
        (lambda q, c: search(q, c[:0], 3), "corpus is empty"),
        (lambda q, c: search(q, c[:, :3], 3), "dimension mismatch"),
        (lambda q, c: search(q.astype(np.float64), c, 3), "queries must be float32"),
        (lambda q, c: search(q, c.astype(np.float16), 3), "corpus must be float32"),
        (lambda q, c: search(q[0], c, 3), "2-D array"),
        (lambda q, c: search(q.tolist(), c, 3), "numpy array"),
        (lambda q, c: search(q[:, :0], c[:, :0], 3), "0 dimensions"),
        (lambda q, c: search(q, c, 3, backend="annoy"), "unknown search backend"),
        (lambda q, c: search(q, c, 3, memory_budget_bytes=0), "memory_budget_bytes must be a positive"),
        (lambda q, c: search(q, c, 3, block_size=-1), "block_size must be a positive"),
        (lambda q, c: search(q, c, 3, backend="torch", memory_budget_bytes=100), "too small for k=3"),
        (lambda q, c: search(q, c, 3, device="no-such-device"), "unknown device"),
        (lambda q, c: search(q, c, 3, device="meta"), "unsupported device"),
        (lambda q, c: exact_search_reference(q, c, 0), "k must be at least 1"),
        (lambda q, c: exact_search_reference(q, c[:0], 1), "corpus is empty"),
    ],
)
def test_bad_input_raises_one_line_gcl_error(call, message):
    queries = np.ones((2, 4), dtype=np.float32)
    corpus = np.ones((5, 4), dtype=np.float32)
    with pytest.raises(GclError, match=message) as info:
        call(queries, corpus)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_rejected(bad):
    queries = np.ones((2, 4), dtype=np.float32)
    corpus = np.ones((5, 4), dtype=np.float32)
    corpus[3, 1] = bad
    with pytest.raises(GclError, match="corpus has NaN or infinite"):
        search(queries, corpus, 2)
    with pytest.raises(GclError, match="queries has NaN or infinite"):
        search(corpus, queries, 2)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_overflowing_scores_rejected(backend):
    queries = np.full((1, 4), 1e20, dtype=np.float32)
    corpus = np.full((3, 4), 1e20, dtype=np.float32)
    with pytest.raises(GclError, match="overflow float32"):
        search(queries, corpus, 1, backend=backend)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cuda_unavailable_is_one_line_error():
    queries = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(GclError, match="CUDA is not available"):
        search(queries, queries, 1, device="cuda")


def test_faiss_on_accelerator_rejected(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    queries = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(GclError, match="CPU only"):
        search(queries, queries, 1, backend="faiss", device="cuda")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize(
    ("num_queries", "num_docs", "dim", "k", "budget", "block_size"),
    [
        (2000, 1_000_000, 512, 1000, 512 * 2**20, None),
        (2000, 1_000_000, 512, 1000, 8 * 2**30, None),
        (10, 100, 8, 3, 5_000, None),
        (10, 100, 8, 3, 5_000, 20),
        (1, 10**9, 768, 10, 2**20, None),
        (100_000, 50, 16, 100, 2**22, None),
    ],
)
def test_plan_respects_budget(device, num_queries, num_docs, dim, k, budget, block_size):
    """The tile plan never exceeds the budget by its own accounting (score tile + workspace, plus the
    copied corpus and query tiles on an accelerator) and never exceeds the requested block size."""
    dev = torch.device(device)
    query_rows, corpus_rows = _plan_blocks(num_queries, num_docs, dim, k, dev, budget, block_size)
    assert 1 <= query_rows <= num_queries and 1 <= corpus_rows <= min(num_docs, block_size or num_docs)
    copies = 4 * dim if device != "cpu" else 0
    used = query_rows * (retrieval._row_bytes(corpus_rows, k) + copies) + copies * corpus_rows
    assert used <= budget


def test_budget_alone_narrows_tiles():
    """Without a block size, a small budget halves the corpus tile until the query rows fit; a budget too
    small for even that shrinks the tile to what one row allows."""
    cpu = torch.device("cpu")
    budget = 40 * retrieval._row_bytes(64, 10)
    assert _plan_blocks(37, 500, 8, 10, cpu, budget, None) == (37, 63)
    assert _plan_blocks(37, 10**6, 8, 10, cpu, 512 * 2**20, None)[1] == 10**6  # fits: one tile wide
    query_rows, corpus_rows = _plan_blocks(2000, 10**6, 512, 1000, cpu, 512 * 2**20, None)
    assert corpus_rows == 10**6 and query_rows >= retrieval.MIN_QUERY_ROWS


def test_group_preselection_ties_among_candidates():
    """Group maxima distinct at the cut but candidates tied at the k-th place: the tie must go to the
    lower column, although the candidates are laid out in group order, not column order."""
    rng = np.random.default_rng(7)
    tile = rng.integers(-60, 61, size=(400, 64)).astype(np.float32)
    for k in (2, 3, 5):
        assert retrieval._group_size(64, k) > 1
        scores, ids = retrieval._order_ties(*retrieval._tile_topk(torch.from_numpy(tile), k, 0))
        ref_ids, ref_scores = exact_search_reference(np.eye(len(tile), dtype=np.float32), tile.T.copy(), k)
        np.testing.assert_array_equal(ids.numpy(), ref_ids)
        np.testing.assert_array_equal(scores.numpy(), ref_scores)


def test_auto_rule_follows_faiss_blas_threshold():
    import faiss

    threshold = faiss.cvar.distance_compute_blas_threshold
    dim = 64
    many = -(-threshold // dim)  # the fewest queries that put faiss on its BLAS path
    assert retrieval.choose_backend(many, 10**6, dim, 10) == "faiss"
    assert retrieval.choose_backend(many - 1, 10**6, dim, 10) == "torch"
    assert retrieval.choose_backend(1, 10, dim, 10) == "torch"
    assert retrieval.choose_backend(many, 10**6, dim, 10, device="cuda") == "torch"


def test_auto_with_many_queries_equals_reference():
    """A shape where "auto" picks faiss: still the reference's ids and scores, ties included."""
    rng = np.random.default_rng(4)
    queries, corpus = integer_data(rng, 300, 120, 512)
    assert retrieval.choose_backend(300, 120, 512, 25) == "faiss"
    assert_exact(search(queries, corpus, 25), exact_search_reference(queries, corpus, 25))
