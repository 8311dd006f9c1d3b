"""Parallel loggers: each worker streams its shards into staging groups of its own, and one
committer publishes finished shards into the store.

Zarr has no locking, and writers that share a chunk, a resize or an attribute write lose rows.
A staging group belongs to exactly one (worker, shard): its arrays, chunks and metadata are
written by that worker alone, chunk by chunk as rows arrive (so a worker holds a few chunks in
memory, whatever the shard's size), and the `ready` attribute, written last, hands it to the
committer. The committer copies the encoded rows as they are (no re-encoding), commits the
shards through the same path as a direct commit, then deletes their staging groups. A crash in
between leaves the groups in place; the next commit finds the shards already in the manifest
and just deletes them. A worker killed mid-shard leaves a group without `ready`: nothing reads
it, and the committer deletes it once it is STALE_AFTER old (a live worker may still be writing it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

import numpy as np
import zarr
from zarr.errors import ZarrUserWarning

from valuation.fisher import FisherPartial

from . import nodes
from .aggregates import Aggregates, ProviderSums, read_aggregates, write_aggregates
from .codecs import EncodedRows, decode, encode
from .errors import RowsInvalidError
from .faults import STAGED_CHUNK_WRITTEN, crash_point
from .ingest import CommitResult, checked_partial, checked_rows, commit, rows_fisher, utc_now
from .lock import Fence, no_fence
from .manifest import read_manifest
from .rows import RowArrays, create_row_arrays
from .schema import STAGING, RowMetadata, StoreAttributes, check_node_name

READY = "ready"
AGGREGATES = "aggregates"
STALE_AFTER = timedelta(hours=24)  # an unfinished staging group this old belongs to a dead worker

RootOpener = Callable[[], zarr.Group]


@dataclass(frozen=True)
class StageResult:
    shard_hash: str
    status: Literal["staged", "already_staged", "already_committed"]
    rows: int


class ShardWriter:
    """Rows of one shard, appended in blocks of any size and written to its staging group in
    whole chunks. `finish(fisher_partial)` writes the sums and marks the group ready."""

    def __init__(self, group: zarr.Group, attrs: StoreAttributes, shard_hash: str, name: str | None):
        self.group, self.attrs, self.shard_hash, self.name = group, attrs, shard_hash, name
        create_row_arrays(group, attrs.layout.total, attrs.codec, attrs.chunk_rows)
        self._arrays = RowArrays.of(group)
        self._pending: list[tuple[EncodedRows, RowMetadata]] = []
        self._pending_rows = 0
        self._written = 0
        self._capacity = 0
        self._sums = ProviderSums(attrs.layout.total)
        self.finished: StageResult | None = None

    @property
    def rows(self) -> int:
        return self._written + self._pending_rows

    def append(self, rows, metadata: RowMetadata) -> None:
        if self.finished:
            raise RowsInvalidError(f"shard {self.shard_hash} is already staged; nothing more can be appended")
        rows = checked_rows(self.attrs, self.shard_hash, rows, metadata)
        encoded = encode(rows, self.attrs.codec.precision)
        self._sums.add(decode(encoded, self.attrs.codec.precision), metadata.providers)
        self._pending.append((encoded, metadata))
        self._pending_rows += len(encoded)
        whole = self._pending_rows - self._pending_rows % self.attrs.chunk_rows
        if whole:
            self._flush(whole)

    def _flush(self, n: int) -> None:
        """Write the first n pending rows (whole chunks, except at the end of the shard)."""
        encoded, meta = _concat(self._pending)
        if self._written + n > self._capacity:  # grow geometrically: few metadata writes
            self._capacity = max(self._written + n, 2 * self._capacity)
            self._arrays.resize(self._capacity)
        self._arrays.write(self._written, encoded.slice(0, n), meta.slice(0, n), self.shard_hash)
        crash_point(STAGED_CHUNK_WRITTEN)
        self._written += n
        rest = len(encoded) - n
        self._pending = [(encoded.slice(n, n + rest), meta.slice(n, n + rest))] if rest else []
        self._pending_rows = rest

    def finish(self, fisher_partial: FisherPartial) -> StageResult:
        """Write the last rows and the shard's sums, then hand the group to the committer."""
        checked_partial(self.attrs, self.shard_hash, fisher_partial)
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._arrays.resize(self._written)
        digests = write_aggregates(self.group.create_group(AGGREGATES, overwrite=True),
                                   self._sums.aggregates(fisher_partial))
        self.group.attrs.put({READY: True, "name": self.name, "staged_at": utc_now(), "rows": self._written,
                              "aggregates_digests": digests})
        self.finished = StageResult(self.shard_hash, "staged", self._written)
        return self.finished


