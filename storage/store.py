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
from zarr.core.common import JSON

from valuation.config import FisherConfig
from valuation.fisher import FisherPartial, FisherSnapshot
from valuation.layout import GradientLayout
from valuation.spec import ProjectionSpec

from . import nodes, snapshots
from .aggregates import Aggregates, ProviderSums, read_fisher, read_providers
from .codecs import CodecConfig, EncodedRows, decode
from .errors import (
    DuplicateIdsError,
    IncompleteStoreError,
    RowsInvalidError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from .faults import CREATED, crash_point
from .identity import check_compatible
from .ingest import CommitResult, commit, prepare_shard, read_totals, utc_now
from .location import StoreLocation, open_root
from .lock import Fence, committer_lock
from .manifest import Manifest, ManifestEntry, column_digest, read_manifest_state
from .projections import PROJECTIONS, checked_projections, load_projections, save_projections
from .rows import CommittedRows, RowArrays, create_row_arrays
from .schema import (
    ATTRS_KEY,
    MANIFEST,
    META,
    ROW_SCALE,
    ROWS,
    SCHEMA_VERSION,
    SNAPSHOTS,
    STAGING,
    TOTALS,
    RowMetadata,
    StoreAttributes,
    StoredMetadata,
    fisher_identity,
)
from .snapshots import StoredSnapshot
from .staging import StagingArea, commit_staged

CREATING_KEY = "dataworth_creating"  # on the root from a create's first write until its last
STORE_NODES = {ROWS, ROW_SCALE, META, MANIFEST, TOTALS, SNAPSHOTS, STAGING, PROJECTIONS, "shards"}
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


def read_attributes(root: zarr.Group, url: str) -> StoreAttributes:
    """The store's identity, or why this group cannot be read as a store of this schema."""
    if ATTRS_KEY not in root.attrs:
        if _unfinished(root):
            raise IncompleteStoreError(url)
        raise StoreFormatError(f"{url} is a Zarr group but not a gradient store (no {ATTRS_KEY!r} attributes)")
    raw: dict[str, Any] = nodes.attr(root, ATTRS_KEY)
    version = raw.get("schema_version", 0)
    if version > SCHEMA_VERSION:  # before parsing: a newer schema may add fields
        raise StoreFormatError(
            f"{url} has store schema {version}; this code reads up to {SCHEMA_VERSION}: upgrade dataworth"
        )
    if version < SCHEMA_VERSION:
        raise StoreFormatError(
            f"{url} has store schema {version} (a Fisher partial per shard); this code reads schema "
            f"{SCHEMA_VERSION}: run `dataworth store migrate --store {url}` (keeps every row)"
        )
    return StoreAttributes(**raw)


def _unfinished(root: zarr.Group) -> bool:
    """A killed create(): marked so, or (made by schema-1 code, which wrote no mark) a group holding
    nothing but store nodes and no attributes. Rows are never committed before the identity."""
    if ATTRS_KEY in root.attrs:
        return False
    if CREATING_KEY in root.attrs:
        return True
    return not root.attrs.asdict() and set(root.keys()) <= STORE_NODES


def _new_root(location: StoreLocation, since: str) -> zarr.Group:
    """The root group of a new store, marked as being created in its very first write. A group
    left so by a killed create() is started again from scratch; anything else is left alone."""
    zstore = location.zarr_store()
    mark: dict[str, JSON] = {CREATING_KEY: {"since": since}}
    try:
        return zarr.open_group(store=zstore, mode="w-", use_consolidated=False, attributes=mark)
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
        try:
            existing = open_root(zstore, location.url, mode="r")
        except Exception:
            raise StoreExistsError(location.url) from exc
        if not _unfinished(existing):
            raise StoreExistsError(location.url) from exc
    return zarr.open_group(store=zstore, mode="w", use_consolidated=False, attributes=mark)


class GradientStore:
    def __init__(self, location: StoreLocation, read_only: bool, lock_timeout: float):
        self.location = location
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self._zstore = location.zarr_store(read_only=read_only)
        root = open_root(self._zstore, location.url, mode="r" if read_only else "r+")
        self.attributes = read_attributes(root, location.url)
        self._manifest = read_manifest_state(root)
        self._verified: set[tuple[str, str]] = set()  # (shard, column) checked against the manifest

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
        calibration: dict[str, Any] | None = None,
        encoding: dict[str, Any] | None = None,
    ) -> GradientStore:
        """A new, empty store. Raises StoreExistsError if one is there already.

        `projections` ((P_in, P_out) per module) must be given for data-dependent (PCA) projections:
        later loggers and queries rebuild the same add-ons from them. `calibration` says what they
        were fitted on (kept in the store's attributes and shown in reports); `encoding` how the rows'
        examples were tokenised (valuation.data.Encoder.identity), so rows tokenised otherwise are refused."""
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
            fisher=fisher_identity(fisher),
            calibration=calibration,
            encoding=encoding,
        )
        with committer_lock(location, lock_timeout):
            root = _new_root(location, attrs.created_at)
            create_row_arrays(root, width, codec, attrs.chunk_rows)
            # Self-describing for readers without this package: which columns are which module.
            root[ROWS].attrs.put({
                "column_offsets": {name: list(span) for name, span in spec.layout.offsets.items()},
                "precision": codec.precision,
            })
            for name in (MANIFEST, TOTALS, SNAPSHOTS, STAGING):
                root.create_group(name)
            if projections is not None:
                save_projections(root, projections)
            crash_point(CREATED)
            # Identity last, replacing the creating mark: a crash before this leaves a group that
            # open() reports as not there and the next create() starts again.
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
        mine, theirs = fisher_identity(self.attributes.fisher), fisher_identity(fisher)
        if theirs != mine:
            keys = [k for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)]
            differences = ", ".join(f"{k}: {mine.get(k)} vs {theirs.get(k)}" for k in keys)
            raise RowsInvalidError(
                f"store {self.url} sums the {mine['estimator']} Fisher; these rows come with the "
                f"{theirs['estimator']} Fisher ({differences}): use the store's Fisher settings"
            )

    # ---- the committed view --------------------------------------------------------------

    def root(self) -> zarr.Group:
        """The root group, read fresh (for the internals and for inspection)."""
        return open_root(self._zstore, self.url, mode="r" if self.read_only else "r+")

    def refresh(self) -> GradientStore:
        """See shards committed since this handle was opened."""
        self._manifest = read_manifest_state(self.root())
        return self

    @property
    def manifest(self) -> list[ManifestEntry]:
        return list(self._manifest.entries)

    @property
    def committed(self) -> Manifest:
        """This view's manifest: the committed shards and the totals group that sums them."""
        return self._manifest

    @property
    def n_rows(self) -> int:
        return self._manifest.n_rows

    def is_committed(self, shard_hash: str) -> bool:
        return self._manifest.find(shard_hash) is not None

    # ---- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _committing(self) -> Iterator[tuple[zarr.Group, Fence]]:
        """The root group, fresh, and the fence to call before writes, held by the one committer."""
        if self.read_only:
            raise StoreError(f"{self.url} was opened read-only")
        with committer_lock(self.location, self.lock_timeout) as fence:
            yield self.root(), fence
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
        ids_checked_below: int = 0,
    ) -> CommitResult:
        """Append one shard's rows (n x K float32, numpy or torch), metadata and Fisher partial
        sums (computed from the rows when None), under the committer lock. A shard whose hash
        is already committed is not written again: the result says `already_committed`. One
        with an example id the store holds raises DuplicateIdsError, nothing written;
        `ids_checked_below` rows the caller has checked the ids against already are not read."""
        self.check_compatible(spec, model_fingerprint)
        self.check_fisher(fisher)
        with self._committing() as (root, fence):
            entry = read_manifest_state(root).find(shard_hash)
            if entry is not None:  # skip the encoding; commit() would write nothing either
                return CommitResult(shard_hash, "already_committed", entry.row_start, entry.row_stop)
            prepared = prepare_shard(self.attributes, shard_hash, rows, metadata, fisher_partial, name)
            result = commit(root, self.attributes, [prepared], self._flush, fence,
                            ids_checked_below=ids_checked_below)[0]
        if result.status == "refused":
            raise DuplicateIdsError(f"{self.url}: shard {name or shard_hash}: {result.reason}; nothing was written")
        return result

    def stage(self, worker_id: str, *, spec: ProjectionSpec, model_fingerprint: dict[str, Any],
              fisher: FisherConfig | None = None) -> StagingArea:
        """A staging area for one parallel logger; `commit_staged()` publishes its shards."""
        if self.read_only:
            raise StoreError(f"{self.url} was opened read-only")
        self.check_compatible(spec, model_fingerprint)
        self.check_fisher(fisher)
        return StagingArea(self.root, self.attributes, worker_id)

    def commit_staged(self, shards: Sequence[str] | None = None, *, ids_checked_below: int = 0) -> list[CommitResult]:
        """Publish the shards the staging areas hold ready under the committer lock: all, oldest
        first, or the ready ones of `shards` in that order (the order they take in the manifest).
        A shard with an example id the store holds is `refused` (its staging group dropped)."""
        with self._committing() as (root, fence):
            return commit_staged(root, self.attributes, self._flush, fence, shards=shards,
                                 ids_checked_below=ids_checked_below)

    # ---- Fisher --------------------------------------------------------------------------

    def _committed(self, shards: Sequence[str] | None, manifest: Manifest) -> list[ManifestEntry]:
        by_hash = {e.shard_hash: e for e in manifest.entries}
        if shards is None:
            return list(manifest.entries)
        missing = sorted(set(shards) - by_hash.keys())
        if missing:
            raise StoreError(f"shard(s) {missing} are not committed in {self.url}")
        return [by_hash[h] for h in dict.fromkeys(shards)]

    def _totals_group(self) -> tuple[zarr.Group, dict[str, str]] | None:
        totals = self._manifest.totals
        if totals is None:
            return None
        return nodes.group(self.root(), f"{TOTALS}/{totals.group}"), totals.digests

    def _check_all_shards(self, shards: Sequence[str] | None, what: str) -> None:
        if shards is not None and set(shards) != {e.shard_hash for e in self._manifest.entries}:
            self._committed(shards, self._manifest)  # names shards that are not committed
            raise StoreError(
                f"{what} is kept as one running total over every committed shard, not per shard; "
                "give shards=None (a provider's share can be recomputed from its stored rows)"
            )

    def fisher_partial(self, shards: Sequence[str] | None = None) -> FisherPartial:
        """The Fisher sums over every committed shard of this view (`shards`, if given, must be all of them)."""
        self._check_all_shards(shards, "the Fisher")
        found = self._totals_group()
        if found is None:
            return FisherPartial.zeros(self.layout)
        group, digests = found
        return read_fisher(group, self.layout, digests)

    def aggregates(self) -> Aggregates:
        """Fisher and provider sums over every committed shard, read together."""
        return read_totals(self.root(), self.attributes, self._manifest)

    def save_snapshot(self, snapshot: FisherSnapshot, shards: Sequence[str]) -> int:
        """Store a Fisher snapshot built from the Fisher sums over `shards`; returns its version."""
        if snapshot.layout != self.layout:
            raise RowsInvalidError("the Fisher snapshot's gradient layout is not the store's")
        with self._committing() as (root, _):
            expected = sum(e.fisher_count for e in self._committed(shards, read_manifest_state(root)))
            if snapshot.count != expected:
                raise RowsInvalidError(
                    f"the snapshot sums {snapshot.count} rows but the shards given hold {expected} Fisher rows"
                )
            return snapshots.save_snapshot(root, snapshot, shards, utc_now())

    def load_snapshot(self, version: int | None = None) -> StoredSnapshot:
        """A stored Fisher snapshot (the latest by default)."""
        return snapshots.load_snapshot(self.root(), self.layout, version)

    def snapshot_versions(self) -> list[int]:
        """Every registered snapshot, retired ones included (see snapshots.KEEP_SNAPSHOTS)."""
        return snapshots.snapshot_versions(self.root())

    def snapshot_attrs(self, version: int) -> dict[str, Any]:
        """A snapshot's attributes (count, alpha, shards, derived, retired_at), retired or not."""
        return snapshots.snapshot_attrs(self.root(), version)

    def save_self_influence(
        self, version: int, values: np.ndarray, provider_normalized_sums: dict[str, np.ndarray] | None = None
    ) -> None:
        """g^T (F + lambda)^-1 g of every committed row under snapshot `version` (float64, n_rows),
        and optionally each provider's sum of rows divided by sqrt(self-influence) (for relatif
        credit without a row scan)."""
        with self._committing() as (root, _):
            n_rows = read_manifest_state(root).n_rows
            if np.shape(values) != (n_rows,):
                raise RowsInvalidError(f"self-influence has shape {np.shape(values)}; the store has {n_rows} rows")
            snapshots.save_derived(root, version, values, provider_normalized_sums)

    def provider_normalized_sums(self, version: int | None = None) -> dict[str, np.ndarray]:
        """provider -> sum of its rows / sqrt(self-influence) under snapshot `version` (latest by default)."""
        return snapshots.read_normalized_sums(self.root(), version)

    def self_influence(self, version: int | None = None) -> np.ndarray:
        """Self-influence saved under `version` (latest by default): one value per row it covered."""
        return snapshots.read_self_influence(self.root(), version)

    # ---- provider aggregates -------------------------------------------------------------

    def _providers(self) -> ProviderSums:
        found = self._totals_group()
        if found is None:
            return ProviderSums(self.layout.total)
        group, digests = found
        return read_providers(group, self.layout.total, digests)

    def provider_sums(self) -> dict[str, np.ndarray]:
        """provider -> float64 sum of its stored (decoded) rows, over every committed shard."""
        return dict(sorted(self._providers().sums.items()))

    def provider_row_counts(self) -> dict[str, int]:
        """provider -> committed rows."""
        return dict(sorted(self._providers().rows.items()))

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

    def committed_rows(self) -> CommittedRows:
        """The committed rows as stored, for readers that decode them piece by piece (the scan)."""
        return CommittedRows(RowArrays.of(self.root()), self.n_rows, self.codec.precision)

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

    def _verify_columns(self, start: int, columns: dict[str, Any]) -> None:
        """Check each whole shard inside the read against its manifest checksums: a lost chunk of
        a metadata column reads as empty strings or zeros, and a report must never be built on it."""
        stop = start + len(next(iter(columns.values())))
        for entry in self._manifest.entries:
            if entry.row_start < start or entry.row_stop > stop or not entry.row_count:
                continue
            for name, values in columns.items():
                if (entry.shard_hash, name) in self._verified:
                    continue
                part = values[entry.row_start - start:entry.row_stop - start]
                if column_digest(name, part) != entry.column_sha256[name]:
                    raise StoreError(
                        f"{self.url}: the {name} metadata of shard {entry.shard_hash} (rows [{entry.row_start}, "
                        f"{entry.row_stop})) does not match its checksum (a lost or damaged chunk); "
                        "run `dataworth store verify`"
                    )
                self._verified.add((entry.shard_hash, name))

    def read_metadata(self, start: int = 0, stop: int | None = None) -> StoredMetadata:
        """example ids, providers, shard hashes (lists) and token counts (int64) of committed rows.
        Shards read whole are checked against their checksums (StoreError if damaged)."""
        start, stop = self._range(start, stop)
        meta = RowArrays.of(self.root()).read_meta(start, stop)
        if stop > start:
            self._verify_columns(start, {"example_id": meta.example_ids, "provider": meta.providers,
                                         "shard": meta.shards, "snippet": meta.snippets, "n_tokens": meta.n_tokens})
        return meta

    def dask_metadata(self) -> dict[str, da.Array]:
        """example_id, provider, shard, n_tokens of committed rows as lazy Dask arrays."""
        columns = RowArrays.of(self.root()).columns
        return {name: da.from_zarr(array)[: self.n_rows] for name, array in columns.items()}

    def provider_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each committed row's provider as an int32 index into the sorted provider names."""
        providers = nodes.read(RowArrays.of(self.root()).columns["provider"], slice(0, self.n_rows)).tolist()
        if providers:
            self._verify_columns(0, {"provider": providers})
        names, codes = np.unique(np.asarray(providers, dtype=object), return_inverse=True)
        return codes.astype(np.int32), [str(n) for n in names]
