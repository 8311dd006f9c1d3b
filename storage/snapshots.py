"""Versioned Fisher snapshots and what is derived from each: every row's self-influence and each
provider's sum of normalised rows.

A snapshot's arrays are written first and its version registered in `snapshots` attrs last, so
a crash leaves an unregistered group that the next save of that version overwrites. Derived
arrays go into a new group derived/d<k> and are committed by one write of the snapshot's
attributes naming that group and the checksum of its arrays: a kill while they are written
leaves the previous, complete set in force, and a damaged set fails its checksum when read, so
the next refresh recomputes it. Stored gradients are never preconditioned, so a new snapshot
never rewrites rows.

Only the newest KEEP_SNAPSHOTS keep their eigenvectors and derived arrays (each as large as the
Fisher itself, and N float64 of self-influence): older ones are retired to their attributes and
eigenvalues, which is what a report's provenance names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr

from valuation.fisher import FisherSnapshot
from valuation.layout import GradientLayout

from . import nodes
from .aggregates import digest, read_whole
from .codecs import create_aux_array, put_array
from .errors import StoreError
from .faults import SELF_INFLUENCE_WRITING, crash_point
from .schema import SNAPSHOTS

EIGVALS = "eigvals"
EIGVECS = "eigvecs"
DERIVED = "derived"
SELF_INFLUENCE = "self_influence"
NORMALIZED_SUMS = "provider_normalized_sums"
# The latest serves new runs; the one before serves runs that opened the store before a refresh.
KEEP_SNAPSHOTS = 2


@dataclass
class StoredSnapshot:
    version: int
    fisher: FisherSnapshot
    shards: list[str]
    created_at: str
    self_influence_rows: int | None  # rows covered by the stored self-influence, None if not saved


def _group_name(version: int) -> str:
    return f"v{version:06d}"


def snapshot_versions(root: zarr.Group) -> list[int]:
    return [int(v) for v in nodes.attr(nodes.group(root, SNAPSHOTS), "versions", [])]


def _group(root: zarr.Group, version: int | None, *, retired_ok: bool = False) -> tuple[int, zarr.Group]:
    versions = snapshot_versions(root)
    if not versions:
        raise StoreError("the store has no Fisher snapshot yet; save one with save_snapshot")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise StoreError(f"no Fisher snapshot version {version}; the store has versions {versions}")
    group = nodes.group(root, f"{SNAPSHOTS}/{_group_name(version)}")
    if not retired_ok and group.attrs.get("retired_at"):
        raise StoreError(
            f"Fisher snapshot {version} was retired at {group.attrs['retired_at']} (only the latest "
            f"{KEEP_SNAPSHOTS} keep their eigenvectors); use snapshot {versions[-1]}"
        )
    return version, group


def snapshot_attrs(root: zarr.Group, version: int) -> dict[str, Any]:
    """A snapshot's attributes (shards, count, alpha, derived, retired_at ...) without its arrays."""
    return dict(_group(root, version, retired_ok=True)[1].attrs.asdict())


def _spectrum(snapshot: FisherSnapshot) -> tuple[np.ndarray, np.ndarray]:
    modules = snapshot.layout.modules
    return (np.concatenate([snapshot.eigvals[m.name].double().numpy() for m in modules]),
            np.concatenate([snapshot.eigvecs[m.name].double().numpy().ravel() for m in modules]))


def save_snapshot(root: zarr.Group, snapshot: FisherSnapshot, shards: Sequence[str], created_at: str) -> int:
    versions = snapshot_versions(root)
    version = max(versions, default=0) + 1
    group = nodes.group(root, SNAPSHOTS).create_group(_group_name(version), overwrite=True)
    eigvals, eigvecs = _spectrum(snapshot)
    put_array(group, EIGVALS, eigvals)
    put_array(group, EIGVECS, eigvecs)
    group.attrs.put({
        "lambdas": {m.name: float(snapshot.lambdas[m.name]) for m in snapshot.layout.modules},
        "alpha": snapshot.alpha,
        "count": snapshot.count,
        "shards": list(shards),
        "created_at": created_at,
        "digest": digest(eigvals, eigvecs),
        "derived": None,
    })
    nodes.group(root, SNAPSHOTS).attrs.put({"versions": [*versions, version]})
    retire_old(root, created_at)
    return version


