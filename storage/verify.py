"""Whether a store is intact (`dataworth store verify`): every committed row is re-read and
checked against the manifest, so this costs one full read of the store.

Checks: manifest entries contiguous and unique; every row array long enough; per shard, the rows'
and metadata's sha256 (a damaged chunk also fails its CRC32C) and the shard column; the totals:
their checksums, that they cover exactly the committed shards and Fisher rows, and the provider
sums and counts against the rows; snapshots readable and over committed shards; for the latest
snapshot's derived arrays, their checksum, the self-influence recomputed from the rows, and the
normalised provider sums recomputed from the rows and that self-influence. An uncommitted tail
(a crashed commit's rows) is not a problem: nothing reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from valuation.fisher import FisherSnapshot
from valuation.influence import safe_rsqrt

from . import nodes
from .aggregates import ProviderSums
from .codecs import EncodedRows, decode
from .errors import StoreError
from .ingest import read_totals
from .manifest import Manifest, ManifestEntry, MetaHasher, RowsHasher
from .rows import RowArrays
from .schema import TOTALS, StoredMetadata, fisher_identity
from .store import GradientStore

SUM_RTOL = 1e-9  # float64 sums of the same float32 values; only the order differs


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _check_manifest(entries: list[ManifestEntry]) -> list[str]:
    problems, expected, seen = [], 0, set()
    for e in entries:
        if e.row_start != expected or e.row_stop - e.row_start != e.row_count:
            problems.append(
                f"manifest: shard {e.shard_hash} claims rows [{e.row_start}, {e.row_stop}) ({e.row_count} rows); "
                f"the previous shard ends at {expected}"
            )
        if e.shard_hash in seen:
            problems.append(f"manifest: shard {e.shard_hash} is listed twice")
        seen.add(e.shard_hash)
        expected = e.row_stop
    return problems


def _check_lengths(store: GradientStore, arrays: RowArrays) -> list[str]:
    names = ["rows", *(["row_scale"] if arrays.scale is not None else []), *arrays.columns]
    short = [f"{name} has {n}" for name, n in zip(names, arrays.lengths()) if n < store.n_rows]
    return [f"the manifest commits {store.n_rows} rows but " + ", ".join(short)] if short else []


def _read_chunk(arrays: RowArrays, start: int, stop: int) -> tuple[EncodedRows, StoredMetadata]:
    """One chunk of every row array; a failure names the array and the chunk."""
    where = f"chunk {start // arrays.chunk_rows} (rows [{start}, {stop}))"
    try:
        encoded = arrays.read_encoded(start, stop)
    except Exception as exc:  # a damaged chunk surfaces as a codec error of whatever kind
        raise StoreError(f"rows {where} is unreadable: {_failure(exc)}") from exc
    try:
        meta = arrays.read_meta(start, stop)
    except Exception as exc:
        raise StoreError(f"metadata {where} is unreadable: {_failure(exc)}") from exc
    return encoded, meta


@dataclass
class Derived:
    """The latest snapshot's derived arrays, re-derived from the rows as they are read."""

    version: int
    fisher: FisherSnapshot
    self_influence: np.ndarray
    providers: list[str] | None
    normalized_sums: dict[str, np.ndarray]
    recomputed: ProviderSums
    worst_influence_error: float = 0.0

    def add(self, start: int, decoded: np.ndarray, providers: list[str]) -> None:
        stop = min(start + len(decoded), len(self.self_influence))
        if stop <= start:
            return
        rows, stored = decoded[: stop - start], self.self_influence[start:stop]
        fresh = self.fisher.self_influence(torch.from_numpy(rows)).numpy()
        scale = np.maximum(np.abs(stored), 1e-300)
        self.worst_influence_error = max(self.worst_influence_error, float((np.abs(fresh - stored) / scale).max()))
        normalised = rows.astype(np.float64) * safe_rsqrt(torch.from_numpy(stored)).numpy()[:, None]
        self.recomputed.add(normalised, providers[: stop - start])

    def problems(self) -> list[str]:
        where = f"Fisher snapshot {self.version}"
        problems = []
        if self.worst_influence_error > 1e-6:
            problems.append(f"{where}: self-influence differs from the rows' by {self.worst_influence_error:.1e} "
                            "(relative); `dataworth run refresh-fisher` recomputes it")
        if self.providers is not None:
            problems += _compare_sums(f"{where}: normalised sums", self.normalized_sums, self.recomputed.sums)
        return problems


@dataclass
class Scan:
    """What one pass over the committed rows accumulates for the store-wide checks."""

    providers: ProviderSums
    derived: Derived | None
    problems: list[str] = field(default_factory=list)


