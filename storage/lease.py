"""The committer lease of a store on object storage, where there is no file lock.

S3 has no locks, but it has conditional writes: a PUT with `If-None-Match: *` creates an object
only if there is none, and one with `If-Match: <etag>` replaces it only if nobody has replaced it
since it was read. The lease is one small JSON object beside the store (`<store>.lease`) holding
a fencing token, the holder and a nonce; every change to it is such a compare-and-swap, so of
any number of committers racing for it exactly one wins each change.

- Acquire: create the object (token 1), or replace one that is released, or one whose ETag has
  not changed for `ttl` seconds of the waiter's own clock (its holder stopped renewing: dead,
  or cut off), with token + 1. Judging expiry by an unchanged ETag needs no agreement between
  the machines' clocks, only that they tick at about the same rate.
- Hold: a heartbeat thread renews the lease (a compare-and-swap on the holder's last ETag)
  every ttl / 3. A renewal that finds the ETag changed means another committer took over:
  the lease is lost and stays lost.
- Fence: before each write the committer calls the fence, which raises LeaseLostError if the
  lease was lost or not renewed for ttl / 2; before the commit point (the manifest write) it
  renews synchronously, so the token is validated at publish time.
- Release: a compare-and-swap to `released`, keeping the token, so tokens only ever grow.

What this guarantees, and its limit: a committer publishes a manifest only right after proving
by a compare-and-swap that its token is current, and a takeover needs ttl seconds without a
renewal, so two live committers never both pass the publish fence. What no lease on S3 can
stop is a write already sent by a committer that then stalls (a frozen VM) for longer than
ttl / 2 and lands after another committer took over: S3 cannot check a token on an ordinary
PUT. Such a late write can only hit the uncommitted tail or a totals group the manifest does
not name yet; `dataworth store verify` would name the damaged shard.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fsspec.asyn import sync

from .errors import StoreError, StoreLockedError

LEASE_SECONDS = 30.0  # a dead committer's lease is taken over after this long without renewal
POLL_SECONDS = 0.5
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


class LeaseLostError(StoreError):
    def __init__(self, url: str, why: str):
        super().__init__(f"gradient store {url}: this committer lost its lease ({why}); nothing more was "
                         "written. The next ingest run commits what this one could not")


def _precondition_failed(err: OSError) -> bool:
    response = getattr(err.__cause__, "response", None) or {}
    error = response.get("Error", {})
    return isinstance(err, FileExistsError) or str(error.get("Code")) in _PRECONDITION_CODES


class ObjectLease:
    """One committer's claim on a store, as a compare-and-swapped object (S3 API via s3fs)."""

    def __init__(self, fs: Any, path: str, url: str, ttl: float = LEASE_SECONDS):
        self.fs, self.url, self.ttl = fs, url, ttl
        self.bucket, self.key, _ = fs.split_path(path)
        self.nonce = uuid.uuid4().hex
        self.holder = f"pid {os.getpid()} on {socket.gethostname()}"
        self.token = 0
        self._etag: str | None = None
        self._renewed = 0.0  # time.monotonic() of the last successful renewal
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ---- the object ----------------------------------------------------------------------

    def _read(self) -> tuple[dict[str, Any], str] | None:
        """The lease's state and ETag, read in one GET (None if there is no lease object)."""
        try:
            data, etag = sync(self.fs.loop, _get, self.fs, self.bucket, self.key)
        except FileNotFoundError:
            return None
        return json.loads(data), etag

    def _put(self, state: dict[str, Any], etag: str | None) -> str | None:
        """Write `state` if the object is still at `etag` (absent when None): its new ETag, or None."""
        match = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            response = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key,
                                       Body=json.dumps(state).encode(), ContentType="application/json", **match)
        except OSError as err:
            if _precondition_failed(err):
                return None
            raise
        return response["ETag"]

    def _state(self, token: int, released: bool = False) -> dict[str, Any]:
        return {"token": token, "holder": self.holder, "nonce": self.nonce, "released": released,
                "ttl_s": self.ttl, "written_at": datetime.now(UTC).isoformat(timespec="seconds")}

    # ---- acquiring and releasing ---------------------------------------------------------

    def acquire(self, timeout: float) -> None:
        """Take the lease, waiting up to `timeout` s (0: one try), else StoreLockedError."""
        deadline = time.monotonic() + timeout
        seen: tuple[str, float] | None = None  # (ETag, when first seen) of a lease held by another
        while True:
            current = self._read()
            if current is None:
                token, etag = 1, self._put(self._state(1), None)
                holder = "holder unknown"
            else:
                state, found = current
                holder = f"{state.get('holder', 'holder unknown')}, token {state.get('token')}"
                if seen is None or seen[0] != found:
                    seen = (found, time.monotonic())
                if state.get("nonce") == self.nonce:  # our own create whose reply was lost
                    token, etag = int(state["token"]), found
                elif state.get("released") or time.monotonic() - seen[1] >= self.ttl:
                    token = int(state.get("token", 0)) + 1
                    etag = self._put(self._state(token), found)
                else:
                    etag = None
            if etag is not None:
                self.token, self._etag, self._renewed = token, etag, time.monotonic()
                self._heartbeat = threading.Thread(target=self._beat, name="dataworth-lease", daemon=True)
                self._heartbeat.start()
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreLockedError(self.url, timeout, holder)
            time.sleep(min(POLL_SECONDS, left))

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._mutex:
            if self._lost is None and self._etag is not None:
                try:
                    self._put(self._state(self.token, released=True), self._etag)
                except OSError:
                    pass  # the next committer waits out the ttl instead
            self._etag = None

    # ---- holding -------------------------------------------------------------------------

    def _renew(self) -> None:
        with self._mutex:
            if self._lost is not None:
                raise LeaseLostError(self.url, self._lost)
            etag = self._put(self._state(self.token), self._etag)
            if etag is None:
                self._lost = f"another committer took token {self.token} over"
                raise LeaseLostError(self.url, self._lost)
            self._etag, self._renewed = etag, time.monotonic()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._renew()
            except LeaseLostError:
                return
            except OSError:
                continue  # a passing network fault; the fence stops writes if it lasts

    def fence(self, *, publish: bool = False) -> None:
        """Raise LeaseLostError unless this committer still holds the lease; renew it first at
        the commit point."""
        if publish:
            self._renew()
            return
        if self._lost is not None:
            raise LeaseLostError(self.url, self._lost)
        if time.monotonic() - self._renewed > self.ttl / 2:
            raise LeaseLostError(self.url, f"not renewed for {self.ttl / 2:g} s")


async def _get(fs: Any, bucket: str, key: str) -> tuple[bytes, str]:
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return await body.read(), response["ETag"]
