"""Committing shards: rows, metadata and the new totals first, the manifest entry last.

Everything here runs under the committer lock. The order is what makes a crash harmless:
1. cut off any uncommitted tail (rows past the manifest's last entry: a crashed commit's) and
   drop totals groups the manifest does not point at
2. grow the row arrays and write each shard's rows and metadata
3. write the totals (old totals + the shards' sums) as a new group t<n>, flush
4. write the manifest: the new entries and the new totals' name, in one write. From this write
   on, and not before, the shards exist and the totals count them
5. drop the old totals group
Step 2 is preceded by the id check: a new shard whose example ids are committed already (or
are another new shard's of the same batch, or repeat within it) is refused and not written, so
two ingestions validating against the same old view cannot both add an id.
A crash before 4 leaves a tail and an orphan totals group that readers never see and the next
commit drops; the rerun redoes the shards from scratch. A crash after 4 leaves an old totals
group that the next commit drops. A shard already in the manifest is never written again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

import numpy as np
import torch
import zarr

from valuation.fisher import FisherPartial

from . import nodes
from .aggregates import Aggregates, read_aggregates, write_aggregates
from .codecs import EncodedRows, decode, encode
from .errors import RowsInvalidError
from .faults import MANIFEST_WRITTEN, ROWS_WRITTEN, crash_point
from .lock import Fence, no_fence
from .manifest import (
    Manifest,
    ManifestEntry,
    MetaHasher,
    RowsHasher,
    TotalsPointer,
    read_manifest_state,
    write_manifest,
)
from .rows import RowArrays
from .schema import TOTALS, RowMetadata, StoreAttributes, check_node_name

# Rows copied per zarr call: two default chunks, so zarr writes chunks concurrently, and a commit
# (of a staged shard above all) holds a few chunks in memory however large the shard.
BLOCK_BYTES = 16 << 20


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class CommitResult:
    shard_hash: str
    status: Literal["committed", "already_committed", "refused"]
    row_start: int
    row_stop: int
    reason: str = ""  # why a refused shard was not written

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
        if self.status == "refused":
            return f"shard {self.shard_hash}: refused, nothing written: {self.reason}"
        return f"shard {self.shard_hash}: already committed (rows [{self.row_start}, {self.row_stop})), nothing written"


class ShardSource(Protocol):
    """A shard a commit copies into the store: its rows and metadata read block by block, and its sums."""

    shard_hash: str

    @property
    def name(self) -> str | None: ...

    @property
    def n_rows(self) -> int: ...

    @property
    def aggregates(self) -> Aggregates: ...

    def read(self, start: int, stop: int) -> tuple[EncodedRows, RowMetadata]: ...

    def example_ids(self) -> list[str]: ...


@dataclass
class PreparedShard:
    """A shard validated, encoded and summed in memory, ready to commit."""

    shard_hash: str
    name: str | None
    encoded: EncodedRows
    meta: RowMetadata
    aggregates: Aggregates

    @property
    def n_rows(self) -> int:
        return len(self.encoded)

    def read(self, start: int, stop: int) -> tuple[EncodedRows, RowMetadata]:
        return self.encoded.slice(start, stop), self.meta.slice(start, stop)

    def example_ids(self) -> list[str]:
        return self.meta.example_ids


def _as_numpy(rows) -> np.ndarray:
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(rows, dtype=np.float32)


def checked_rows(attrs: StoreAttributes, shard_hash: str, rows, metadata: RowMetadata) -> np.ndarray:
    """rows as float32 numpy, if they fit the store's layout and are finite; else RowsInvalidError."""
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
    return rows


def checked_partial(attrs: StoreAttributes, shard_hash: str, partial: FisherPartial) -> FisherPartial:
    if partial.layout != attrs.layout:
        raise RowsInvalidError(f"shard {shard_hash}: the Fisher partial's gradient layout is not the store's")
    return partial


def rows_fisher(attrs: StoreAttributes, rows: np.ndarray) -> FisherPartial:
    """The empirical Fisher partial of the rows themselves (when the caller gives none)."""
    return FisherPartial.zeros(attrs.layout).update(torch.from_numpy(rows))


def prepare_shard(
    attrs: StoreAttributes,
    shard_hash: str,
    rows,
    metadata: RowMetadata,
    fisher_partial: FisherPartial | None,
    name: str | None,
) -> PreparedShard:
    check_node_name(shard_hash, "shard hash")
    rows = checked_rows(attrs, shard_hash, rows, metadata)
    fisher_partial = checked_partial(attrs, shard_hash, fisher_partial or rows_fisher(attrs, rows))
    encoded = encode(rows, attrs.codec.precision)
    decoded = decode(encoded, attrs.codec.precision)
    aggregates = Aggregates.of_rows(decoded, metadata, fisher_partial)
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


def totals_name(n_shards: int) -> str:
    return f"t{n_shards:09d}"


def read_totals(root: zarr.Group, attrs: StoreAttributes, manifest: Manifest) -> Aggregates:
    """The running sums over every committed shard, checked against the manifest's checksum."""
    if manifest.totals is None:
        return Aggregates.zeros(attrs.layout)
    totals = nodes.group(root, f"{TOTALS}/{manifest.totals.group}")
    return read_aggregates(totals, attrs.layout, manifest.totals.digests)


def discard_uncommitted(root: zarr.Group, arrays: RowArrays, manifest: Manifest) -> None:
    """Cut the arrays back to the committed rows and drop totals the manifest does not point at."""
    arrays.resize(manifest.n_rows)
    keep = manifest.totals.group if manifest.totals else None
    totals = root.require_group(TOTALS)
    for orphan in set(totals.group_keys()) - {keep}:
        del totals[orphan]


