"""Exact inner-product top-k search over a dense corpus.

`search(queries, corpus, k)` returns, for every query, the k corpus rows with the largest inner product,
ranked by score descending. It is exact (no approximation) and its order is fully determined:

Retrieval order: score descending; among equal scores, corpus order (the lower corpus row index first).
This holds for every backend and every block configuration, including ties that straddle the k-th place:
the result is the first k rows of the whole corpus sorted by (-score, index), as
`exact_search_reference` computes it, where "score" is the float32 inner product the backend computed.
(The evaluation protocol keeps this choice of the top k and reorders tied documents inside each list by
document id: gcl_eval.protocol.ranking.)

Backends:
- "torch": matmul over (query block x corpus block) tiles into one reused score buffer. A plain
  full-row torch.topk costs about as much as the matmul at 1M documents, so each tile's top-k comes from
  a group-maximum pre-selection: the columns form groups of G, the k groups with the largest maxima
  hold the top-k, and the exact top-k runs over their k*G members only (`_tile_topk`). Corpus tiles are
  merged with an exact top-k; ties are settled by corpus index wherever they cut the k-th place
  (`_topk_columns`) and, at the end, inside the list (`_order_ties`). The same code runs on any torch
  device; on CUDA it is the GPU path.
- "faiss": faiss's exact flat inner-product kernel (the one behind IndexFlatIP.search, called without
  copying the corpus into an index), asked for a few more than k results; faiss breaks ties arbitrarily,
  so the rows are re-sorted by (-score, index) and a query whose tied scores may continue past what
  was fetched is searched again with a larger k until the tie is closed.
- "auto": on CPU, faiss once faiss's own BLAS path applies (many queries), torch below that; torch on
  GPU. `choose_backend` gives the rule and the measurement behind it.

Memory: the torch backend never holds more than one score tile (query block x corpus block float32)
plus its selection workspace, sized by `memory_budget_bytes` (bookkeeping in `_row_bytes`); the inputs
and the result (Q x k ids and scores) come on top. faiss works in its own fixed tiles (4096 x 1024).
Nothing ever holds a Q x N score matrix, and the corpus may be a read-only memory map (np.load with
mmap_mode="r"): it is read tile by tile, never copied.

Sharded search: `merge_topk` merges the top-k lists of disjoint corpus parts (each searched on its own,
ids shifted to corpus indices) into exactly the list one search over the whole corpus gives; sharded
evaluation under torchrun uses it (gcl_eval.retrieval.dense).

Cost of the input check: NaN/inf are rejected up front, one read of both inputs (~2% of a 2,000-query
search; for a handful of queries over a large corpus it is about as long as the search itself).

Scores are float32 inner products. Different kernels (faiss, MKL, cuBLAS, numpy) may round the same
inner product differently in the last bit, so two backends can order two near-equal scores differently;
on data whose inner products are exact in float32 (e.g. small integers) all backends agree bit for bit.
On CUDA the matmul follows torch's float32 precision setting (full float32 unless TF32 was enabled).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable

import numpy as np
import torch

from gcl_eval.util.distributed import resolve_device
from gcl_eval.util.errors import GclError

BACKENDS = ("auto", "faiss", "torch")

# Default widest tile (corpus rows): a 1M-document corpus is one tile, searched with one pass of group
# maxima per query row; wider corpora are cut into tiles whose top-k sets are merged.
DEFAULT_BLOCK_SIZE = 2**20
# Fewest query rows per tile worth having before the tile is made narrower (matmul efficiency).
MIN_QUERY_ROWS = 64
# Default working-memory budget on CPU and, on CUDA, the fraction of free memory it defaults to.
DEFAULT_CPU_BUDGET_BYTES = 512 * 2**20
CUDA_FREE_FRACTION = 0.5
# Bytes the budget reserves per query row and per unit of k for the top-k buffers (running set, merge
# input, top-k outputs and their ids).
_BYTES_PER_QUERY_PER_K = 160
# faiss is asked for k + _FAISS_EXTRA results so that a tie at the k-th place usually closes at once.
_FAISS_EXTRA = 64


def search(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    backend: str = "auto",
    device=None,
    memory_budget_bytes: int | None = None,
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, in retrieval order (score descending, then corpus index ascending).

    queries: Q x D float32, corpus: N x D float32 (finite). Returns (indices int64 Q x k', scores float32
    Q x k') with k' = min(k, N). backend: "auto" | "torch" | "faiss"; device: None (CPU) or a device
    name such as "cuda" or "mps" (torch backend only; see gcl_eval.util.distributed.resolve_device).
    memory_budget_bytes bounds the torch backend's working memory (default 512 MiB on CPU, half the free
    memory on CUDA); block_size caps the corpus rows per tile. Bad input raises GclError.
    """
    k = _check_inputs(queries, corpus, k)
    if backend not in BACKENDS:
        raise GclError(f"unknown search backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if memory_budget_bytes is not None and (
        not _is_int(memory_budget_bytes) or memory_budget_bytes <= 0
    ):
        raise GclError(f"memory_budget_bytes must be a positive integer, got {memory_budget_bytes!r}")
    if block_size is not None and (not _is_int(block_size) or block_size <= 0):
        raise GclError(f"block_size must be a positive integer, got {block_size!r}")
    dev = _resolve_device(device)
    if dev.type != "cpu" and backend == "faiss":
        raise GclError(f"backend 'faiss' runs on CPU only; use backend='torch' for device {dev}")
    _check_finite("queries", queries)
    _check_finite("corpus", corpus)

    num_docs = corpus.shape[0]
    k_eff = min(k, num_docs)
    if queries.shape[0] == 0:
        return np.zeros((0, k_eff), dtype=np.int64), np.zeros((0, k_eff), dtype=np.float32)
    if backend == "auto":
        backend = choose_backend(queries.shape[0], num_docs, queries.shape[1], k_eff, dev)
    if backend == "faiss":
        ids, scores = _faiss_search(queries, corpus, k_eff)
    else:
        ids, scores = _torch_search(queries, corpus, k_eff, dev, memory_budget_bytes, block_size)
    if not np.isfinite(scores).all():  # finite inputs, so only an overflow gets here
        raise GclError("inner products overflow float32: embedding values are too large")
    return ids, scores


