"""A row sink (valuation.sink.RowSink) that writes logged rows into a GradientStore.

    sink = StoreSink("runs/store.zarr", providers={"doc-1": "acme", ...})
    trainer = Trainer(..., callbacks=[LoGraCallback(batches, sink)])   # or sink.write(...) yourself

Rows are committed as shards of about `shard_rows` rows. A shard's identity is its example ids
(with the model and the projection), so running the same logging again after a crash commits
only the shards that are missing; the rows themselves are not hashed, because GPU kernels need
not reproduce them bit for bit.
"""

from __future__ import annotations

import hashlib
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
from .store import GradientStore

Providers = str | Mapping[str, str] | Callable[[str], str]


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
        if logged.ids is None:
            raise RowsInvalidError("rows without example ids cannot be stored: log with ids (or batch['example_ids'])")
        self._pending.append((logged, logged.ids))
        if sum(len(ids) for _, ids in self._pending) >= self.shard_rows:
            self._commit()

    def close(self) -> None:
        if self._pending:
            self._commit()

    def _provider(self, example_id: str) -> str:
        if isinstance(self.providers, str):
            return self.providers
        if callable(self.providers):
            return self.providers(example_id)
        try:
            return self.providers[example_id]
        except KeyError:
            raise RowsInvalidError(f"example {example_id!r} has no provider in StoreSink's mapping") from None

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
        metadata = RowMetadata(
            example_ids=ids,
            providers=[self._provider(i) for i in ids],
            n_tokens=np.concatenate(tokens),
            snippets=[self.snippets.get(i, "") for i in ids],
        )
        result = store.commit_shard(
            self._shard_hash(session, ids), rows.numpy(), metadata, partial, spec=session.spec,
            model_fingerprint=session.model_fingerprint, name=f"logra-sink:{ids[0]}..{ids[-1]}",
            fisher=session.fisher,
        )
        self.results.append(result)