def _concat(parts: list[tuple[EncodedRows, RowMetadata]]) -> tuple[EncodedRows, RowMetadata]:
    if len(parts) == 1:
        return parts[0]
    codes = np.concatenate([e.codes for e, _ in parts])
    scale = None if parts[0][0].scale is None else np.concatenate([e.scale for e, _ in parts])
    metas = [m for _, m in parts]
    meta = RowMetadata(
        [i for m in metas for i in m.example_ids], [p for m in metas for p in m.providers],
        np.concatenate([m.n_tokens for m in metas]), [s for m in metas for s in cast(list[str], m.snippets)],
    )
    return EncodedRows(codes, scale), meta


class StagingArea:
    """Where one worker writes its shards. Worker ids must be unique among concurrent workers.

    It needs only the store's root and identity, not the store: workers on other machines build
    one from the URL alone."""

    def __init__(self, open_root: RootOpener, attrs: StoreAttributes, worker_id: str):
        self.open_root = open_root
        self.attrs = attrs
        self.worker_id = check_node_name(worker_id, "worker id")

    def _path(self, shard_hash: str) -> str:
        return f"{STAGING}/{self.worker_id}/{check_node_name(shard_hash, 'shard hash')}"

    def status(self, shard_hash: str) -> Literal["already_committed", "already_staged"] | None:
        """Whether the shard needs no logging: committed in the store, or staged ready here."""
        root = self.open_root()
        if any(e.shard_hash == shard_hash for e in read_manifest(root)):
            return "already_committed"
        path = self._path(shard_hash)
        if path in root and root[path].attrs.get(READY):
            return "already_staged"
        return None

    def open_shard(self, shard_hash: str, *, name: str | None = None) -> ShardWriter:
        """A writer for a new staging group of this shard (an unfinished one of this worker is replaced)."""
        path = self._path(shard_hash)
        root = self.open_root()
        if path in root and root[path].attrs.get(READY):
            # Rewriting a ready group could race the committer copying it.
            raise RowsInvalidError(f"shard {shard_hash} is already staged by worker {self.worker_id}")
        # started_at goes into the group's first write: the committer judges staleness by it.
        group = root.create_group(path, overwrite=True, attributes={"name": name, "started_at": utc_now()})
        return ShardWriter(group, self.attrs, shard_hash, name)

    def discard(self, shard_hash: str) -> None:
        """Drop this worker's unfinished group of the shard (a logging that failed); a ready one
        belongs to the committer now and stays."""
        path = self._path(shard_hash)
        root = self.open_root()
        if path in root and not root[path].attrs.get(READY):
            del root[path]

    def write_shard(
        self,
        shard_hash: str,
        rows,
        metadata: RowMetadata,
        fisher_partial: FisherPartial | None = None,
        *,
        name: str | None = None,
    ) -> StageResult:
        """Stage a whole shard held in memory (`open_shard` streams one instead)."""
        rows = checked_rows(self.attrs, shard_hash, rows, metadata)
        status = self.status(shard_hash)
        if status:
            return StageResult(shard_hash, status, len(rows))
        writer = self.open_shard(shard_hash, name=name)
        writer.append(rows, metadata)
        return writer.finish(fisher_partial or rows_fisher(self.attrs, rows))


