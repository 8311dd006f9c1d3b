"""One committer per store: an inter-process lock around every change to shared Zarr metadata.

Zarr has no locking, and resizes, appends and attribute updates from two processes at once lose
rows. Locally the lock is an flock (via filelock): the kernel releases it when the holder exits,
even by SIGKILL, so a crashed ingestion never leaves a stale lock behind; a side file names the
holder for the error message of whoever has to wait. On S3, which has no locks, it is a lease
object taken and renewed by conditional writes (lease.py). Either way the holder gets a fence to
call before each write: a no-op under the file lock, a check that the lease is still held.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import filelock

from .errors import StoreLockedError
from .location import StoreLocation


class Fence(Protocol):
    def __call__(self, *, publish: bool = False) -> None:
        """Raise if this committer may no longer write; `publish`: before the commit point."""


def no_fence(*, publish: bool = False) -> None:
    """The file lock cannot be lost while its holder lives: nothing to check."""


def _holder(owner: Path) -> str:
    try:
        return owner.read_text().strip() or "holder unknown"
    except OSError:
        return "holder unknown"


@contextlib.contextmanager
def file_lock(path: Path, url: str, timeout: float) -> Iterator[None]:
    """Hold the flock at `path`; wait up to `timeout` s (0: fail at once), then StoreLockedError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = path.with_name(path.name + ".owner")
    lock = filelock.FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise StoreLockedError(url, timeout, _holder(owner)) from None
    try:
        since = datetime.now(UTC).isoformat(timespec="seconds")
        owner.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def committer_lock(location: StoreLocation, timeout: float) -> Iterator[Fence]:
    """Be the store's one committer: the lease on S3, the file lock elsewhere. Waits up to
    `timeout` s (0: one try), then StoreLockedError naming the holder."""
    lease = location.lease()
    if lease is None:
        with file_lock(location.lock_path, location.url, timeout):
            yield no_fence
        return
    lease.acquire(timeout)
    try:
        yield lease.fence
    finally:
        lease.release()