def _check_shard(store: GradientStore, arrays: RowArrays, entry: ManifestEntry, scan: Scan) -> None:
    where = f"shard {entry.shard_hash}"
    rows_hash, meta_hash = RowsHasher(), MetaHasher()
    foreign = 0
    start = entry.row_start
    while start < entry.row_stop:
        stop = min(entry.row_stop, (start // arrays.chunk_rows + 1) * arrays.chunk_rows)
        try:
            encoded, meta = _read_chunk(arrays, start, stop)
        except StoreError as exc:
            scan.problems.append(f"{where}: {exc}")
            return
        rows_hash.update(encoded)
        meta_hash.update(meta, meta.shards)
        foreign += sum(s != entry.shard_hash for s in meta.shards)
        decoded = decode(encoded, store.codec.precision)
        scan.providers.add(decoded, meta.providers)
        if scan.derived is not None:
            scan.derived.add(start, decoded, meta.providers)
        start = stop
    span = f"[{entry.row_start}, {entry.row_stop})"
    if rows_hash.hexdigest() != entry.rows_sha256:
        scan.problems.append(f"{where}: rows {span} do not match their checksum")
    if meta_hash.hexdigest() != entry.meta_sha256:
        damaged = [n for n, h in meta_hash.column_hexdigests().items() if entry.column_sha256.get(n) != h]
        scan.problems.append(f"{where}: metadata of rows {span} does not match its checksum ({', '.join(damaged)})")
    if foreign:
        scan.problems.append(f"{where}: {foreign} of its rows are labelled with another shard")


def _compare_sums(what: str, stored: dict[str, np.ndarray], fresh: dict[str, np.ndarray]) -> list[str]:
    if stored.keys() != fresh.keys():
        return [f"{what}: providers {sorted(stored)} but the rows belong to {sorted(fresh)}"]
    problems = []
    for provider in sorted(stored):
        atol = SUM_RTOL * np.abs(fresh[provider]).max(initial=0)
        if not np.allclose(stored[provider], fresh[provider], rtol=SUM_RTOL, atol=atol):
            problems.append(f"{what}: provider {provider!r}'s sum does not match its rows")
    return problems


def _check_totals(store: GradientStore, manifest: Manifest, rows: ProviderSums | None) -> list[str]:
    """`rows`: the provider sums of the rows as read, None if some rows could not be trusted."""
    if manifest.totals is None:
        return ["totals: the manifest names no totals group but commits shards"] if manifest.entries else []
    where = f"totals {manifest.totals.group}"
    root = store.root()
    try:
        totals = read_totals(root, store.attributes, manifest)
        attrs: dict[str, Any] = dict(nodes.group(root, f"{TOTALS}/{manifest.totals.group}").attrs.asdict())
    except Exception as exc:
        return [f"{where} are missing or unreadable: {_failure(exc)}"]
    problems = []
    if attrs.get("shards") != [e.shard_hash for e in manifest.entries]:
        problems.append(f"{where} do not cover exactly the committed shards")
    if totals.fisher.count != sum(e.fisher_count for e in manifest.entries):
        problems.append(f"{where}: the Fisher sums {totals.fisher.count} rows, the manifest's shards "
                        f"{sum(e.fisher_count for e in manifest.entries)}")
    if fisher_identity(attrs.get("fisher")) != fisher_identity(store.attributes.fisher):
        problems.append(f"{where}: the Fisher is of {attrs.get('fisher')}, the store's is {store.attributes.fisher}")
    if rows is None:  # damaged rows are reported per shard; their sums would only repeat it
        return problems
    stored = dict(zip(totals.providers, totals.provider_sums))
    problems += _compare_sums(f"{where}: provider sums", stored, rows.sums)
    counts = dict(zip(totals.providers, totals.provider_rows.tolist()))
    if counts != rows.rows:
        problems.append(f"{where}: provider row counts {counts} but the rows hold {rows.rows}")
    return problems


def _check_snapshots(store: GradientStore) -> tuple[list[str], Derived | None]:
    problems, committed, derived = [], {e.shard_hash for e in store.manifest}, None
    versions = store.snapshot_versions()
    for version in versions:
        where = f"Fisher snapshot {version}"
        if store.snapshot_attrs(version).get("retired_at"):
            continue
        try:
            snapshot = store.load_snapshot(version)
            values = store.self_influence(version) if snapshot.self_influence_rows is not None else None
            sums = store.provider_normalized_sums(version) if values is not None else None
        except StoreError as exc:
            if "no provider sums" not in str(exc):
                problems.append(f"{where} is unreadable: {exc}")
                continue
            sums = None
        except Exception as exc:
            problems.append(f"{where} is unreadable: {_failure(exc)}")
            continue
        unknown = sorted(set(snapshot.shards) - committed)
        if unknown:
            problems.append(f"{where} covers shards that are not committed: {unknown}")
        if values is None:
            continue
        if values.shape[0] > store.n_rows:
            problems.append(f"{where}: self-influence of {values.shape[0]} rows, but the store has {store.n_rows}")
        elif not np.isfinite(values).all():
            problems.append(f"{where}: self-influence has NaN/inf values")
        elif version == versions[-1]:
            providers = None if sums is None else sorted(sums)
            derived = Derived(version, snapshot.fisher, values, providers, sums or {}, ProviderSums(store.layout.total))
    return problems, derived


def verify_store(url: str, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every problem found; empty when the store is intact."""
    try:
        store = GradientStore.open(url, read_only=True, storage_options=storage_options)
        arrays = RowArrays.of(store.root())
    except Exception as exc:
        return [f"cannot open {url} as a gradient store: {_failure(exc)}"]
    manifest = store.committed
    problems = _check_manifest(manifest.entries)
    short = _check_lengths(store, arrays)
    if short:  # reading past the arrays' ends would only repeat this
        return problems + short
    snapshot_problems, derived = _check_snapshots(store)
    scan = Scan(ProviderSums(store.layout.total), derived)
    for entry in manifest.entries:
        _check_shard(store, arrays, entry, scan)
    rows_ok = not scan.problems
    problems += scan.problems + _check_totals(store, manifest, scan.providers if rows_ok else None)
    problems += snapshot_problems
    if derived is not None and rows_ok:
        problems += derived.problems()
    return problems