@dataclass
class StagedShard:
    """A ready staging group, readable as the source of a commit."""

    worker_id: str
    shard_hash: str
    group: zarr.Group
    arrays: RowArrays
    attrs: StoreAttributes

    @property
    def n_rows(self) -> int:
        return int(nodes.attr(self.group, "rows"))

    @property
    def name(self) -> str | None:
        return nodes.attr(self.group, "name")

    @property
    def aggregates(self) -> Aggregates:
        return read_aggregates(nodes.group(self.group, AGGREGATES), self.attrs.layout,
                               nodes.attr(self.group, "aggregates_digests"))

    def read(self, start: int, stop: int) -> tuple[EncodedRows, RowMetadata]:
        return self.arrays.read_encoded(start, stop), self.arrays.read_meta(start, stop)

    def example_ids(self) -> list[str]:
        return nodes.read(self.arrays.columns["example_id"], slice(0, self.n_rows)).tolist()


def _staging_groups(root: zarr.Group) -> list[tuple[str, str, zarr.Group]]:
    found = []
    with warnings.catch_warnings():
        # Workers write while we list: their half-renamed temp files are not Zarr nodes.
        warnings.filterwarnings("ignore", message=".*not recognized as a component", category=ZarrUserWarning)
        for worker_id, worker in nodes.group(root, STAGING).groups():
            for shard_hash, group in worker.groups():
                found.append((worker_id, shard_hash, group))
    return found


def staged_rows(root: zarr.Group, shard_hash: str) -> int | None:
    """Rows of a ready staging group of the shard under any worker, None if there is none: a
    logger that finds one need not log the shard again."""
    for _, found, group in _staging_groups(root):
        if found == shard_hash and group.attrs.get(READY):
            return int(nodes.attr(group, "rows"))
    return None


def list_staged(root: zarr.Group, attrs: StoreAttributes) -> list[StagedShard]:
    """Ready staging groups, oldest first (ties by worker and hash, so the order is reproducible)."""
    ready = [(g.attrs["staged_at"], w, h, g) for w, h, g in _staging_groups(root) if g.attrs.get(READY)]
    ready.sort(key=lambda item: item[:3])
    return [StagedShard(w, h, g, RowArrays.of(g), attrs) for _, w, h, g in ready]


def _is_stale(group: zarr.Group, now: datetime) -> bool:
    started = nodes.attr(group, "started_at")
    return started is not None and now - datetime.fromisoformat(started) > STALE_AFTER


def commit_staged(
    root: zarr.Group,
    attrs: StoreAttributes,
    flush: Callable[[], None],
    fence: Fence = no_fence,
    shards: Sequence[str] | None = None,
    ids_checked_below: int = 0,
) -> list[CommitResult]:
    """Publish ready staged shards: all of them oldest first, or those of `shards` that are ready,
    in that order. Call under the committer lock. Refused shards (example ids the store holds)
    are dropped with the committed ones: an append-only store can never take them."""
    staged = list_staged(root, attrs)
    if shards is not None:
        by_hash: dict[str, list[StagedShard]] = {}
        for s in staged:
            by_hash.setdefault(s.shard_hash, []).append(s)
        staged = [s for h in dict.fromkeys(shards) for s in by_hash.get(h, [])]
    results = commit(root, attrs, staged, flush, fence, ids_checked_below)
    for s in staged:
        del nodes.group(root, f"{STAGING}/{s.worker_id}")[s.shard_hash]
    now = datetime.now(UTC)
    for worker_id, shard_hash, group in _staging_groups(root):
        if not group.attrs.get(READY) and _is_stale(group, now):
            del nodes.group(root, f"{STAGING}/{worker_id}")[shard_hash]
    return results
