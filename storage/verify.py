"""Whether a store is intact (`dataworth store verify`): every committed row is re-read and
checked against the manifest, so this costs one full read of the store.

Checks: manifest entries contiguous and unique; every row array long enough; per shard, the rows'
and metadata's sha256 (a damaged chunk also fails its CRC32C), the shard column, and the stored
Fisher count and provider sums against the rows; snapshots readable and over committed shards.
An uncommitted tail (a crashed commit's rows) is not a problem: nothing reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .codecs import EncodedRows, decode
from .errors import StoreError
from .manifest import ManifestEntry, MetaHasher, RowsHasher
from .rows import RowArrays
from .schema import SHARDS, StoredMetadata
from .store import GradientStore

SUM_RTOL = 1e-9  # provider sums are float64 sums of the same float32 values; only the order differs


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


def _check_shard(store: GradientStore, arrays: RowArrays, entry: ManifestEntry) -> list[str]:
    where = f"shard {entry.shard_hash}"
    rows_hash, meta_hash = RowsHasher(), MetaHasher()
    sums: dict[str, np.ndarray] = {}
    foreign = 0
    start = entry.row_start
    while start < entry.row_stop:
        stop = min(entry.row_stop, (start // arrays.chunk_rows + 1) * arrays.chunk_rows)
        try:
            encoded, meta = _read_chunk(arrays, start, stop)
        except StoreError as exc:
            return [f"{where}: {exc}"]
        rows_hash.update(encoded)
        meta_hash.update(meta, meta.shards)
        foreign += sum(s != entry.shard_hash for s in meta.shards)
        decoded, providers = decode(encoded, store.codec.precision), np.asarray(meta.providers)
        for provider in set(meta.providers):
            sums[provider] = sums.get(provider, 0) + decoded[providers == provider].sum(axis=0, dtype=np.float64)
        start = stop
    span = f"[{entry.row_start}, {entry.row_stop})"
    problems = []
    if rows_hash.hexdigest() != entry.rows_sha256:
        problems.append(f"{where}: rows {span} do not match their checksum")
    if meta_hash.hexdigest() != entry.meta_sha256:
        problems.append(f"{where}: metadata of rows {span} does not match its checksum")
    if foreign:
        problems.append(f"{where}: {foreign} of its rows are labelled with another shard")
    return problems + _check_aggregates(store, entry, sums)


def _check_aggregates(store: GradientStore, entry: ManifestEntry, sums: dict[str, np.ndarray]) -> list[str]:
    where = f"shard {entry.shard_hash}: aggregates"
    try:
        fisher_count = int(store.root()[SHARDS][entry.shard_hash].attrs["fisher_count"])
        store.fisher_partial([entry.shard_hash])
        stored = store.provider_sums([entry.shard_hash])
    except Exception as exc:
        return [f"{where} are missing or unreadable: {_failure(exc)}"]
    problems = []
    if fisher_count != entry.fisher_count:
        problems.append(f"{where}: the Fisher partial sums {fisher_count} rows, the manifest says {entry.fisher_count}")
    if stored.keys() != sums.keys():
        problems.append(f"{where}: providers {sorted(stored)} but the rows belong to {sorted(sums)}")
    for provider in stored.keys() & sums.keys():
        atol = SUM_RTOL * np.abs(sums[provider]).max(initial=0)
        if not np.allclose(stored[provider], sums[provider], rtol=SUM_RTOL, atol=atol):
            problems.append(f"{where}: provider {provider!r}'s sum of rows does not match its rows")
    return problems


def _check_snapshots(store: GradientStore) -> list[str]:
    problems, committed = [], {e.shard_hash for e in store.manifest}
    for version in store.snapshot_versions():
        where = f"Fisher snapshot {version}"
        try:
            snapshot = store.load_snapshot(version)
            values = store.self_influence(version) if snapshot.self_influence_rows is not None else None
        except Exception as exc:
            problems.append(f"{where} is unreadable: {_failure(exc)}")
            continue
        unknown = sorted(set(snapshot.shards) - committed)
        if unknown:
            problems.append(f"{where} covers shards that are not committed: {unknown}")
        if values is not None and values.shape[0] > store.n_rows:
            problems.append(f"{where}: self-influence of {values.shape[0]} rows, but the store has {store.n_rows}")
        if values is not None and not np.isfinite(values).all():
            problems.append(f"{where}: self-influence has NaN/inf values")
    return problems


def verify_store(url: str, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every problem found; empty when the store is intact."""
    try:
        store = GradientStore.open(url, read_only=True, storage_options=storage_options)
        arrays = RowArrays.of(store.root())
    except Exception as exc:
        return [f"cannot open {url} as a gradient store: {_failure(exc)}"]
    problems = _check_manifest(store.manifest)
    short = _check_lengths(store, arrays)
    if short:  # reading past the arrays' ends would only repeat this
        return problems + short
    for entry in store.manifest:
        problems += _check_shard(store, arrays, entry)
    return problems + _check_snapshots(store)
