"""Upgrading a store of an older schema in place (`dataworth store migrate URL`).

Schema 1 kept a Fisher partial and provider sums per shard (shards/<hash>/), so its bytes grew
with every shard. Schema 2 keeps one running total (totals/t<n>), per-column metadata checksums
in the manifest, checksummed snapshots, and derived arrays committed with their snapshot. The
migration, under the committer lock:
1. sums the per-shard groups into one totals group and checks every shard's metadata against
   its checksum while it computes the per-column ones (a damaged store is refused: verify it);
2. checksums each snapshot's eigenvectors and drops its self-influence and normalised sums
   (schema 1 could leave them inconsistent after a kill; the next refresh-fisher recomputes
   them), and retires all but the newest snapshots;
3. writes the manifest, then the identity with schema_version 2 (the commit point), then
   deletes shards/. A kill before the identity write leaves a schema-1 store that the same
   command migrates again from scratch; rows are never touched.
"""

from __future__ import annotations

from typing import Any

import zarr

from . import nodes
from .aggregates import Aggregates, digest, read_aggregates, write_aggregates
from .errors import StoreError, StoreFormatError
from .ingest import totals_name, utc_now
from .location import StoreLocation, open_root
from .lock import committer_lock
from .manifest import Manifest, ManifestEntry, MetaHasher, TotalsPointer, write_manifest
from .rows import RowArrays
from .schema import ATTRS_KEY, MANIFEST, SCHEMA_VERSION, SNAPSHOTS, TOTALS, StoreAttributes, fisher_identity
from .snapshots import EIGVALS, EIGVECS, NORMALIZED_SUMS, SELF_INFLUENCE, retire_old, snapshot_versions

LEGACY_SHARDS = "shards"


def _schema2_attributes(raw: dict[str, Any]) -> StoreAttributes:
    legacy = {"estimator": raw.get("fisher_estimator", "empirical"), "sample_seed": raw.get("fisher_sample_seed", 0)}
    kept = {k: v for k, v in raw.items() if k not in ("fisher_estimator", "fisher_sample_seed")}
    return StoreAttributes(**{**kept, "schema_version": SCHEMA_VERSION, "fisher": fisher_identity(legacy)})


def _migrate_entries(root: zarr.Group, attrs: StoreAttributes) -> tuple[list[ManifestEntry], Aggregates]:
    arrays = RowArrays.of(root)
    totals = Aggregates.zeros(attrs.layout)
    entries = []
    raws: list[dict[str, Any]] = nodes.attr(nodes.group(root, MANIFEST), "entries", [])
    for raw in raws:
        shard = raw["shard_hash"]
        totals = totals + read_aggregates(nodes.group(root, f"{LEGACY_SHARDS}/{shard}"), attrs.layout)
        hasher = MetaHasher()
        meta = arrays.read_meta(raw["row_start"], raw["row_stop"])
        hasher.update(meta, meta.shards)
        if hasher.hexdigest() != raw["meta_sha256"]:
            raise StoreError(f"shard {shard}: its metadata does not match its checksum; "
                             "`dataworth store verify` shows the damage; nothing was migrated")
        entries.append(ManifestEntry(**raw, column_sha256=hasher.column_hexdigests()))
    return entries, totals


def _migrate_snapshots(root: zarr.Group, when: str) -> list[str]:
    notes = []
    for version in snapshot_versions(root):
        group = nodes.group(root, f"{SNAPSHOTS}/v{version:06d}")
        attrs: dict[str, Any] = dict(group.attrs.asdict())
        if attrs.get("self_influence_rows") is not None:
            notes.append(f"snapshot {version}: self-influence dropped; `dataworth run refresh-fisher` recomputes it")
        kept = {k: attrs[k] for k in ("lambdas", "alpha", "count", "shards", "created_at")}
        spectrum = digest(nodes.read(nodes.array(group, EIGVALS)), nodes.read(nodes.array(group, EIGVECS)))
        group.attrs.put({**kept, "digest": spectrum, "derived": None})
        for name in (SELF_INFLUENCE, NORMALIZED_SUMS):
            if name in group:
                del group[name]
    retire_old(root, when)
    return notes


def migrate_store(url: str, *, storage_options: dict[str, Any] | None = None, lock_timeout: float = 60.0) -> list[str]:
    """Upgrade the store at `url` to the current schema; returns what was done, line by line."""
    location = StoreLocation(str(url), storage_options or {})
    with committer_lock(location, lock_timeout):
        root = open_root(location.zarr_store(), location.url, mode="r+")
        raw: dict[str, Any] | None = nodes.attr(root, ATTRS_KEY)
        if raw is None:
            raise StoreFormatError(f"{url} is not a gradient store (no {ATTRS_KEY!r} attributes)")
        version = raw.get("schema_version", 0)
        if version == SCHEMA_VERSION:
            if LEGACY_SHARDS in root:  # a migration killed after its commit point
                del root[LEGACY_SHARDS]
            return [f"{url} is already at schema {SCHEMA_VERSION}"]
        if version != 1:
            raise StoreFormatError(f"{url} has store schema {version}; this code migrates schema 1 only")
        attrs = _schema2_attributes(raw)
        entries, totals = _migrate_entries(root, attrs)
        group = root.require_group(TOTALS)
        for old in list(group.group_keys()):  # a killed migration's
            del group[old]
        pointer = None
        if entries:
            name = totals_name(len(entries))
            extra = {"shards": [e.shard_hash for e in entries], "fisher": attrs.fisher}
            pointer = TotalsPointer(group=name, digests=write_aggregates(group.create_group(name), totals, extra))
        notes = _migrate_snapshots(root, utc_now())
        write_manifest(root, Manifest(entries, pointer))
        root.attrs.put({ATTRS_KEY: attrs.model_dump(mode="json")})
        if LEGACY_SHARDS in root:
            del root[LEGACY_SHARDS]
    return [f"{url}: schema 1 -> {SCHEMA_VERSION}; the Fisher partials and provider sums of {len(entries)} "
            "shard(s) summed into one running total", *notes]
