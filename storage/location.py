"""Where a store lives: a local path or any fsspec URL, and how its committer is excluded:
a file lock beside a local store, a lease object beside a store on S3 (see lease.py)."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zarr
from fsspec.core import url_to_fs
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.errors import GroupNotFoundError
from zarr.storage import FsspecStore, LocalStore

from .errors import StoreNotFoundError
from .lease import LEASE_SECONDS, ObjectLease

LEASE_PROTOCOLS = ("s3", "s3a")  # object stores whose conditional writes the lease relies on


@dataclass(frozen=True)
class StoreLocation:
    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    lease_seconds: float = LEASE_SECONDS  # S3 only: how long a dead committer's lease blocks others

    @property
    def local_path(self) -> Path | None:
        """The directory of a local store (plain path or file:// URL), None for other URLs."""
        if self.url.startswith("file://"):
            return Path(self.url[len("file://"):])
        if "://" in self.url:
            return None
        return Path(self.url).expanduser()

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    @property
    def options(self) -> dict[str, Any]:
        """fsspec options for this URL. S3 listings are never cached: other processes add staging
        groups that a cached listing would hide from the committer."""
        if self.protocol in LEASE_PROTOCOLS:
            return {"use_listings_cache": False, **self.storage_options}
        return dict(self.storage_options)

    def lease(self) -> ObjectLease | None:
        """The committer lease object `<store>.lease` of a store on S3; None elsewhere (a file lock)."""
        if self.protocol not in LEASE_PROTOCOLS:
            return None
        fs, path = url_to_fs(self.url.rstrip("/") + ".lease", **self.options)
        return ObjectLease(fs, path, self.url, self.lease_seconds)

    @property
    def lock_path(self) -> Path:
        """Beside a local store (inside it would look like a node to Zarr); for other non-S3 URLs
        a host-local file, so the lock excludes committers on this machine only."""
        local = self.local_path
        if local is not None:
            return local.resolve().with_name(local.resolve().name + ".lock")
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "dataworth-locks" / f"{digest}.lock"

    def zarr_store(self, read_only: bool = False) -> Store:
        local = self.local_path
        if local is not None:
            # LocalStore writes each key to a temporary file and renames it: a killed writer never
            # leaves a torn chunk or zarr.json. (fsspec's file:// store writes in place.)
            return LocalStore(local, read_only=read_only)
        return FsspecStore.from_url(self.url, storage_options=self.options or None, read_only=read_only)


def open_root(store: Store, url: str, mode: Literal["r", "r+", "a", "w", "w-"] = "r+") -> zarr.Group:
    """The root group, read fresh from the store (never from consolidated metadata, which goes stale)."""
    try:
        return zarr.open_group(store=store, mode=mode, use_consolidated=False)
    except (FileNotFoundError, GroupNotFoundError) as exc:
        raise StoreNotFoundError(url) from exc


def stored_bytes(store: Store, prefix: str = "") -> int:
    """Bytes the store holds under `prefix`, as written (after compression)."""
    return sync(store.getsize_prefix(prefix))