def _shown(ids: Sequence[str]) -> str:
    return ", ".join(repr(i) for i in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _refuse_duplicates(arrays: RowArrays, manifest: Manifest, new: Sequence[ShardSource],
                       checked_below: int) -> tuple[list[ShardSource], dict[str, CommitResult]]:
    """(the new shards whose ids are unique, results for the refused ones). Committed rows below
    `checked_below` are not read: the caller has checked these shards' ids against them."""
    unchecked = slice(min(checked_below, manifest.n_rows), manifest.n_rows)
    committed = nodes.read(arrays.columns["example_id"], unchecked)
    owner = {}
    if len(committed):
        shards = nodes.read(arrays.columns["shard"], unchecked)
        names = {e.shard_hash: e.name or e.shard_hash for e in manifest.entries}
        owner = {i: f"committed shard {names.get(h, h)}" for i, h in zip(committed.tolist(), shards.tolist())}
    accepted, refused = [], {}
    for source in new:
        ids = source.example_ids()
        repeated = sorted({i for i in ids if i in owner})
        clash = f"example id(s) {_shown(repeated)} are in {owner[repeated[0]]} already" if repeated else ""
        if not clash and len(set(ids)) != len(ids):
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            clash = f"example id(s) {_shown(twice)} repeat within the shard"
        if clash:
            refused[source.shard_hash] = CommitResult(source.shard_hash, "refused", 0, 0, clash)
            continue
        accepted.append(source)
        owner.update(dict.fromkeys(ids, f"shard {source.name or source.shard_hash} of the same commit"))
    return accepted, refused


def _write_rows(arrays: RowArrays, attrs: StoreAttributes, source: ShardSource, start: int,
                fence: Fence) -> tuple[str, str, dict[str, str]]:
    rows_hash, meta_hash = RowsHasher(), MetaHasher()
    row_bytes = max(1, attrs.layout.total * attrs.codec.storage_dtype.itemsize)
    for a, b in aligned_blocks(start, source.n_rows, attrs.chunk_rows, BLOCK_BYTES // row_bytes):
        encoded, meta = source.read(a, b)
        fence()
        arrays.write(start + a, encoded, meta, source.shard_hash)
        rows_hash.update(encoded)
        meta_hash.update(meta, [source.shard_hash] * (b - a))
    return rows_hash.hexdigest(), meta_hash.hexdigest(), meta_hash.column_hexdigests()


def commit(
    root: zarr.Group,
    attrs: StoreAttributes,
    sources: Sequence[ShardSource],
    flush: Callable[[], None],
    fence: Fence = no_fence,
    ids_checked_below: int = 0,
) -> list[CommitResult]:
    """Commit `sources` in order, in one manifest write; a shard with an example id the store (or
    an earlier source) holds is refused. `ids_checked_below`: committed rows the caller has
    already checked the sources' ids against (its validation's view). `fence` raises if this
    committer has lost the lease (called before every write, and with publish=True before the
    manifest's; see lease.py)."""
    manifest = read_manifest_state(root)
    results: dict[str, CommitResult] = {}
    new: list[ShardSource] = []
    for source in sources:
        entry = manifest.find(source.shard_hash)
        if entry is not None:
            results[source.shard_hash] = CommitResult(source.shard_hash, "already_committed", entry.row_start,
                                                      entry.row_stop)
        elif all(s.shard_hash != source.shard_hash for s in new):
            new.append(source)
    if not new:
        return _in_order(sources, results)
    arrays = RowArrays.of(root)
    new, refused = _refuse_duplicates(arrays, manifest, new, ids_checked_below)
    results.update(refused)
    if not new:
        return _in_order(sources, results)
    fence()
    discard_uncommitted(root, arrays, manifest)
    totals = read_totals(root, attrs, manifest)
    start = manifest.n_rows
    arrays.resize(start + sum(s.n_rows for s in new))
    entries = list(manifest.entries)
    for source in new:
        n = source.n_rows
        rows_sha, meta_sha, columns_sha = _write_rows(arrays, attrs, source, start, fence)
        aggregates = source.aggregates
        totals = totals + aggregates
        entries.append(ManifestEntry(
            shard_hash=source.shard_hash, name=source.name, row_start=start, row_stop=start + n, row_count=n,
            rows_sha256=rows_sha, meta_sha256=meta_sha, column_sha256=columns_sha,
            fisher_count=aggregates.fisher.count, committed_at=utc_now(),
        ))
        results[source.shard_hash] = CommitResult(source.shard_hash, "committed", start, start + n)
        start += n
    name = totals_name(len(entries))
    extra = {"shards": [e.shard_hash for e in entries], "fisher": attrs.fisher}
    fence()
    digests = write_aggregates(nodes.group(root, TOTALS).create_group(name, overwrite=True), totals, extra)
    flush()
    crash_point(ROWS_WRITTEN)
    fence(publish=True)
    write_manifest(root, Manifest(entries, TotalsPointer(group=name, digests=digests)))
    flush()
    crash_point(MANIFEST_WRITTEN)
    if manifest.totals is not None:
        del nodes.group(root, TOTALS)[manifest.totals.group]
    return _in_order(sources, results)


def _in_order(sources: Sequence[ShardSource], results: dict[str, CommitResult]) -> list[CommitResult]:
    """One result per source; a shard given twice is committed once, the repeat says so."""
    out, seen = [], set()
    for source in sources:
        result = results[source.shard_hash]
        if source.shard_hash in seen and result.status != "refused":
            result = CommitResult(result.shard_hash, "already_committed", result.row_start, result.row_stop)
        seen.add(source.shard_hash)
        out.append(result)
    return out