def retire_old(root: zarr.Group, when: str) -> None:
    """Drop eigenvectors and derived arrays of all but the newest KEEP_SNAPSHOTS snapshots.
    Marked retired first, so a crash half-way leaves arrays nothing reads; the next call drops them."""
    for version in snapshot_versions(root)[:-KEEP_SNAPSHOTS]:
        group = nodes.group(root, f"{SNAPSHOTS}/{_group_name(version)}")
        if not group.attrs.get("retired_at"):
            group.attrs.update({"retired_at": when, "derived": None})
        for name in (EIGVECS, DERIVED):
            if name in group:
                del group[name]


def load_snapshot(root: zarr.Group, layout: GradientLayout, version: int | None) -> StoredSnapshot:
    version, group = _group(root, version)
    attrs: dict[str, Any] = dict(group.attrs.asdict())
    flat_vals, flat_vecs = read_whole(group, EIGVALS), read_whole(group, EIGVECS)
    if digest(flat_vals, flat_vecs) != attrs["digest"]:
        raise StoreError(f"Fisher snapshot {version} does not match its checksum; run `dataworth store verify`")
    eigvals, eigvecs, at_val, at_vec = {}, {}, 0, 0
    for m in layout.modules:
        eigvals[m.name] = torch.from_numpy(flat_vals[at_val:at_val + m.size].copy())
        eigvecs[m.name] = torch.from_numpy(flat_vecs[at_vec:at_vec + m.size * m.size].reshape(m.size, m.size).copy())
        at_val, at_vec = at_val + m.size, at_vec + m.size * m.size
    fisher = FisherSnapshot(layout, eigvals, eigvecs, dict(attrs["lambdas"]), attrs["alpha"], attrs["count"])
    derived = attrs.get("derived")
    return StoredSnapshot(version, fisher, list(attrs["shards"]), attrs["created_at"],
                          derived["rows"] if derived else None)


def save_derived(
    root: zarr.Group, version: int, values: np.ndarray, normalized_sums: dict[str, np.ndarray] | None = None
) -> None:
    """Self-influence (and optionally normalised provider sums) of snapshot `version`, committed
    as one set by the write of the snapshot's attributes."""
    _, group = _group(root, version)
    previous = nodes.attr(group, "derived")
    name = f"d{(previous['seq'] if previous else 0) + 1:06d}"
    derived = group.require_group(DERIVED).create_group(name, overwrite=True)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    array = create_aux_array(derived, SELF_INFLUENCE, values.shape, values.dtype)
    crash_point(SELF_INFLUENCE_WRITING)
    if values.size:
        array[...] = values
    providers = sorted(normalized_sums) if normalized_sums is not None else None
    sums = np.zeros(0)
    if normalized_sums and providers:
        sums = np.stack([normalized_sums[p] for p in providers]).astype(np.float64)
    if providers:
        put_array(derived, NORMALIZED_SUMS, sums)
    group.attrs.update({"derived": {
        "group": name, "seq": int(name[1:]), "rows": int(values.shape[0]), "providers": providers,
        "digest": digest(values, sums),
    }})
    kept = nodes.group(group, DERIVED)
    for old in set(kept.group_keys()) - {name}:
        del kept[old]


def _read_derived(root: zarr.Group, version: int | None) -> tuple[int, dict[str, Any], np.ndarray, np.ndarray]:
    version, group = _group(root, version)
    derived: dict[str, Any] | None = nodes.attr(group, "derived")
    if derived is None:
        raise StoreError(f"Fisher snapshot {version} has no self-influence saved; save it with save_self_influence")
    arrays = nodes.group(group, f"{DERIVED}/{derived['group']}")
    values = read_whole(arrays, SELF_INFLUENCE)
    sums = read_whole(arrays, NORMALIZED_SUMS) if NORMALIZED_SUMS in arrays else np.zeros(0)
    if digest(values, sums) != derived["digest"]:
        raise StoreError(
            f"the self-influence of Fisher snapshot {version} does not match its checksum; "
            "`dataworth run refresh-fisher` recomputes it"
        )
    return version, derived, values, sums


def read_normalized_sums(root: zarr.Group, version: int | None) -> dict[str, np.ndarray]:
    version, derived, _, sums = _read_derived(root, version)
    if derived["providers"] is None:
        raise StoreError(f"Fisher snapshot {version} has no provider sums of normalised rows saved")
    return {p: sums[i] for i, p in enumerate(derived["providers"])}


def read_self_influence(root: zarr.Group, version: int | None) -> np.ndarray:
    return _read_derived(root, version)[2]
