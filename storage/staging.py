"""Parallel loggers: each worker writes whole shards into a staging group of its own, and one
committer moves finished shards into the store.

Zarr has no locking, and writers that share a chunk, a resize or an attribute write lose rows.
A staging group belongs to exactly one (worker, shard): its arrays, chunks and metadata are
written by that worker alone, and the `ready` attribute, written last, hands it to the committer.
The committer copies the encoded rows as they are (no re-encoding), commits the shard through
the same path as a direct commit, then deletes the staging group. A crash in between leaves the
group in place; the next commit finds the shard already in the manifest and just deletes it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import zarr
from zarr.errors import ZarrUserWarning

from valuation.fisher import FisherPartial
from valuation.layout import GradientLayout

from .aggregates import read_aggregates, write_aggregates
from .codecs import EncodedRows
from .faults import MANIFEST_WRITTEN, crash_point
from .ingest import CommitResult, commit, prepare_shard, utc_now
from .manifest import read_manifest
from .rows import RowArrays, create_row_arrays
from .schema import STAGING, RowMetadata, StoreAttributes, check_node_name

if TYPE_CHECKING:
    from .store import GradientStore

READY = "ready"
AGGREGATES = "aggregates"


@dataclass(frozen=True)
class StageResult:
    shard_hash: str
    status: Literal["staged", "already_staged", "already_committed"]
    rows: int


class StagingArea:
    """Where one worker writes its shards. Worker ids must be unique among concurrent workers."""

    def __init__(self, store: GradientStore, worker_id: str):
        self.store = store
        self.worker_id = check_node_name(worker_id, "worker id")

    def write_shard(
        self,
        shard_hash: str,
        rows,
        metadata: RowMetadata,
        fisher_partial: FisherPartial | None = None,
        *,
        name: str | None = None,
    ) -> StageResult:
        attrs = self.store.attributes
        prepared = prepare_shard(attrs, shard_hash, rows, metadata, fisher_partial, name)
        root = self.store.root()
        if any(e.shard_hash == shard_hash for e in read_manifest(root)):
            return StageResult(shard_hash, "already_committed", prepared.n_rows)
        path = f"{STAGING}/{self.worker_id}/{shard_hash}"
        if path in root and root[path].attrs.get(READY):
            # Rewriting a ready group could race the committer copying it.
            return StageResult(shard_hash, "already_staged", prepared.n_rows)
        group = root.create_group(path, overwrite=True)
        create_row_arrays(group, attrs.layout.total, attrs.codec, attrs.chunk_rows)
        arrays = RowArrays.of(group)
        arrays.resize(prepared.n_rows)
        arrays.write(0, prepared.encoded, prepared.meta, shard_hash)
        write_aggregates(group.create_group(AGGREGATES), prepared.aggregates)
        group.attrs.put({READY: True, "name": name, "staged_at": utc_now(), "rows": prepared.n_rows})
        return StageResult(shard_hash, "staged", prepared.n_rows)


@dataclass
class StagedShard:
    """A ready staging group, readable as the source of a commit."""

    worker_id: str
    shard_hash: str
    group: zarr.Group
    arrays: RowArrays

    @property
    def n_rows(self) -> int:
        return int(self.group.attrs["rows"])

    @property
    def name(self) -> str | None:
        return self.group.attrs.get("name")

    def read(self, start: int, stop: int) -> tuple[EncodedRows, RowMetadata]:
        return self.arrays.read_encoded(start, stop), self.arrays.read_meta(start, stop)


def list_staged(root: zarr.Group) -> list[StagedShard]:
    """Ready staging groups, oldest first (ties by worker and hash, so the order is reproducible)."""
    found = []
    with warnings.catch_warnings():
        # Workers write while we list: their half-renamed temp files are not Zarr nodes, and
        # their groups without `ready` are skipped anyway.
        warnings.filterwarnings("ignore", message=".*not recognized as a component", category=ZarrUserWarning)
        for worker_id, worker in root[STAGING].groups():
            for shard_hash, group in worker.groups():
                if group.attrs.get(READY):
                    found.append((group.attrs["staged_at"], worker_id, shard_hash, group))
    found.sort(key=lambda item: item[:3])
    return [StagedShard(w, h, g, RowArrays.of(g)) for _, w, h, g in found]


def commit_staged(
    root: zarr.Group, attrs: StoreAttributes, layout: GradientLayout, flush: Callable[[], None]
) -> list[CommitResult]:
    """Move every ready staged shard into the store. Call under the committer lock."""
    results = []
    for staged in list_staged(root):
        aggregates = read_aggregates(staged.group[AGGREGATES], layout)
        results.append(commit(root, attrs, staged.shard_hash, staged.name, staged, aggregates, flush))
        crash_point(MANIFEST_WRITTEN)
        del root[STAGING][staged.worker_id][staged.shard_hash]
    return results
