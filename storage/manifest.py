"""The manifest of committed shards: the single commit point of the store.

Entries live in one attribute of the `manifest` group, beside the name and checksum of the
totals group that sums exactly those shards. Appending entries is a single write of one small
zarr.json (a temp-file rename locally, one PUT on object stores): shards and their share of the
totals are either committed together or not at all. Only the committer, under the lock, writes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field

from .codecs import EncodedRows
from .schema import MANIFEST, RowMetadata


class ManifestEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_hash: str = Field(description="content hash of the shard: its identity")
    name: str | None = Field(default=None, description="human name, e.g. the shard's file name")
    row_start: int
    row_stop: int
    row_count: int
    rows_sha256: str = Field(description="sha256 of the stored row codes (and per-row scales)")
    meta_sha256: str = Field(description="sha256 of the stored metadata columns")
    column_sha256: dict[str, str] = Field(description="sha256 of each metadata column, checked when read")
    fisher_count: int = Field(description="rows in the shard's Fisher partial sum")
    committed_at: str


class TotalsPointer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str = Field(description="name of the totals group under totals/")
    digests: dict[str, str] = Field(description="sha256 of each of its arrays")


@dataclass
class Manifest:
    entries: list[ManifestEntry] = field(default_factory=list)
    totals: TotalsPointer | None = None  # None until the first shard is committed

    @property
    def n_rows(self) -> int:
        return committed_rows(self.entries)

    def find(self, shard_hash: str) -> ManifestEntry | None:
        return next((e for e in self.entries if e.shard_hash == shard_hash), None)


def read_manifest_state(root: zarr.Group) -> Manifest:
    attrs: dict[str, Any] = dict(root[MANIFEST].attrs.asdict())
    totals = attrs.get("totals")
    return Manifest(
        [ManifestEntry(**entry) for entry in attrs.get("entries", [])],
        TotalsPointer(**totals) if totals else None,
    )


def read_manifest(root: zarr.Group) -> list[ManifestEntry]:
    return read_manifest_state(root).entries


def write_manifest(root: zarr.Group, manifest: Manifest) -> None:
    """The commit point. `manifest` must extend the one read under the lock."""
    totals = manifest.totals.model_dump() if manifest.totals else None
    root[MANIFEST].attrs.put({"entries": [e.model_dump() for e in manifest.entries], "totals": totals})


def committed_rows(entries: list[ManifestEntry]) -> int:
    return entries[-1].row_stop if entries else 0


class RowsHasher:
    """sha256 of rows fed block by block; the digest does not depend on the block boundaries."""

    def __init__(self) -> None:
        self._codes = hashlib.sha256()
        self._scale = hashlib.sha256()

    def update(self, encoded: EncodedRows) -> None:
        self._codes.update(np.ascontiguousarray(encoded.codes).data)  # its buffer: no copy of the block
        if encoded.scale is not None:
            self._scale.update(np.ascontiguousarray(encoded.scale, dtype="<f4").tobytes())

    def hexdigest(self) -> str:
        return hashlib.sha256(self._codes.digest() + self._scale.digest()).hexdigest()


def _column_bytes(name: str, values) -> bytes:
    if name == "n_tokens":
        return np.ascontiguousarray(values, dtype="<i8").tobytes()
    return "".join(f"{v}\0" for v in values).encode()  # NUL-terminated, so unambiguous


def column_digest(name: str, values) -> str:
    """One metadata column's sha256, as MetaHasher computes it."""
    return hashlib.sha256(_column_bytes(name, values)).hexdigest()


class MetaHasher:
    """sha256 of the metadata columns fed block by block, per column and combined."""

    def __init__(self) -> None:
        self._columns = {name: hashlib.sha256() for name in ("example_id", "provider", "shard", "snippet", "n_tokens")}

    def update(self, meta: RowMetadata, shards: Iterable[str]) -> None:
        columns = {"example_id": meta.example_ids, "provider": meta.providers, "shard": shards,
                   "snippet": meta.snippets, "n_tokens": meta.n_tokens}
        for name, values in columns.items():
            self._columns[name].update(_column_bytes(name, values))

    def hexdigest(self) -> str:
        return hashlib.sha256(b"".join(h.digest() for h in self._columns.values())).hexdigest()

    def column_hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._columns.items()}
