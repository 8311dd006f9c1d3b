"""The row arrays of one group (the store's root, or a worker's staging area), kept in step.

Rows, per-row scales and metadata columns share one row index and one chunking, so a row range
is the same chunks in every array. Whoever resizes or writes them must own them: the committer
under the lock for the root, one worker for its staging group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import zarr

from . import nodes
from .chunks import ChunkReader, chunk_layout
from .codecs import CodecConfig, EncodedRows, Precision, aux_compressors, widenable
from .schema import INT_COLUMNS, META, ROW_SCALE, ROWS, STRING_COLUMNS, RowMetadata, StoredMetadata


def _strings(values: list[str]) -> np.ndarray:
    # Objects, not numpy's fixed-width str dtype: that pads every id to the longest snippet and
    # silently drops trailing NUL characters. (numpy 2's StringDType would do; 1.26 lacks it.)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def create_row_arrays(group: zarr.Group, width: int, codec: CodecConfig, chunk_rows: int) -> None:
    group.create_array(
        ROWS, shape=(0, width), dtype=codec.storage_dtype, chunks=(chunk_rows, max(width, 1)),
        compressors=codec.compressors(), fill_value=0,
    )
    if codec.scaled:
        group.create_array(
            ROW_SCALE, shape=(0,), dtype="<f4", chunks=(chunk_rows,), compressors=aux_compressors(), fill_value=0
        )
    meta = group.create_group(META)
    for name in STRING_COLUMNS:
        meta.create_array(name, shape=(0,), dtype=str, chunks=(chunk_rows,), compressors=aux_compressors())
    for name in INT_COLUMNS:
        meta.create_array(
            name, shape=(0,), dtype="<i8", chunks=(chunk_rows,), compressors=aux_compressors(), fill_value=0
        )


@dataclass
class RowArrays:
    rows: zarr.Array
    scale: zarr.Array | None
    columns: dict[str, zarr.Array]

    @classmethod
    def of(cls, group: zarr.Group) -> RowArrays:
        """The group's row arrays, with their current shapes read fresh from the store."""
        meta = nodes.group(group, META)
        return cls(
            nodes.array(group, ROWS),
            nodes.array(group, ROW_SCALE) if ROW_SCALE in group else None,
            {name: nodes.array(meta, name) for name in (*STRING_COLUMNS, *INT_COLUMNS)},
        )

    @property
    def chunk_rows(self) -> int:
        return self.rows.chunks[0]

    def _all(self) -> list[zarr.Array]:
        return [self.rows, *([self.scale] if self.scale is not None else []), *self.columns.values()]

    def lengths(self) -> list[int]:
        return [array.shape[0] for array in self._all()]

    def resize(self, n: int) -> None:
        for array in self._all():
            if array.shape[0] != n:
                array.resize((n, *array.shape[1:]))

    def write(self, start: int, encoded: EncodedRows, meta: RowMetadata, shard_hash: str) -> None:
        stop = start + len(encoded)
        if stop == start:
            return
        self.rows[start:stop] = encoded.codes
        if self.scale is not None:  # the codec keeps a scale array exactly when its rows have scales
            self.scale[start:stop] = cast(np.ndarray, encoded.scale)
        self.columns["example_id"][start:stop] = _strings(meta.example_ids)
        self.columns["provider"][start:stop] = _strings(meta.providers)
        self.columns["shard"][start:stop] = _strings([shard_hash] * len(encoded))
        self.columns["snippet"][start:stop] = _strings(cast(list[str], meta.snippets))  # a list once made
        self.columns["n_tokens"][start:stop] = meta.n_tokens

    def read_encoded(self, start: int, stop: int) -> EncodedRows:
        scale = nodes.read(self.scale, slice(start, stop)) if self.scale is not None else None
        return EncodedRows(nodes.read(self.rows, slice(start, stop)), scale)

    def read_meta(self, start: int, stop: int) -> StoredMetadata:
        def strings(name: str) -> list[str]:
            return nodes.read(self.columns[name], slice(start, stop)).tolist()

        return StoredMetadata(
            strings("example_id"), strings("provider"), nodes.read(self.columns["n_tokens"], slice(start, stop)),
            strings("snippet"), strings("shard"),
        )


@dataclass(frozen=True)
class CommittedRows:
    """A store's committed rows, read range by range as stored; picklable, so a scan can read them
    from other processes (scoring.engine's RowSource)."""

    arrays: RowArrays
    n_rows: int
    precision: Precision

    @property
    def chunk_rows(self) -> int:
        return self.arrays.chunk_rows

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """Rows [start, stop) as a tensor that widens to float32, and the per-row scale (or None)."""
        encoded = self.arrays.read_encoded(start, min(stop, self.n_rows))
        return widenable(encoded.codes, self.precision), encoded.scale

    def reader(self) -> Callable[[int, int], tuple[torch.Tensor, np.ndarray | None]]:
        """`read` for one consumer reading whole chunks in turn: each result may share buffers
        with the next, so it is valid until the next call. Reads a local store's chunk files
        itself (storage/chunks.py) where their layout allows, else through zarr."""
        layout = chunk_layout(self.arrays.rows)
        if layout is None:
            return self.read
        chunks, chunk_rows = ChunkReader(layout), layout.chunk_rows

        def read(start: int, stop: int) -> tuple[torch.Tensor, np.ndarray | None]:
            stop = min(stop, self.n_rows)
            if start % chunk_rows or stop - start > chunk_rows or stop <= start:
                return self.read(start, stop)
            codes = chunks.read(start // chunk_rows)[: stop - start]
            scale = nodes.read(self.arrays.scale, slice(start, stop)) if self.arrays.scale is not None else None
            return widenable(codes, self.precision), scale

        return read
