"""One committer per store: an inter-process lock around every change to shared Zarr metadata.

Zarr has no locking, and resizes, appends and attribute updates from two processes at once lose
rows. The lock is an flock (via filelock): the kernel releases it when the holder exits, even by
SIGKILL, so a crashed ingestion never leaves a stale lock behind. A side file names the holder
for the error message of whoever has to wait.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import filelock

from .errors import StoreLockedError


def _holder(owner: Path) -> str:
    try:
        return owner.read_text().strip() or "holder unknown"
    except OSError:
        return "holder unknown"


@contextlib.contextmanager
def committer_lock(path: Path, url: str, timeout: float) -> Iterator[None]:
    """Hold the store's committer lock; wait up to `timeout` s (0: fail at once), then StoreLockedError."""
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
