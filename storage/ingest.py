"""Committing a shard: rows, metadata and aggregates first, the manifest entry last.

Everything here runs under the committer lock. The order is what makes a crash harmless:
1. cut off any uncommitted tail (rows past the manifest's last entry: a crashed commit's)
2. grow the row arrays and write the shard's rows and metadata, then its aggregates
3. flush, then append the manifest entry: from this write on, and not before, the shard exists
A crash before 3 leaves a tail that readers never see and the next commit cuts off; the rerun
redoes the shard from scratch. A shard already in the manifest is never written again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

import numpy as np
import torch
import zarr

from valuation.fisher import FisherPartial

from .aggregates import ShardAggregates, write_aggregates
from .codecs import EncodedRows, decode, encode
from .errors import RowsInvalidError
from .faults import ROWS_WRITTEN, crash_point
from .manifest import ManifestEntry, MetaHasher, RowsHasher, append_entry, committed_rows, read_manifest
from .rows import RowArrays
from .schema import SHARDS, RowMetadata, StoreAttributes, check_node_name

BLOCK_BYTES = 64 << 20  # rows written per zarr call: big enough for zarr to write chunks concurrently


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class CommitResult:
    shard_hash: str
    status: Literal["committed", "already_committed"]
    row_start: int
    row_stop: int

    @property
    def committed(self) -> bool:
        """True if this call added the shard; False if it was already in the store (a no-op)."""
        return self.status == "committed"

    @property
    def rows(self) -> int:
        return self.row_stop - self.row_start

    def __str__(self) -> str:
        if self.committed:
            return f"shard {self.shard_hash}: committed {self.rows} rows [{self.row_start}, {self.row_stop})"
        return f"shard {self.shard_hash}: already committed (rows [{self.row_start}, {self.row_stop})), nothing written"


@dataclass
class PreparedShard:
    """A shard validated, encoded and summed, ready to write anywhere (store or staging)."""

    shard_hash: str
    name: str | None
    encoded: EncodedRows
    meta: RowMetadata
    aggregates: ShardAggregates

    @property
    def n_rows(self) -> int:
        return len(self.encoded)

    def read(self, start: int, stop: int) -> tuple[EncodedRows, RowMetadata]:
        return self.encoded.slice(start, stop), self.meta.slice(start, stop)


class RowSource(Protocol):
    """Encoded rows and metadata a commit copies into the store, read block by block."""

    n_rows: int

    def read(self, start: int, stop: int) -> tuple[EncodedRows, RowMetadata]: ...


def _as_numpy(rows) -> np.ndarray:
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(rows, dtype=np.float32)


def prepare_shard(
    attrs: StoreAttributes,
    shard_hash: str,
    rows,
    metadata: RowMetadata,
    fisher_partial: FisherPartial | None,
    name: str | None,
) -> PreparedShard:
    check_node_name(shard_hash, "shard hash")
    rows = _as_numpy(rows)
    layout = attrs.layout
    if rows.ndim != 2 or rows.shape[1] != layout.total:
        raise RowsInvalidError(f"rows have shape {rows.shape}; the store's layout needs (n, {layout.total})")
    if len(metadata) != rows.shape[0]:
        raise RowsInvalidError(f"{rows.shape[0]} rows but metadata for {len(metadata)}")
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        shown = [metadata.example_ids[i] for i in bad[:10]]
        raise RowsInvalidError(f"shard {shard_hash}: NaN/inf in the rows of example(s) {shown}; nothing was written")
    if fisher_partial is None:
        fisher_partial = FisherPartial.zeros(layout).update(torch.from_numpy(rows))
    elif fisher_partial.layout != layout:
        raise RowsInvalidError(f"shard {shard_hash}: the Fisher partial's gradient layout is not the store's")
    encoded = encode(rows, attrs.codec.precision)
    decoded = decode(encoded, attrs.codec.precision)
    aggregates = ShardAggregates.compute(decoded, metadata, fisher_partial)
    return PreparedShard(shard_hash, name, encoded, metadata, aggregates)


def aligned_blocks(start: int, n: int, chunk_rows: int, block_rows: int) -> Iterator[tuple[int, int]]:
    """[a, b) ranges of a source of n rows written at `start`, each ending on a chunk boundary of
    the target, so no target chunk is written twice (a read-modify-write of compressed bytes)."""
    block_rows = max(chunk_rows, block_rows - block_rows % chunk_rows)
    a = 0
    while a < n:
        b = min(n, a + block_rows - (start + a) % chunk_rows)
        yield a, b
        a = b


def discard_uncommitted(root: zarr.Group, arrays: RowArrays, entries: list[ManifestEntry]) -> None:
    """Cut the arrays back to the committed rows and drop aggregates no manifest entry owns."""
    arrays.resize(committed_rows(entries))
    committed = {e.shard_hash for e in entries}
    shards = root[SHARDS]
    for orphan in set(shards.group_keys()) - committed:
        del shards[orphan]


def commit(
    root: zarr.Group,
    attrs: StoreAttributes,
    shard_hash: str,
    name: str | None,
    source: RowSource,
    aggregates: ShardAggregates,
    flush: Callable[[], None],
) -> CommitResult:
    entries = read_manifest(root)
    for entry in entries:
        if entry.shard_hash == shard_hash:
            return CommitResult(shard_hash, "already_committed", entry.row_start, entry.row_stop)
    arrays = RowArrays.of(root)
    discard_uncommitted(root, arrays, entries)
    start, n = committed_rows(entries), source.n_rows
    arrays.resize(start + n)
    rows_hash, meta_hash = RowsHasher(), MetaHasher()
    row_bytes = max(1, attrs.layout.total * attrs.codec.storage_dtype.itemsize)
    for a, b in aligned_blocks(start, n, attrs.chunk_rows, BLOCK_BYTES // row_bytes):
        encoded, meta = source.read(a, b)
        arrays.write(start + a, encoded, meta, shard_hash)
        rows_hash.update(encoded)
        meta_hash.update(meta, [shard_hash] * (b - a))
    write_aggregates(root[SHARDS].create_group(shard_hash, overwrite=True), aggregates)
    flush()
    crash_point(ROWS_WRITTEN)
    entry = ManifestEntry(
        shard_hash=shard_hash, name=name, row_start=start, row_stop=start + n, row_count=n,
        rows_sha256=rows_hash.hexdigest(), meta_sha256=meta_hash.hexdigest(),
        fisher_count=aggregates.fisher.count, committed_at=utc_now(),
    )
    append_entry(root, entries, entry)
    flush()
    return CommitResult(shard_hash, "committed", start, start + n)
