"""The scan's chunk reader (storage/chunks.py) returns exactly what zarr returns, and refuses what
zarr refuses: a flipped byte in a row chunk fails the scan, it never scores noise."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from scoring.engine import ScanOptions, scan_scores
from storage import CodecConfig, GradientStore, StoreError
from storage.chunks import chunk_layout
from tests.test_store_support import MODEL, SPEC, WIDTH, make_shard
from tests.test_store_verify import flip_bytes

CHUNK = 16


def build(url: str, codec: CodecConfig, n: int = 40) -> GradientStore:
    store = GradientStore.create(url, SPEC, MODEL, codec, chunk_rows=CHUNK)
    shard_hash, rows, meta = make_shard(0, n)  # 40 rows: the last chunk is ragged
    store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    return store


def chunks_read(store: GradientStore) -> list[tuple[np.ndarray, np.ndarray | None]]:
    rows = store.committed_rows()
    read = rows.reader()
    out = []
    for start in range(0, rows.n_rows, CHUNK):
        codes, scale = read(start, start + CHUNK)
        codes = codes.view(torch.int16) if codes.dtype == torch.bfloat16 else codes
        out.append((codes.numpy().copy(),
                    None if scale is None else scale.copy()))
    return out


def zarr_read(store: GradientStore) -> list[tuple[np.ndarray, np.ndarray | None]]:
    rows = store.committed_rows()
    out = []
    for start in range(0, rows.n_rows, CHUNK):
        encoded = rows.arrays.read_encoded(start, min(start + CHUNK, rows.n_rows))
        codes = encoded.codes.view(np.int16) if encoded.codes.dtype == np.uint16 else encoded.codes
        out.append((codes, encoded.scale))
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for (codes_a, scale_a), (codes_b, scale_b) in zip(a, b):
        np.testing.assert_array_equal(codes_a, codes_b)
        assert (scale_a is None) == (scale_b is None)
        if scale_a is not None:
            np.testing.assert_array_equal(scale_a, scale_b)


@pytest.mark.parametrize("precision", ["bfloat16", "float16", "int8", "float32"])
@pytest.mark.parametrize("cname", ["zstd", "lz4", "none"])
def test_chunk_reader_returns_what_zarr_returns(tmp_path, precision, cname):
    store = build(str(tmp_path / "s.zarr"), CodecConfig(precision=precision, cname=cname))
    assert chunk_layout(store.committed_rows().arrays.rows) is not None  # the lean path, not the fallback
    assert_same(chunks_read(store), zarr_read(store))


def test_a_store_that_is_not_a_local_directory_reads_through_zarr():
    store = build(f"memory://chunks-{uuid.uuid4().hex}", CodecConfig())
    assert chunk_layout(store.committed_rows().arrays.rows) is None
    assert_same(chunks_read(store), zarr_read(store))


def test_a_chunk_file_not_there_reads_as_zeros_as_in_zarr(tmp_path):
    url = tmp_path / "s.zarr"
    store = build(str(url), CodecConfig())
    (url / "rows" / "c" / "1" / "0").unlink()
    read = chunks_read(store)
    assert (read[1][0] == 0).all()
    assert_same(read, zarr_read(store))


@pytest.mark.parametrize("cname", ["zstd", "none"])
def test_a_flipped_byte_in_a_row_chunk_fails_the_scan(tmp_path, cname):
    url = tmp_path / "s.zarr"
    store = build(str(url), CodecConfig(cname=cname))
    flip_bytes(url / "rows" / "c" / "1" / "0")
    codes, names = store.provider_codes()
    queries = np.ones((2, WIDTH), dtype=np.float32)
    with pytest.raises(StoreError, match=r"rows/c/1/0: the chunk does not match its CRC32C"):
        scan_scores(store.committed_rows(), codes, len(names), queries, None, ScanOptions(top_k=3))


def test_a_chunk_cut_short_fails_the_scan(tmp_path):
    url = tmp_path / "s.zarr"
    store = build(str(url), CodecConfig(cname="none"))
    path = url / "rows" / "c" / "0" / "0"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError, match="CRC32C"):
        store.committed_rows().reader()(0, CHUNK)


def test_a_blosc_store_of_the_old_default_stays_readable_and_keeps_its_codec(tmp_path):
    """Stores made before rows were stored without Blosc (zstd was the default) read as before, and
    rows committed later through a default codec still go through their own Blosc."""
    url = str(tmp_path / "s.zarr")
    old = build(url, CodecConfig(cname="zstd"))
    shard_hash, rows, meta = make_shard(1, 24)
    store = GradientStore.open_or_create(url, SPEC, MODEL, CodecConfig())
    store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    assert store.codec.cname == "zstd" and chunk_layout(store.committed_rows().arrays.rows).compressed
    assert_same(chunks_read(store), zarr_read(store))
    np.testing.assert_array_equal(store.read_rows(0, 40), old.read_rows())
    assert not chunk_layout(build(str(tmp_path / "new.zarr"), CodecConfig()).committed_rows().arrays.rows).compressed
