"""One pass of Dask over the stored rows: exact top-k, per-provider top-k and credit.

Each row chunk is decoded, multiplied by the preconditioned queries and reduced to small
partial results, which a tree of merges combines. Only a few chunks are in memory at once, so
peak memory is about (tasks in flight) x chunk_rows x (K + n_queries) x 4 bytes, independent of
the store's size, plus the O(N) per-example mean scores kept for the distribution chart.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np


@dataclass
class ScanResult:
    top_scores: np.ndarray  # queries x k, best first
    top_rows: np.ndarray  # queries x k, global row indices
    provider_top_scores: np.ndarray  # queries x providers x k (-inf where a provider has fewer)
    provider_top_rows: np.ndarray  # queries x providers x k (-1 where empty)
    credit: np.ndarray  # queries x providers, float64 sums of scores
    row_mean_scores: np.ndarray  # rows, each example's score averaged over the queries


def _top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query (row of scores), the k best (score desc, then row index asc) of the columns."""
    n = scores.shape[1]
    if n == 0:
        empty = np.full((scores.shape[0], k), -np.inf), np.full((scores.shape[0], k), -1, dtype=np.int64)
        return empty
    # Ties broken by the smaller row index so the result is the same for any chunking.
    order = np.lexsort((np.broadcast_to(rows, scores.shape), -scores), axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_rows = rows[order]
    pad = k - top_scores.shape[1]
    if pad > 0:
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_rows = np.pad(top_rows, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores, top_rows


def _score_block(block, codes, scale, start, queries, n_providers, k):
    scores = queries @ block.astype(queries.dtype, copy=False).T
    if scale is not None:
        scores = scores * scale[None, :]
    scores = scores.astype(np.float64)
    rows = np.arange(start, start + block.shape[0], dtype=np.int64)
    top = _top_k(scores, rows, k)
    p_scores = np.full((queries.shape[0], n_providers, k), -np.inf)
    p_rows = np.full((queries.shape[0], n_providers, k), -1, dtype=np.int64)
    credit = np.zeros((queries.shape[0], n_providers))
    for p in np.unique(codes):
        mine = codes == p
        p_scores[:, p], p_rows[:, p] = _top_k(scores[:, mine], rows[mine], k)
        credit[:, p] = scores[:, mine].sum(axis=1)
    return top, (p_scores, p_rows), credit, scores.mean(axis=0)


def _merge_top(a, b, k):
    scores = np.concatenate([a[0], b[0]], axis=-1)
    rows = np.concatenate([a[1], b[1]], axis=-1)
    # Empty slots (-inf, -1) sort last; ties again go to the smaller row index.
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=-1)[..., :k]
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(rows, order, axis=-1)


def _merge(a, b, k):
    return (
        _merge_top(a[0], b[0], k),
        _merge_top(a[1], b[1], k),
        a[2] + b[2],
        np.concatenate([a[3], b[3]]),
    )


def scan_scores(
    rows: da.Array,
    provider_codes: np.ndarray,
    n_providers: int,
    queries: np.ndarray,
    *,
    k: int = 10,
    row_scale: np.ndarray | None = None,
    dtype: np.dtype = np.float32,
    scheduler: str | None = "threads",
) -> ScanResult:
    """Score every row against every query in one chunked pass.

    `queries` are preconditioned query rows (queries x K); `row_scale`, when given, multiplies
    each row's scores (1/sqrt(self-influence) for relatif). `scheduler=None` uses the active
    Dask client (a distributed cluster), else the named local scheduler.
    """
    if rows.ndim != 2 or rows.numblocks[1] != 1:
        rows = rows.rechunk({1: -1})
    queries = np.ascontiguousarray(queries, dtype=dtype)
    if rows.shape[0] == 0:
        raise ValueError("the store has no rows to score")
    shared_queries = dask.delayed(queries, pure=True)  # one graph node, not one copy per chunk
    starts = np.cumsum((0,) + rows.chunks[0][:-1])
    partials = []
    for block, start, size in zip(rows.to_delayed().ravel(), starts, rows.chunks[0]):
        stop = start + size
        scale = None if row_scale is None else row_scale[start:stop]
        partials.append(
            dask.delayed(_score_block)(
                block, provider_codes[start:stop], scale, int(start), shared_queries, n_providers, k
            )
        )
    while len(partials) > 1:  # a balanced tree keeps every merge small
        partials = [
            dask.delayed(_merge)(partials[i], partials[i + 1], k) if i + 1 < len(partials) else partials[i]
            for i in range(0, len(partials), 2)
        ]
    (top, p_top, credit, means), = dask.compute(partials[0], scheduler=scheduler)
    return ScanResult(top[0], top[1], p_top[0], p_top[1], credit, means)
