"""The gradient store: chunked, compressed, append-only Zarr that never loses or duplicates a row.

    store = GradientStore.create(url, logra.spec, model_fingerprint(model), CodecConfig())
    store.commit_shard(shard_hash, rows, RowMetadata(ids, providers, n_tokens), partial,
                       spec=logra.spec, model_fingerprint=fp)
    rows = store.dask_rows()          # lazy float32, one block per chunk
"""

from .codecs import CodecConfig, Precision
from .errors import (
    DuplicateIdsError,
    ModelMismatchError,
    RowsInvalidError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreLockedError,
    StoreNotFoundError,
)
from .ingest import CommitResult
from .inspect import format_info, store_info, verify_store
from .manifest import ManifestEntry
from .schema import RowMetadata, StoredMetadata
from .snapshots import StoredSnapshot
from .staging import StageResult, StagingArea
from .store import GradientStore

__all__ = [
    "CodecConfig", "CommitResult", "DuplicateIdsError", "GradientStore", "ManifestEntry", "ModelMismatchError",
    "Precision",
    "RowMetadata", "RowsInvalidError", "StageResult", "StagingArea", "StoreError", "StoreExistsError",
    "StoreFormatError", "StoreLockedError", "StoreNotFoundError", "StoredMetadata", "StoredSnapshot",
    "format_info", "store_info", "verify_store",
]
