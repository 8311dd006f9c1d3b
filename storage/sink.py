"""Row sinks (valuation.sink.RowSink) that write logged rows into a GradientStore.

    sink = StoreSink("runs/store.zarr", providers={"doc-1": "acme", ...})
    trainer = Trainer(..., callbacks=[LoGraCallback(batches, sink)])   # or sink.write(...) yourself

StoreSink commits shards of about `shard_rows` rows. A shard's identity is its example ids
(with the model and the projection), so running the same logging again after a crash commits
only the shards that are missing; the rows themselves are not hashed, because GPU kernels need
not reproduce them bit for bit.

ShardSink streams one shard whose identity the caller knows (a landed file's content hash) into
a staging group as it is logged, a chunk at a time, so logging holds a few chunks in memory
whatever the shard's size; `store.commit_staged([shard_hash])` then publishes it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from valuation.fisher import FisherPartial
from valuation.logra import LoggedBatch
from valuation.sink import LogSession

from .codecs import CodecConfig
from .errors import RowsInvalidError, StoreError, StoreNotFoundError
from .ingest import CommitResult
from .schema import RowMetadata
from .staging import ShardWriter, StageResult, StagingArea
from .store import GradientStore

Providers = str | Mapping[str, str] | Callable[[str], str]


def _named(logged: LoggedBatch) -> list[str]:
    if logged.ids is None:
        raise RowsInvalidError("rows without example ids cannot be stored: log with ids (or batch['example_ids'])")
    return logged.ids


def _provider(providers: Providers, example_id: str) -> str:
    if isinstance(providers, str):
        return providers
    if callable(providers):
        return providers(example_id)
    try:
        return providers[example_id]
    except KeyError:
        raise RowsInvalidError(f"example {example_id!r} has no provider in the sink's mapping") from None


def _metadata(ids: list[str], n_tokens: np.ndarray, providers: Providers,
              snippets: Mapping[str, str]) -> RowMetadata:
    return RowMetadata(ids, [_provider(providers, i) for i in ids], n_tokens, [snippets.get(i, "") for i in ids])


class StoreSink:
    def __init__(
        self,
        url: str,
        *,
        providers: Providers,
        snippets: Mapping[str, str] | None = None,
        codec: CodecConfig | None = None,
        shard_rows: int = 4096,
        storage_options: dict[str, Any] | None = None,
    ):
        """`providers`: one provider for every row, a mapping or a function from example id to
        provider. A new store is created with `codec` (an existing one keeps its own)."""
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
        self.url = url
        self.providers = providers
        self.snippets = snippets or {}
        self.codec = codec
        self.shard_rows = shard_rows
        self.storage_options = storage_options
        self.store: GradientStore | None = None
        self.results: list[CommitResult] = []
        self._session: LogSession | None = None
        self._pending: list[tuple[LoggedBatch, list[str]]] = []

    def open(self, session: LogSession) -> None:
        try:
            store = GradientStore.open(self.url, storage_options=self.storage_options)
            store.check_compatible(session.spec, session.model_fingerprint)
        except StoreNotFoundError:
            # The seed rebuilds random projections; PCA ones must be kept with the rows.
            kept = session.projections if session.spec.config.init == "pca" else None
            store = GradientStore.create(self.url, session.spec, session.model_fingerprint, self.codec,
                                         projections=kept, fisher=session.fisher, calibration=session.calibration,
                                         storage_options=self.storage_options)
        store.check_fisher(session.fisher)
        self.store, self._session, self._pending = store, session, []

    def write(self, logged: LoggedBatch) -> None:
        if self.store is None:
            raise StoreError("StoreSink.write before open(): the sink does not know its store yet")
        self._pending.append((logged, _named(logged)))
        if sum(len(ids) for _, ids in self._pending) >= self.shard_rows:
            self._commit()

    def close(self) -> None:
        if self._pending:
            self._commit()

    @staticmethod
    def _shard_hash(session: LogSession, ids: list[str]) -> str:
        digest = hashlib.sha256(
            f"logra-sink|{session.spec.fingerprint}|{session.model_fingerprint['fingerprint']}|".encode()
        )
        digest.update("\n".join(ids).encode())
        return digest.hexdigest()

    def _commit(self) -> None:
        store, session = self.store, self._session
        if store is None or session is None:
            raise StoreError("StoreSink has rows to commit but was never opened")
        pending, self._pending = self._pending, []
        ids = [i for _, batch_ids in pending for i in batch_ids]
        rows = torch.cat([logged.rows for logged, _ in pending]).detach().to("cpu", torch.float32)
        partial = FisherPartial.zeros(session.spec.layout)
        tokens = []
        for logged, _ in pending:
            partial.update(logged.fisher_rows)
            tokens.append(logged.n_tokens.detach().cpu().numpy())
        metadata = _metadata(ids, np.concatenate(tokens), self.providers, self.snippets)
        result = store.commit_shard(
            self._shard_hash(session, ids), rows.numpy(), metadata, partial, spec=session.spec,
            model_fingerprint=session.model_fingerprint, name=f"logra-sink:{ids[0]}..{ids[-1]}",
            fisher=session.fisher,
        )
        self.results.append(result)


class ShardSink:
    """One shard, identified by the caller, streamed into a staging group of `store` as it is
    logged; `close()` writes its Fisher sums and marks it ready (`result`), and
    `store.commit_staged([shard_hash])` publishes it. A logger killed half-way leaves an
    unfinished group that nothing reads (the committer drops it once stale) and the committed
    rows untouched: logging it again, under any worker id, completes it."""

    def __init__(
        self,
        store: GradientStore,
        shard_hash: str,
        *,
        providers: Providers,
        snippets: Mapping[str, str] | None = None,
        name: str | None = None,
        worker_id: str | None = None,
    ):
        self.store, self.shard_hash, self.name = store, shard_hash, name
        self.providers, self.snippets = providers, snippets or {}
        # Unique unless given: two runs logging the same shard at once must not share a group.
        self.worker_id = worker_id or f"logger-{uuid.uuid4().hex[:16]}"
        self.result: StageResult | None = None
        self._area: StagingArea | None = None
        self._writer: ShardWriter | None = None
        self._partial: FisherPartial | None = None

    def open(self, session: LogSession) -> None:
        self._area = self.store.stage(self.worker_id, spec=session.spec,
                                      model_fingerprint=session.model_fingerprint, fisher=session.fisher)
        self._writer = self._area.open_shard(self.shard_hash, name=self.name)
        self._partial = FisherPartial.zeros(session.spec.layout)
        self.result = None

    def write(self, logged: LoggedBatch) -> None:
        if self._writer is None or self._partial is None:
            raise StoreError("ShardSink.write before open(): the sink has no staging group yet")
        ids = _named(logged)
        metadata = _metadata(ids, logged.n_tokens.detach().cpu().numpy(), self.providers, self.snippets)
        self._writer.append(logged.rows, metadata)
        self._partial.update(logged.fisher_rows)

    def close(self) -> None:
        if self._writer is None or self._partial is None:
            raise StoreError("ShardSink.close before open(): nothing was staged")
        self.result = self._writer.finish(self._partial)

    def discard(self) -> None:
        """Drop the staging group of a logging that failed (nothing, once it is ready or never opened)."""
        if self._area is not None and self.result is None:
            self._area.discard(self.shard_hash)