def choose_backend(num_queries: int, num_docs: int, dim: int, k: int, device=None) -> str:
    """The backend "auto" uses for a shape: "faiss" on CPU once faiss takes its BLAS path (queries x dim
    >= faiss.cvar.distance_compute_blas_threshold, 128,000 in faiss 1.15: 250 queries at 512 dims),
    else "torch" (always on a GPU).

    Measured on the reference CPU (2 shared cores; benchmarks/bench_search.py, numbers and the runs
    behind this rule in benchmarks/results/search.md): below the threshold faiss scans the corpus once
    per query and the torch path is 2-10x faster. Above it both are matmul-bound and within ~20% of
    each other, the order changing from run to run with the load; faiss's small in-cache tiles and fused
    heap selection were the faster raw call at 2,000 x 1M x 512 in every run, while the torch path
    writes and re-reads every score tile through memory and slowed down most when the machine was busy.
    """
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type != "cpu":
        return "torch"
    import faiss

    return "faiss" if num_queries * dim >= faiss.cvar.distance_compute_blas_threshold else "torch"


def exact_search_reference(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obviously correct top-k: the full Q x N float32 score matrix, each row sorted by
    (-score, index) with np.lexsort. The oracle the tests compare every backend against."""
    k = _check_inputs(queries, corpus, k)
    scores = queries @ corpus.T
    index = np.broadcast_to(np.arange(corpus.shape[0], dtype=np.int64), scores.shape)
    order = np.lexsort((index, -scores), axis=-1)[:, : min(k, corpus.shape[0])]
    return order.astype(np.int64), np.take_along_axis(scores, order, axis=1).astype(np.float32)


def merge_topk(lists, k: int, *, block_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the union of several top-k lists, in retrieval order (score desc, then id asc).

    lists: (ids int64 Q x k_i, scores float32 Q x k_i) pairs, one per disjoint part of a corpus (e.g. a
    rank's shard), ids already global corpus indices and each list the part's own top-k under the same
    rule (what `search` returns for the part, ids shifted by its first row). The whole corpus's top-k is
    a subset of their union, so sorting the union by (-score, id) and keeping k gives exactly what one
    `search` over the whole corpus returns, ties at the k-th place included. Entries with score -inf
    are padding: they sort last and never reach the result while k <= the number of real entries.
    Queries are merged block_rows at a time (a Q x sum(k_i) sort key at most block_rows tall).

    When the lists come in corpus order (each in retrieval order, and every id of a list below every
    id of the next, as shards of consecutive rows are), equal scores already stand in id order, so a
    stable sort by score alone gives the same order as sorting by (score, id), several times faster
    (the sort finds the presorted runs); otherwise the lists are sorted by both keys.
    """
    k = _check_k(k)
    if not lists:
        raise GclError("merge_topk needs at least one top-k list")
    for ids, scores in lists:
        arrays = isinstance(ids, np.ndarray) and isinstance(scores, np.ndarray)
        if not arrays or ids.ndim != 2 or ids.shape != scores.shape:
            raise GclError("merge_topk: every list must be a pair of 2-D arrays (ids, scores) of one shape")
        if ids.shape[0] != lists[0][0].shape[0]:
            raise GclError(f"merge_topk: lists cover {ids.shape[0]} and {lists[0][0].shape[0]} queries")
    all_ids = np.concatenate([np.asarray(ids, dtype=np.int64) for ids, _ in lists], axis=1)
    all_scores = np.concatenate([np.asarray(scores, dtype=np.float32) for _, scores in lists], axis=1)
    width = min(k, all_ids.shape[1])
    out_ids = np.empty((all_ids.shape[0], width), dtype=np.int64)
    out_scores = np.empty((all_ids.shape[0], width), dtype=np.float32)
    presorted = _in_corpus_order(lists)
    for start in range(0, all_ids.shape[0], block_rows):
        ids, scores = all_ids[start : start + block_rows], all_scores[start : start + block_rows]
        if presorted:
            order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
        else:
            order = np.lexsort((ids, -scores), axis=-1)[:, :width]
        out_ids[start : start + block_rows] = np.take_along_axis(ids, order, axis=1)
        out_scores[start : start + block_rows] = np.take_along_axis(scores, order, axis=1)
    return out_ids, out_scores


def _in_corpus_order(lists) -> bool:
    """Every list in retrieval order (scores non-increasing, equal scores in ascending id order) and the
    lists' real ids (>= 0; padding is -1) in ascending, non-overlapping ranges, list after list."""
    previous_high = None
    for ids, scores in lists:
        if ids.shape[1] > 1:
            later_ids, earlier_ids = ids[:, 1:], ids[:, :-1]
            later, earlier = scores[:, 1:], scores[:, :-1]
            if not ((later < earlier) | ((later == earlier) & (later_ids >= earlier_ids))).all():
                return False
        real = ids[ids >= 0]
        if real.size:
            if previous_high is not None and real.min() <= previous_high:
                return False
            previous_high = real.max()
    return True


# ---------------------------------------------------------------------------------------------------
# Input checks


def _check_inputs(queries, corpus, k) -> int:
    """Shapes, dtypes and k (the checks search and the reference share); returns k as an int."""
    _check_matrix("queries", queries)
    _check_matrix("corpus", corpus)
    k = _check_k(k)
    if corpus.shape[0] == 0:
        raise GclError("corpus is empty: nothing to search (expected at least one document row)")
    if queries.shape[1] != corpus.shape[1]:
        raise GclError(
            f"dimension mismatch: queries have {queries.shape[1]} columns, corpus has {corpus.shape[1]}"
        )
    return k


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_k(k) -> int:
    if not _is_int(k):
        raise GclError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise GclError(f"k must be at least 1, got {k}")
    return int(k)


def _check_matrix(name: str, x) -> None:
    if not isinstance(x, np.ndarray):
        raise GclError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise GclError(f"{name} must be a 2-D array (rows x dimensions), got shape {x.shape}")
    if x.dtype != np.float32:
        raise GclError(f"{name} must be float32, got {x.dtype}")
    if x.shape[1] == 0:
        raise GclError(f"{name} has 0 dimensions; expected at least 1 column")


def _check_finite(name: str, x: np.ndarray) -> None:
    """Reject NaN/inf: NaN compares false with everything, so the ranking would be undefined.

    One read of x in cache-sized row chunks: a chunk's float32 sum is finite unless the chunk holds
    NaN/inf (or overflows, for values near 1e33: then the exact elementwise check decides).
    """
    rows_per_chunk = max(1, (512 * 1024) // (4 * x.shape[1]))
    for start in range(0, x.shape[0], rows_per_chunk):
        chunk = x[start : start + rows_per_chunk]
        if not math.isfinite(float(chunk.sum())) and not np.isfinite(chunk).all():
            raise GclError(f"{name} has NaN or infinite values; expected finite embeddings")


def _resolve_device(device) -> torch.device:
    """None: the CPU (a search runs on an accelerator only when asked to)."""
    return torch.device("cpu") if device is None else resolve_device(device)


# ---------------------------------------------------------------------------------------------------
# faiss backend


def _faiss_search(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's exact flat IP kernel, then the deterministic tie order.

    faiss returns an exact top-`fetch` by score, sorted by score, but orders (and cuts) ties arbitrarily.
    When the last fetched score is strictly below the k-th, every row scoring >= the k-th was fetched,
    so sorting the fetched rows by (-score, index) and keeping k is exact; a row whose first k + 1 scores
    strictly decrease has no tie to order and is kept as it is. Otherwise (a tie reaching the end of what
    was fetched) that query is searched again with twice the extra, until closed or the whole corpus is
    fetched; its result then comes from that one later call, so its scores are self-consistent.
    """
    import faiss

    num_docs = corpus.shape[0]
    xq = np.ascontiguousarray(queries)
    xb = np.ascontiguousarray(corpus)
    out_ids = np.empty((xq.shape[0], k), dtype=np.int64)
    out_scores = np.empty((xq.shape[0], k), dtype=np.float32)
    todo = np.arange(xq.shape[0])
    extra = _FAISS_EXTRA
    while todo.size:
        fetch = min(num_docs, k + extra)
        scores, ids = faiss.knn(xq[todo] if todo.size < xq.shape[0] else xq, xb, fetch,
                                metric=faiss.METRIC_INNER_PRODUCT)
        closed = np.ones(todo.size, dtype=bool) if fetch == num_docs else scores[:, fetch - 1] < scores[:, k - 1]
        last = min(k + 1, fetch)
        tied = (scores[:, 1:last] >= scores[:, : last - 1]).any(axis=1)
        if tied.any():
            rows = np.flatnonzero(tied & closed)
            order = np.lexsort((ids[rows], -scores[rows]), axis=-1)
            ids[rows] = np.take_along_axis(ids[rows], order, axis=1)
            scores[rows] = np.take_along_axis(scores[rows], order, axis=1)
        out_ids[todo[closed]] = ids[closed, :k]
        out_scores[todo[closed]] = scores[closed, :k]
        todo = todo[~closed]
        extra *= 2
    return out_ids, out_scores


# ---------------------------------------------------------------------------------------------------
# torch backend (CPU and GPU)


def _group_size(width: int, k: int) -> int:
    """Columns per group for the group-maximum pre-selection of a tile `width` wide, or 1 (plain top-k)
    when the tile is not much wider than k. About sqrt(width / k), which balances the two top-k calls it
    leaves (over width/G group maxima and over k*G candidates); a power of two, so that round widths
    split into whole groups."""
    if width < 8 * (k + 1):
        return 1
    return max(2, 1 << round(math.log2(math.sqrt(width / k))))


def _row_bytes(width: int, k: int) -> int:
    """Working bytes per query row of a tile `width` wide: the float32 scores, the group maxima, the
    k*G candidate scores (gathered, then joined with the tail), and the top-k buffers (group indices,
    running set, merge, output)."""
    group = _group_size(width, k)
    return 4 * width + 4 * (width // group) + 8 * (k * group + group) + _BYTES_PER_QUERY_PER_K * k


def _plan_blocks(
    num_queries: int, num_docs: int, dim: int, k: int, device: torch.device, budget: int | None,
    block_size: int | None,
) -> tuple[int, int]:
    """(query rows, corpus rows) per tile so that a tile and its workspace fit the budget.

    The widest tile allowed (block_size, else DEFAULT_BLOCK_SIZE) is preferred: one pass of group
    maxima and one small top-k per query row, instead of merging many narrow tiles. Without an explicit
    block_size it is halved until MIN_QUERY_ROWS query rows fit (the matmul slows down with fewer);
    with one, only until a single query row fits. Then as many query rows as fit.
    """
    copies = 4 * dim if device.type != "cpu" else 0  # on an accelerator, tiles of inputs are copies
    if budget is None:
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            budget = int(free * CUDA_FREE_FRACTION)
        else:
            budget = DEFAULT_CPU_BUDGET_BYTES
    corpus_rows = min(num_docs, block_size or DEFAULT_BLOCK_SIZE)

    def fits(query_rows: int, width: int) -> bool:
        return query_rows * (_row_bytes(width, k) + copies) + copies * width <= budget

    # Rows worth shrinking the tile for: no more than fit at all (the top-k buffers alone may limit them).
    want_rows = 1 if block_size else min(num_queries, MIN_QUERY_ROWS, budget // (_row_bytes(1, k) + 2 * copies))
    want_rows = max(1, want_rows)

    while corpus_rows > 1 and not fits(want_rows, corpus_rows):
        corpus_rows = (corpus_rows + 1) // 2
    if not fits(1, corpus_rows):
        raise GclError(
            f"memory_budget_bytes={budget} is too small for k={k}: one query row needs at least "
            f"{_row_bytes(1, k) + 2 * copies} bytes"
        )
    query_rows = (budget - copies * corpus_rows) // (_row_bytes(corpus_rows, k) + copies)
    return max(1, min(num_queries, query_rows)), corpus_rows


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    """A zero-copy CPU tensor view of x (read-only arrays are fine: search never writes its inputs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(x)


def _torch_search(
    queries: np.ndarray, corpus: np.ndarray, k: int, device: torch.device, budget: int | None,
    block_size: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Query blocks outside, corpus tiles inside (in corpus order); one reused score buffer per call."""
    num_queries, dim = queries.shape
    num_docs = corpus.shape[0]
    query_rows, corpus_rows = _plan_blocks(num_queries, num_docs, dim, k, device, budget, block_size)
    out_ids = np.empty((num_queries, k), dtype=np.int64)
    out_scores = np.empty((num_queries, k), dtype=np.float32)
    q_all = _as_tensor(queries)
    c_all = _as_tensor(corpus)
    buffer = torch.empty(query_rows * corpus_rows, dtype=torch.float32, device=device)
    with torch.inference_mode():
        for q_start in range(0, num_queries, query_rows):
            q_block = q_all[q_start : q_start + query_rows].to(device)
            rows = q_block.shape[0]
            best_scores = best_ids = None  # top-k of the tiles seen so far (see _tile_topk)
            for c_start in range(0, num_docs, corpus_rows):
                c_block = c_all[c_start : c_start + corpus_rows].to(device)
                tile = buffer[: rows * c_block.shape[0]].view(rows, c_block.shape[0])
                torch.mm(q_block, c_block.T, out=tile)
                tile_scores, tile_ids = _tile_topk(tile, k, c_start)
                if best_scores is None:
                    best_scores, best_ids = tile_scores, tile_ids
                else:
                    merged_ids = torch.cat([best_ids, tile_ids], dim=1)
                    best_scores, columns = _topk_columns(
                        torch.cat([best_scores, tile_scores], dim=1), k, row_ids=merged_ids.__getitem__
                    )
                    best_ids = merged_ids.gather(1, columns)
            scores_k, ids_k = _order_ties(best_scores, best_ids)
            out_ids[q_start : q_start + rows] = ids_k.cpu().numpy()
            out_scores[q_start : q_start + rows] = scores_k.cpu().numpy()
    return out_ids, out_scores


def _order_ties(scores: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final retrieval order from a top-k whose scores are (mostly) descending already.

    A row whose scores strictly decrease is in its only possible order. The others (equal scores, whose
    order torch.topk leaves arbitrary, or a row rebuilt by a tie fix) are sorted by id, then stably by
    score descending.
    """
    unsettled = torch.nonzero((scores[:, 1:] >= scores[:, :-1]).any(dim=1)).flatten()
    if unsettled.numel():
        sub_scores, sub_ids = scores[unsettled], ids[unsettled]
        by_id = torch.argsort(sub_ids, dim=1)
        sub_ids, sub_scores = sub_ids.gather(1, by_id), sub_scores.gather(1, by_id)
        by_score = torch.sort(sub_scores, dim=1, descending=True, stable=True).indices
        scores[unsettled] = sub_scores.gather(1, by_score)
        ids[unsettled] = sub_ids.gather(1, by_score)
    return scores, ids


def _tile_topk(tile: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top-k of each row of a score tile under (score desc, column asc), as new (scores,
    ids) tensors with ids = offset + column; scores descending except among ties (see _order_ties).

    A full top-k over every score costs about as much as the matmul, so the columns are put in groups
    of G (group j = columns j, W + j, 2W + j, ... for W = width // G groups: the maximum over a group is
    an elementwise maximum of G contiguous slices) and only the k groups with the largest maxima are
    searched: an entry outside them is below the k-th largest group maximum, hence below k entries (one
    per chosen group), so it is not in the top-k. That needs the (k+1)-th group maximum strictly below
    the k-th; a row where they tie (rare on real data) is searched in full. The last width % G columns
    are always candidates.
    """
    rows, width = tile.shape
    members = _group_size(width, k)  # G, columns per group
    if members == 1:
        scores, columns = _topk_columns(tile, k)
        return scores, columns + offset
    groups = width // members  # W
    main = groups * members
    slices = tile[:, :main].view(rows, members, groups)  # slices[:, m, j] = column m * W + j
    top_maxima, chosen = torch.topk(slices.amax(dim=1), k + 1, dim=1, largest=True, sorted=True)
    chosen = chosen[:, :k]
    # Candidate position m * k + i holds column m * W + chosen[i]; the tail columns follow.
    candidates = slices.gather(2, chosen[:, None, :].expand(rows, members, k)).view(rows, members * k)
    if main < width:
        candidates = torch.cat([candidates, tile[:, main:]], dim=1)
    slice_starts = torch.arange(members, device=tile.device) * groups
    tail_columns = torch.arange(main, width, device=tile.device)

    def candidate_columns(row: int) -> torch.Tensor:
        """Tile columns of one row's candidates, for the tie fix (ties go to the lower column)."""
        return torch.cat([(slice_starts[:, None] + chosen[row][None, :]).flatten(), tail_columns])

    scores, positions = _topk_columns(candidates, k, row_ids=candidate_columns)
    slice_index = positions.div(k, rounding_mode="floor")
    ids = chosen.gather(1, positions % k).add_(slice_index.mul_(groups)).add_(offset)
    if main < width:
        ids = torch.where(positions >= members * k, positions + (main - members * k + offset), ids)
    maxima_tied = top_maxima[:, k] == top_maxima[:, k - 1]
    if bool(maxima_tied.any()):
        for row in torch.nonzero(maxima_tied).flatten().tolist():
            row_scores, row_columns = _topk_columns(tile[row : row + 1], k)
            scores[row], ids[row] = row_scores[0], row_columns[0] + offset
    return scores, ids


def _topk_columns(
    values: torch.Tensor, k: int, *, row_ids: Callable[[int], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k best entries under (value desc, id asc), as (values, columns); values descending
    except among ties (see _order_ties).

    row_ids(row) gives the ids of a row's entries (distinct); None means id = column. torch.topk is
    exact on values but cuts ties arbitrarily, so it is asked for k + 1: when the (k+1)-th value is below
    the k-th, its first k are the answer; otherwise (a tie across the cut) that row is chosen explicitly:
    everything above the k-th value, then the lowest ids among those equal to it.
    """
    rows, width = values.shape
    if width <= k:
        return values.clone(), torch.arange(width, device=values.device).expand(rows, width).clone()
    top_values, top_columns = torch.topk(values, k + 1, dim=1, largest=True, sorted=True)
    cut_tied = top_values[:, k] == top_values[:, k - 1]
    top_values, columns = top_values[:, :k], top_columns[:, :k]
    if bool(cut_tied.any()):
        for row in torch.nonzero(cut_tied).flatten().tolist():
            kth = top_values[row, k - 1].clone()
            row_values = values[row]
            above = torch.nonzero(row_values > kth).flatten()
            tied = torch.nonzero(row_values == kth).flatten()  # ascending columns
            if row_ids is not None:
                tied = tied[torch.argsort(row_ids(row)[tied])]
            row_columns = torch.cat([above, tied[: k - above.numel()]])
            columns[row] = row_columns
            top_values[row] = row_values[row_columns]
    return top_values, columns
