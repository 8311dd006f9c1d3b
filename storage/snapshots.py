"""Versioned Fisher snapshots and the self-influence of each row under one of them.

A snapshot's arrays are written first and its version registered in `snapshots` attrs last, so
a crash leaves an unregistered group that the next save of that version overwrites. Stored
gradients are never preconditioned, so a new snapshot never rewrites rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from valuation.fisher import FisherSnapshot
from valuation.layout import GradientLayout

from .codecs import put_array
from .errors import StoreError
from .schema import SNAPSHOTS

EIGVALS = "eigvals"
EIGVECS = "eigvecs"
SELF_INFLUENCE = "self_influence"
NORMALIZED_SUMS = "provider_normalized_sums"


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
    return [int(v) for v in root[SNAPSHOTS].attrs.get("versions", [])]


def _group(root: zarr.Group, version: int | None) -> tuple[int, zarr.Group]:
    versions = snapshot_versions(root)
    if not versions:
        raise StoreError("the store has no Fisher snapshot yet; save one with save_snapshot")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise StoreError(f"no Fisher snapshot version {version}; the store has versions {versions}")
    return version, root[SNAPSHOTS][_group_name(version)]


def snapshot_attrs(root: zarr.Group, version: int) -> dict:
    """A snapshot's attributes (shards, count, alpha, ...) without reading its arrays."""
    return _group(root, version)[1].attrs.asdict()


def save_snapshot(root: zarr.Group, snapshot: FisherSnapshot, shards: Sequence[str], created_at: str) -> int:
    versions = snapshot_versions(root)
    version = max(versions, default=0) + 1
    group = root[SNAPSHOTS].create_group(_group_name(version), overwrite=True)
    modules = snapshot.layout.modules
    put_array(group, EIGVALS, np.concatenate([snapshot.eigvals[m.name].double().numpy() for m in modules]))
    put_array(group, EIGVECS, np.concatenate([snapshot.eigvecs[m.name].double().numpy().ravel() for m in modules]))
    group.attrs.put({
        "lambdas": {m.name: float(snapshot.lambdas[m.name]) for m in modules},
        "alpha": snapshot.alpha,
        "count": snapshot.count,
        "shards": list(shards),
        "created_at": created_at,
        "self_influence_rows": None,
    })
    root[SNAPSHOTS].attrs.put({"versions": [*versions, version]})
    return version


def load_snapshot(root: zarr.Group, layout: GradientLayout, version: int | None) -> StoredSnapshot:
    version, group = _group(root, version)
    attrs = group.attrs.asdict()
    flat_vals, flat_vecs = group[EIGVALS][...], group[EIGVECS][...]
    eigvals, eigvecs, at_val, at_vec = {}, {}, 0, 0
    for m in layout.modules:
        eigvals[m.name] = torch.from_numpy(flat_vals[at_val:at_val + m.size].copy())
        eigvecs[m.name] = torch.from_numpy(flat_vecs[at_vec:at_vec + m.size * m.size].reshape(m.size, m.size).copy())
        at_val, at_vec = at_val + m.size, at_vec + m.size * m.size
    fisher = FisherSnapshot(layout, eigvals, eigvecs, dict(attrs["lambdas"]), attrs["alpha"], attrs["count"])
    return StoredSnapshot(version, fisher, list(attrs["shards"]), attrs["created_at"], attrs["self_influence_rows"])


def save_self_influence(
    root: zarr.Group, version: int, values: np.ndarray, normalized_sums: dict[str, np.ndarray] | None = None
) -> None:
    _, group = _group(root, version)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    put_array(group, SELF_INFLUENCE, values)
    if normalized_sums is not None:
        providers = sorted(normalized_sums)
        put_array(group, NORMALIZED_SUMS, np.stack([normalized_sums[p] for p in providers]).astype(np.float64))
        group.attrs["normalized_providers"] = providers
    group.attrs["self_influence_rows"] = int(values.shape[0])  # last: marks the arrays complete


def read_normalized_sums(root: zarr.Group, version: int | None) -> dict[str, np.ndarray]:
    version, group = _group(root, version)
    providers = group.attrs.get("normalized_providers")
    if providers is None or group.attrs.get("self_influence_rows") is None:
        raise StoreError(f"Fisher snapshot {version} has no provider sums of normalised rows saved")
    sums = group[NORMALIZED_SUMS][...]
    return {p: sums[i] for i, p in enumerate(providers)}


def read_self_influence(root: zarr.Group, version: int | None) -> np.ndarray:
    version, group = _group(root, version)
    rows = group.attrs.get("self_influence_rows")
    if rows is None:
        raise StoreError(f"Fisher snapshot {version} has no self-influence saved; save it with save_self_influence")
    return group[SELF_INFLUENCE][:rows]
