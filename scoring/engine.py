"""One pass over the stored rows: exact top-k overall and per provider, provider credit, mean scores.

The rows are cut into ranges of whole chunks, one Dask task each (threads, or the processes of a
`distributed` cluster: the same tasks either way). A task reads its chunks one at a time (a local
store's chunk files straight into reused buffers: storage/chunks.py) and scores each in blocks:
the block's rows are multiplied tile by tile, each tile small enough for the CPU cache and decoded
into float32 once for every query batch (for bfloat16 a copy that widens each code, nothing
else), into one buffer of the block's scores; then each reduction runs once over the block:
- per-provider top-k by threshold: a score enters only if it beats its (query, provider) list's
  current k-th, so after the first blocks almost nothing is sorted; a score is first compared
  with its query's lowest threshold over the providers, and only the few that pass with their
  own provider's; the overall top-k is the best k of the per-provider lists at the end;
- credit as one product, (providers x rows one-hot) @ scores, into a providers x queries sum;
- each row's mean over the queries.
Partial results of the tasks meet in a balanced tree of merges. Peak memory is about (tasks in
flight) x (one chunk + one tile + one block's scores), plus the per-row means (8 bytes a row) and
the small lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import dask
import numpy as np
import torch

from .topk import MAX_GROUPS, MAX_OFFSET, MAX_ROWS, GroupedTopK, decode, kth_scores

TASK_ROWS = 1 << 16
SCORE_BYTES = 4 << 20  # a block's float32 scores: rows x queries within this, at least one tile


def block_rows(options: ScanOptions, n_queries: int) -> int:
    """Rows whose scores are reduced together (top-k, credit, means): whole tiles, as many as keep
    their scores within SCORE_BYTES, and below the top-k's candidate offset limit."""
    tiles = max(1, SCORE_BYTES // (4 * n_queries * options.tile_rows))
    return min(tiles * options.tile_rows, max(options.tile_rows, MAX_OFFSET // options.tile_rows * options.tile_rows))


@dataclass
class ScanResult:
    top_scores: np.ndarray  # queries x k, best first
    top_rows: np.ndarray  # queries x k, global row indices
    provider_top_scores: np.ndarray  # queries x providers x k (-inf where a provider has fewer)
    provider_top_rows: np.ndarray  # queries x providers x k (-1 where empty)
    credit: np.ndarray  # queries x providers, float64 sums of scores
    row_mean_scores: np.ndarray  # rows, each example's score averaged over the queries


@dataclass(frozen=True)
class ScanOptions:
    """How a scan is cut up; none of these change its results."""

    top_k: int = 10
    task_rows: int = TASK_ROWS  # rows per task, in whole chunks: each task starts its lists empty
    tile_rows: int = 1024  # rows per matrix product: a widened tile (4 MiB at width 1,024) serves every query batch
    query_batch: int = 256  # queries per matrix product; a block holds SCORE_BYTES of scores over all batches
    scheduler: str | None = "threads"  # a Dask scheduler name; None: the active distributed client
    device: str = "cpu"  # where the tiles are multiplied ("cuda": the matmuls on a GPU, selection on CPU)

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 1024:
            raise ValueError(f"top_k is {self.top_k}; the scan keeps 1 to 1,024 examples per list")
        if not 1 <= self.tile_rows <= MAX_OFFSET:
            raise ValueError(f"tile_rows is {self.tile_rows}; use 1 to {MAX_OFFSET:,}")
        if self.task_rows < 1 or self.query_batch < 1:
            raise ValueError("task_rows and query_batch must be at least 1")


class RowSource(Protocol):
    """Rows read a range at a time, as a tensor torch can widen to float32, times a per-row scale."""

    @property
    def n_rows(self) -> int: ...

    @property
    def chunk_rows(self) -> int: ...

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, np.ndarray | None]: ...

    def reader(self) -> Callable[[int, int], tuple[torch.Tensor, np.ndarray | None]]:
        """`read` for one task reading its chunks in turn; a result is valid until the next call."""
        ...


@dataclass(frozen=True)
class RowsInMemory:
    """An in-memory matrix (numpy, or a torch tensor such as bfloat16 rows) as a row source."""

    rows: np.ndarray | torch.Tensor
    chunk_rows: int

    @property
    def n_rows(self) -> int:
        return self.rows.shape[0]

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, np.ndarray | None]:
        return torch.as_tensor(self.rows[start:stop]), None

    def reader(self) -> Callable[[int, int], tuple[torch.Tensor, np.ndarray | None]]:
        return self.read


@dataclass
class _Partial:
    lists: GroupedTopK  # (provider, query) lists, group index provider * queries + query
    credit: np.ndarray  # providers x queries
    means: np.ndarray  # the range's rows


def _scale(*factors: np.ndarray | None) -> torch.Tensor | None:
    """The product of the per-row factors given (codec scale, row scale), or None for none."""
    present = [f for f in factors if f is not None]
    if not present:
        return None
    scale = np.array(present[0], dtype=np.float32)
    for factor in present[1:]:
        scale *= factor
    return torch.from_numpy(scale)


class _RangeScan:
    """The running state of one task. Its rows come in order, so a later row never wins a tie."""

    def __init__(self, queries: torch.Tensor, n_providers: int, n_rows: int, options: ScanOptions):
        self.device = torch.device(options.device)
        self.queries = queries.to(self.device)
        self.n_queries = queries.shape[0]
        self.k = options.top_k
        # One absorb touches at most the lists of one query batch, and a sort key has 16 bits for them.
        self.query_batch = max(1, min(options.query_batch, MAX_GROUPS // n_providers))
        self.lists = GroupedTopK.empty(n_providers * self.n_queries, options.top_k)
        self.thresholds = np.full((n_providers, self.n_queries), -np.inf, dtype=np.float32)
        self.floor = self.thresholds.min(axis=0)  # per query, the lowest of its providers' thresholds
        self.credit = torch.zeros((n_providers, self.n_queries), dtype=torch.float64, device=self.device)
        self.means = np.empty(n_rows)
        self.tile_rows = options.tile_rows
        self.buffer = torch.empty((options.tile_rows, queries.shape[1]), dtype=torch.float32, device=self.device)
        self.batches = [(q0, min(q0 + self.query_batch, self.n_queries))
                        for q0 in range(0, self.n_queries, self.query_batch)]
        # A block's scores, one buffer per query batch: block_rows x queries float32 in all.
        self.block_rows = block_rows(options, self.n_queries)
        self.scores = {q0: torch.empty((self.block_rows, q1 - q0), dtype=torch.float32, device=self.device)
                       for q0, q1 in self.batches}

    def block(self, codes: torch.Tensor, scale: torch.Tensor | None, providers: np.ndarray, first: int,
              offset: int) -> None:
        """Score one block of rows: `first`.. of the store, `offset`.. of this task's range. The
        products run tile by tile (a widened tile stays in cache for every query batch); the
        reductions then run once over the block's scores, not once per tile."""
        n = codes.shape[0]
        direct = codes.dtype == torch.float32 and self.device.type == "cpu"
        blocks = [self.scores[q0][:n] for q0, _ in self.batches]
        for a in range(0, n, self.tile_rows):
            b = min(a + self.tile_rows, n)
            rows = codes[a:b] if direct else self.buffer[: b - a].copy_(codes[a:b])
            for (q0, q1), out in zip(self.batches, blocks):
                torch.matmul(rows, self.queries[q0:q1].T, out=out[a:b])
        providers_t = torch.from_numpy(providers).to(self.device, torch.long)
        # Credit as a product: providers x rows (one-hot) times the scores, one BLAS call.
        one_hot = torch.zeros((self.credit.shape[0], n), dtype=torch.float32, device=self.device)
        one_hot.scatter_(0, providers_t[None, :], 1.0)
        if scale is not None:
            scale = scale.to(self.device)
        sums = torch.zeros(n, dtype=torch.float64, device=self.device)
        for (q0, q1), scores in zip(self.batches, blocks):
            if scale is not None:
                scores.mul_(scale[:, None])
            sums += scores.sum(dim=1)
            # float32 within a block (at most block_rows terms), float64 across blocks.
            self.credit[:, q0:q1] += one_hot @ scores
            self._absorb(scores.cpu().numpy(), providers, first, q0)
        self.means[offset : offset + n] = (sums / self.n_queries).cpu().numpy()

    def _absorb(self, scores: np.ndarray, providers: np.ndarray, first: int, q0: int) -> None:
        width = scores.shape[1]
        # Strictly greater: an equal score of this later row loses the tie to the list's k-th.
        # First against each query's lowest threshold over the providers (one compare a score,
        # no gather), then the few that pass against their own provider's.
        beats = np.flatnonzero(scores > self.floor[q0 : q0 + width])
        if beats.size == 0:
            return
        r, q = np.divmod(beats, width)
        own = scores.ravel()[beats] > self.thresholds[providers[r], q0 + q]
        beats, r, q = beats[own], r[own], q[own]
        if beats.size == 0:
            return
        groups = providers[r].astype(np.int64) * self.n_queries + (q0 + q)
        touched = self.lists.absorb(groups, scores.ravel()[beats], r, first)
        self.thresholds.ravel()[touched] = kth_scores(self.lists.keys[touched])
        self.floor = self.thresholds.min(axis=0)

    def result(self) -> _Partial:
        return _Partial(self.lists, self.credit.cpu().numpy(), self.means)


def _scan_range(source: RowSource, start: int, stop: int, providers: np.ndarray, row_scale: np.ndarray | None,
                queries: np.ndarray, n_providers: int, options: ScanOptions) -> _Partial:
    scan = _RangeScan(torch.from_numpy(queries), n_providers, stop - start, options)
    # Blocks grow from small to full size: while the lists are empty every score enters them, so
    # the first rows are better absorbed in small numbers that soon raise the thresholds.
    size = max(1, options.tile_rows // 16)
    read = source.reader()
    for chunk in range(start, stop, source.chunk_rows):
        end = min(chunk + source.chunk_rows, stop)
        codes, codec_scale = read(chunk, end)
        a = 0
        while a < end - chunk:
            b = min(a + size, end - chunk)
            at = chunk - start + a
            scale = _scale(None if codec_scale is None else codec_scale[a:b],
                           None if row_scale is None else row_scale[at : at + b - a])
            scan.block(codes[a:b], scale, providers[at : at + b - a], chunk + a, at)
            a, size = b, min(2 * size, scan.block_rows)
    return scan.result()


def _merge(a: _Partial, b: _Partial) -> _Partial:
    return _Partial(a.lists.merge(b.lists), a.credit + b.credit, np.concatenate([a.means, b.means]))


def _result(partial: _Partial, n_providers: int, n_queries: int) -> ScanResult:
    k = partial.lists.k
    by_provider = partial.lists.keys.reshape(n_providers, n_queries, k).transpose(1, 0, 2)
    overall = np.sort(by_provider.reshape(n_queries, n_providers * k), axis=1)[:, :k]
    top_scores, top_rows = decode(overall)
    provider_scores, provider_rows = decode(by_provider)
    return ScanResult(top_scores, top_rows, provider_scores, provider_rows, partial.credit.T.copy(),
                      partial.means)


def scan_scores(
    source: RowSource,
    provider_codes: np.ndarray,
    n_providers: int,
    queries: np.ndarray,
    row_scale: np.ndarray | None = None,
    options: ScanOptions = ScanOptions(),
) -> ScanResult:
    """Score every row against every query in one chunked pass.

    `queries` are preconditioned query rows (queries x K); `provider_codes` each row's provider
    (0 .. n_providers-1); `row_scale`, when given, multiplies each row's scores (1/sqrt(self-influence)
    for relatif and cosine). Scores are float32 products; lists and credit are exact for them.
    """
    n = source.n_rows
    if n == 0:
        raise ValueError("the store has no rows to score")
    if n_providers > MAX_GROUPS:
        raise ValueError(f"{n_providers:,} providers: the scan keeps lists for at most {MAX_GROUPS:,}")
    if n > MAX_ROWS:
        raise ValueError(f"{n:,} rows: the scan indexes rows with 32 bits (at most {MAX_ROWS:,})")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    providers = np.asarray(provider_codes, dtype=np.int32)
    if providers.shape != (n,) or providers.min() < 0 or providers.max() >= n_providers:
        raise ValueError(f"provider_codes must give each of the {n:,} rows a provider in 0..{n_providers - 1}")
    if row_scale is not None:
        row_scale = np.asarray(row_scale, dtype=np.float32)
        if row_scale.shape != (n,):
            raise ValueError(f"row_scale has shape {row_scale.shape}; the source has {n:,} rows")
    # One graph node each, not one copy per task; pure=False skips hashing the data for a key.
    shared_source = dask.delayed(source, pure=False)
    shared_queries = dask.delayed(queries, pure=False)
    span = source.chunk_rows * max(1, options.task_rows // source.chunk_rows)
    partials = [
        dask.delayed(_scan_range)(shared_source, start, min(start + span, n), providers[start : start + span],
                                  None if row_scale is None else row_scale[start : start + span],
                                  shared_queries, n_providers, options)
        for start in range(0, n, span)
    ]
    while len(partials) > 1:  # a balanced tree keeps every merge small
        partials = [
            dask.delayed(_merge)(partials[i], partials[i + 1]) if i + 1 < len(partials) else partials[i]
            for i in range(0, len(partials), 2)
        ]
    (partial,) = dask.compute(partials[0], scheduler=options.scheduler)
    return _result(partial, n_providers, queries.shape[0])
