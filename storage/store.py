"""GradientStore: the system of record for projected training gradients.

One Zarr v3 group at a local path or any fsspec URL. Appends are shard by shard, idempotent by
content hash and crash-safe (see ingest.py); every change to shared metadata goes through one
committer holding an inter-process lock (see lock.py); parallel loggers write to staging areas
(see staging.py).

A handle reads the manifest when it is opened and serves that view: rows committed later by
other processes appear after `refresh()`. Its own commits refresh it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import torch
import zarr

from valuation.config import FisherConfig
from valuation.fisher import FisherPartial, FisherSnapshot
from valuation.layout import GradientLayout
from valuation.spec import ProjectionSpec

from . import snapshots
from .aggregates import count_provider_rows, sum_fisher, sum_providers
from .codecs import CodecConfig, EncodedRows, decode
from .errors import RowsInvalidError, StoreError, StoreExistsError, StoreFormatError, StoreNotFoundError
from .identity import check_compatible
from .ingest import CommitResult, commit, prepare_shard, utc_now
from .location import StoreLocation, open_root
from .lock import committer_lock
from .manifest import ManifestEntry, committed_rows, read_manifest
from .projections import checked_projections, load_projections, save_projections
from .rows import RowArrays, create_row_arrays
from .schema import (
    ATTRS_KEY,
    MANIFEST,
    ROW_SCALE,
    ROWS,
    SCHEMA_VERSION,
    SHARDS,
    SNAPSHOTS,
    STAGING,
    RowMetadata,
    StoreAttributes,
    StoredMetadata,
)
from .snapshots import StoredSnapshot
from .staging import StagingArea, commit_staged

CHUNK_BYTES = 8 << 20  # target stored-dtype bytes per row chunk (before compression)
MAX_CHUNK_ROWS = 1 << 16


def code_version() -> str:
    try:
        return importlib.metadata.version("dataworth")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_chunk_rows(width: int, codec: CodecConfig) -> int:
    """Rows per chunk so a chunk holds about CHUNK_BYTES: few files, and small enough to stream."""
    rows = CHUNK_BYTES // max(1, width * codec.storage_dtype.itemsize)
    return int(min(MAX_CHUNK_ROWS, max(64, rows)))


class GradientStore:
    def __init__(self, location: StoreLocation, read_only: bool, lock_timeout: float):
        self.location = location
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self._zstore = location.zarr_store(read_only=read_only)
        root = open_root(self._zstore, location.url, mode="r" if read_only else "r+")
        if ATTRS_KEY not in root.attrs:
            raise StoreFormatError(
                f"{location.url} is a Zarr group but not a gradient store (no {ATTRS_KEY!r} attributes; "
                "if a create crashed, delete it and create again)"
            )
        raw = root.attrs[ATTRS_KEY]
        if raw.get("schema_version", 0) > SCHEMA_VERSION:  # before parsing: a newer schema may add fields
            raise StoreFormatError(
                f"{location.url} has store schema {raw['schema_version']}; this code reads up to "
                f"{SCHEMA_VERSION}: upgrade dataworth"
            )
        self.attributes = StoreAttributes(**raw)
        self._entries = read_manifest(root)

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str,
        spec: ProjectionSpec,
        model_fingerprint: dict[str, Any],
        codec: CodecConfig | None = None,
        *,
        chunk_rows: int | None = None,
        storage_options: dict[str, Any] | None = None,
        lock_timeout: float = 60.0,
        projections: Mapping[str, tuple[Any, Any]] | None = None,
        fisher: FisherConfig | None = None,
    ) -> GradientStore:
        """A new, empty store. Raises StoreExistsError if one is there already.

        `projections` ((P_in, P_out) per module) must be given for data-dependent (PCA) projections:
        later loggers and queries rebuild the same add-ons from them."""
        codec = codec or CodecConfig()
        if projections is not None:
            projections = checked_projections(spec, projections)
        location = StoreLocation(str(url), storage_options or {})
        width = spec.layout.total
        attrs = StoreAttributes(
            schema_version=SCHEMA_VERSION,
            model_fingerprint=model_fingerprint,
            projection_spec=spec.to_dict(),
            codec=codec,
            chunk_rows=chunk_rows or default_chunk_rows(width, codec),
            created_at=utc_now(),
            code_version=code_version(),
            fisher_estimator=(fisher or FisherConfig()).estimator,
            fisher_sample_seed=(fisher or FisherConfig()).sample_seed,
        )
        with committer_lock(location.lock_path, location.url, lock_timeout):
            zstore = location.zarr_store()
            try:
                root = zarr.open_group(store=zstore, mode="w-", use_consolidated=False)
            except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
                raise StoreExistsError(location.url) from exc
            create_row_arrays(root, width, codec, attrs.chunk_rows)
            # Self-describing for readers without this package: which columns are which module.
            root[ROWS].attrs.put({
                "column_offsets": {name: list(span) for name, span in spec.layout.offsets.items()},
                "precision": codec.precision,
            })
            for name in (MANIFEST, SHARDS, SNAPSHOTS, STAGING):
                root.create_group(name)
            if projections is not None:
                save_projections(root, projections)
            # Identity last: a crash during creation leaves a group that open() refuses, not a store.
            root.attrs.put({ATTRS_KEY: attrs.model_dump(mode="json")})
        return cls(location, read_only=False, lock_timeout=lock_timeout)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        read_only: bool = False,
        storage_options: dict[str, Any] | None = None,
        lock_timeout: float = 60.0,
    ) -> GradientStore:
        """An existing store. `lock_timeout`: seconds a commit waits for another committer (0: fail at once)."""
        return cls(StoreLocation(str(url), storage_options or {}), read_only, lock_timeout)

    @classmethod
    def open_or_create(
        cls,
        url: str,
        spec: ProjectionSpec,
        model_fingerprint: dict[str, Any],
        codec: CodecConfig | None = None,
        **options: Any,
    ) -> GradientStore:
        """Open the store at `url` if there is one (checking it takes these rows), else create it.
        An existing store keeps its own codec."""
        try:
            store = cls.open(url, **options)
        except StoreNotFoundError:
            return cls.create(url, spec, model_fingerprint, codec, **options)
        store.check_compatible(spec, model_fingerprint)
        return store

    # ---- identity ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def spec(self) -> ProjectionSpec:
        return self.attributes.spec

    @property
    def layout(self) -> GradientLayout:
        return self.attributes.layout

    @property
    def model_fingerprint(self) -> dict[str, Any]:
        return self.attributes.model_fingerprint

    @property
    def codec(self) -> CodecConfig:
        return self.attributes.codec

    @property
    def chunk_rows(self) -> int:
        return self.attributes.chunk_rows

    def check_compatible(self, spec: ProjectionSpec, model_fingerprint: dict[str, Any]) -> None:
        """Raise ProjectionMismatchError / ModelMismatchError naming both sides if rows logged
        under (spec, model_fingerprint) do not belong in this store."""
        check_compatible(self.attributes, spec, model_fingerprint)

    def projections(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """The stored (P_in, P_out) per module, or None where the seed alone rebuilds them."""
        return load_projections(self.root(), self.layout)

    def check_fisher(self, fisher: FisherConfig | None) -> None:
        """Refuse Fisher partials of another estimator: they cannot be summed with this store's."""
        if fisher is None:
            return
        mine = (self.attributes.fisher_estimator, self.attributes.fisher_sample_seed)
        if (fisher.estimator, fisher.sample_seed) != mine:
            raise RowsInvalidError(
                f"store {self.url} sums the {mine[0]} Fisher (sample seed {mine[1]}); these rows come with the "
                f"{fisher.estimator} Fisher (sample seed {fisher.sample_seed}): use the store's estimator"
            )

    # ---- the committed view --------------------------------------------------------------

    def root(self) -> zarr.Group:
        """The root group, read fresh (for the internals and for inspection)."""
        return open_root(self._zstore, self.url, mode="r" if self.read_only else "r+")

    def refresh(self) -> GradientStore:
        """See shards committed since this handle was opened."""
        self._entries = read_manifest(self.root())
        return self

    @property
    def manifest(self) -> list[ManifestEntry]:
        return list(self._entries)

    @property
    def n_rows(self) -> int:
        return committed_rows(self._entries)

    def is_committed(self, shard_hash: str) -> bool:
        return any(e.shard_hash == shard_hash for e in self._entries)

    # ---- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _committing(self) -> Iterator[zarr.Group]:
        if self.read_only:
            raise StoreError(f"{self.url} was opened read-only")
        with committer_lock(self.location.lock_path, self.url, self.lock_timeout):
            yield self.root()
            self.refresh()

    def _flush(self) -> None:
        # LocalStore renames files into place but never fsyncs: without this a power cut after
        # the manifest write could persist the entry before the rows it points at.
        if self.location.local_path is not None:
            os.sync()

    def commit_shard(
        self,
        shard_hash: str,
        rows,
        metadata: RowMetadata,
        fisher_partial: FisherPartial | None = None,
        *,
        spec: ProjectionSpec,
        model_fingerprint: dict[str, Any],
        name: str | None = None,
        fisher: FisherConfig | None = None,
    ) -> CommitResult:
        """Append one shard's rows (n x K float32, numpy or torch), metadata and Fisher partial
        sums (computed from the rows when None), under the committer lock. A shard whose hash
        is already committed is not written again: the result says `already_committed`."""
        self.check_compatible(spec, model_fingerprint)
        self.check_fisher(fisher)
        with self._committing() as root:
            for entry in read_manifest(root):
                if entry.shard_hash == shard_hash:  # skip the encoding; commit() would write nothing either
                    return CommitResult(shard_hash, "already_committed", entry.row_start, entry.row_stop)
            prepared = prepare_shard(self.attributes, shard_hash, rows, metadata, fisher_partial, name)
            return commit(root, self.attributes, shard_hash, name, prepared, prepared.aggregates, self._flush)

    def stage(self, worker_id: str, *, spec: ProjectionSpec, model_fingerprint: dict[str, Any]) -> StagingArea:
        """A staging area for one parallel logger; `commit_staged()` moves its shards in."""
        if self.read_only:
            raise StoreError(f"{self.url} was opened read-only")
        self.check_compatible(spec, model_fingerprint)
        return StagingArea(self, worker_id)

    def commit_staged(self) -> list[CommitResult]:
        """Commit every shard the staging areas hold ready, oldest first, under the committer lock."""
        with self._committing() as root:
            return commit_staged(root, self.attributes, self.layout, self._flush)

    # ---- Fisher --------------------------------------------------------------------------

    def _committed(self, shards: Sequence[str] | None, entries: list[ManifestEntry]) -> list[ManifestEntry]:
        by_hash = {e.shard_hash: e for e in entries}
        if shards is None:
            return list(entries)
        missing = sorted(set(shards) - by_hash.keys())
        if missing:
            raise StoreError(f"shard(s) {missing} are not committed in {self.url}")
        return [by_hash[h] for h in dict.fromkeys(shards)]

    def _shard_groups(self, shards: Sequence[str] | None) -> list[zarr.Group]:
        group = self.root()[SHARDS]
        return [group[e.shard_hash] for e in self._committed(shards, self._entries)]

    def fisher_partial(self, shards: Sequence[str] | None = None) -> FisherPartial:
        """Sum of the Fisher partials of the given committed shards (all by default)."""
        return sum_fisher(self._shard_groups(shards), self.layout)

    def save_snapshot(self, snapshot: FisherSnapshot, shards: Sequence[str]) -> int:
        """Store a Fisher snapshot built from the partials of `shards`; returns its version."""
        if snapshot.layout != self.layout:
            raise RowsInvalidError("the Fisher snapshot's gradient layout is not the store's")
        with self._committing() as root:
            expected = sum(e.fisher_count for e in self._committed(shards, read_manifest(root)))
            if snapshot.count != expected:
                raise RowsInvalidError(
                    f"the snapshot sums {snapshot.count} rows but the shards given hold {expected} Fisher rows"
                )
            return snapshots.save_snapshot(root, snapshot, shards, utc_now())

    def load_snapshot(self, version: int | None = None) -> StoredSnapshot:
        """A stored Fisher snapshot (the latest by default)."""
        return snapshots.load_snapshot(self.root(), self.layout, version)

    def snapshot_versions(self) -> list[int]:
        return snapshots.snapshot_versions(self.root())

    def save_self_influence(
        self, version: int, values: np.ndarray, provider_normalized_sums: dict[str, np.ndarray] | None = None
    ) -> None:
        """g^T (F + lambda)^-1 g of every committed row under snapshot `version` (float64, n_rows),
        and optionally each provider's sum of rows divided by sqrt(self-influence) (for relatif
        credit without a row scan)."""
        with self._committing() as root:
            n_rows = committed_rows(read_manifest(root))
            if np.shape(values) != (n_rows,):
                raise RowsInvalidError(f"self-influence has shape {np.shape(values)}; the store has {n_rows} rows")
            snapshots.save_self_influence(root, version, values, provider_normalized_sums)

    def provider_normalized_sums(self, version: int | None = None) -> dict[str, np.ndarray]:
        """provider -> sum of its rows / sqrt(self-influence) under snapshot `version` (latest by default)."""
        return snapshots.read_normalized_sums(self.root(), version)

    def self_influence(self, version: int | None = None) -> np.ndarray:
        """Self-influence saved under `version` (latest by default): one value per row it covered."""
        return snapshots.read_self_influence(self.root(), version)

    # ---- provider aggregates -------------------------------------------------------------

    def provider_sums(self, shards: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """provider -> float64 sum of its stored (decoded) rows, over committed shards."""
        return dict(sorted(sum_providers(self._shard_groups(shards), self.layout.total).items()))

    def provider_row_counts(self, shards: Sequence[str] | None = None) -> dict[str, int]:
        """provider -> committed rows (reads the counts only, not the sum vectors)."""
        return dict(sorted(count_provider_rows(self._shard_groups(shards)).items()))

    # ---- reading rows --------------------------------------------------------------------

    def _range(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        if start < 0 or start > stop:
            raise IndexError(f"row range [{start}, {stop}) is outside the store's {self.n_rows} rows")
        return start, stop

    def _columns(self, module: str | None) -> slice:
        if module is None:
            return slice(None)
        offsets = self.layout.offsets
        if module not in offsets:
            raise KeyError(f"no module {module!r} in the store; modules: {self.layout.names}")
        return slice(*offsets[module])

    def read_rows(self, start: int = 0, stop: int | None = None, module: str | None = None) -> np.ndarray:
        """Committed rows [start, stop) decoded to float32; one module's columns if given."""
        start, stop = self._range(start, stop)
        encoded = RowArrays.of(self.root()).read_encoded(start, stop)
        return decode(encoded, self.codec.precision)[:, self._columns(module)]

    def iter_row_blocks(
        self, block_rows: int | None = None, module: str | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(start, float32 block) over all committed rows; blocks are whole chunks."""
        block_rows = max(self.chunk_rows, (block_rows or self.chunk_rows) // self.chunk_rows * self.chunk_rows)
        arrays = RowArrays.of(self.root())
        columns = self._columns(module)
        for start in range(0, self.n_rows, block_rows):
            stop = min(start + block_rows, self.n_rows)
            yield start, decode(arrays.read_encoded(start, stop), self.codec.precision)[:, columns]

    def dask_rows(self, module: str | None = None) -> da.Array:
        """Committed rows as a lazy float32 Dask array, one block per Zarr chunk."""
        root = self.root()
        n, precision = self.n_rows, self.codec.precision
        codes = da.from_zarr(root[ROWS])[:n]
        if self.codec.scaled:
            scale = da.from_zarr(root[ROW_SCALE])[:n]
            rows = da.map_blocks(
                lambda c, s: decode(EncodedRows(c, s[:, 0]), precision), codes, scale[:, None], dtype=np.float32
            )
        else:
            rows = codes.map_blocks(lambda c: decode(EncodedRows(c, None), precision), dtype=np.float32)
        return rows[:, self._columns(module)]

    # ---- reading metadata ----------------------------------------------------------------

    def read_metadata(self, start: int = 0, stop: int | None = None) -> StoredMetadata:
        """example ids, providers, shard hashes (lists) and token counts (int64) of committed rows."""
        start, stop = self._range(start, stop)
        return RowArrays.of(self.root()).read_meta(start, stop)

    def dask_metadata(self) -> dict[str, da.Array]:
        """example_id, provider, shard, n_tokens of committed rows as lazy Dask arrays."""
        columns = RowArrays.of(self.root()).columns
        return {name: da.from_zarr(array)[: self.n_rows] for name, array in columns.items()}

    def provider_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each committed row's provider as an int32 index into the sorted provider names."""
        providers = RowArrays.of(self.root()).columns["provider"][: self.n_rows]
        names, codes = np.unique(np.asarray(providers, dtype=object), return_inverse=True)
        return codes.astype(np.int32), [str(n) for n in names]
