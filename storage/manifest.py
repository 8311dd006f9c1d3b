"""The manifest of committed shards: the single commit point of the store.

Entries live in one attribute of the `manifest` group, so appending one is a single write of one
small zarr.json (a temp-file rename locally, one PUT on object stores): a shard is either in the
manifest or not, never half. Only the committer, under the lock, writes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

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
    fisher_count: int = Field(description="rows in the shard's Fisher partial sum")
    committed_at: str


def read_manifest(root: zarr.Group) -> list[ManifestEntry]:
    return [ManifestEntry(**entry) for entry in root[MANIFEST].attrs.get("entries", [])]


def append_entry(root: zarr.Group, entries: list[ManifestEntry], entry: ManifestEntry) -> list[ManifestEntry]:
    """Write the manifest with `entry` appended. `entries` must be the manifest as read under the lock."""
    updated = [*entries, entry]
    root[MANIFEST].attrs.put({"entries": [e.model_dump() for e in updated]})
    return updated


def committed_rows(entries: list[ManifestEntry]) -> int:
    return entries[-1].row_stop if entries else 0


class RowsHasher:
    """sha256 of rows fed block by block; the digest does not depend on the block boundaries."""

    def __init__(self) -> None:
        self._codes = hashlib.sha256()
        self._scale = hashlib.sha256()

    def update(self, encoded: EncodedRows) -> None:
        self._codes.update(np.ascontiguousarray(encoded.codes).tobytes())
        if encoded.scale is not None:
            self._scale.update(np.ascontiguousarray(encoded.scale, dtype="<f4").tobytes())

    def hexdigest(self) -> str:
        return hashlib.sha256(self._codes.digest() + self._scale.digest()).hexdigest()


class MetaHasher:
    """sha256 of the metadata columns fed block by block (strings NUL-terminated, so unambiguous)."""

    def __init__(self) -> None:
        self._columns = {name: hashlib.sha256() for name in ("example_id", "provider", "shard", "snippet", "n_tokens")}

    def update(self, meta: RowMetadata, shards: Iterable[str]) -> None:
        columns = (("example_id", meta.example_ids), ("provider", meta.providers), ("shard", shards),
                   ("snippet", meta.snippets))
        for name, values in columns:
            self._columns[name].update("".join(f"{v}\0" for v in values).encode())
        self._columns["n_tokens"].update(np.ascontiguousarray(meta.n_tokens, dtype="<i8").tobytes())

    def hexdigest(self) -> str:
        return hashlib.sha256(b"".join(h.digest() for h in self._columns.values())).hexdigest()
