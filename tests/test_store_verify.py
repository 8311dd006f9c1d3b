"""verify_store finds damage on disk: flipped bytes, lost chunks, missing aggregates."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from storage import GradientStore, StoreError, format_info, store_info, verify_store
from tests.test_store_support import MODEL, SPEC, make_shard


def build(url: str, shards: int = 2, n: int = 40) -> GradientStore:
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=16)
    for seed in range(shards):
        shard_hash, rows, meta = make_shard(seed, n)
        store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    store.save_snapshot(store.fisher_partial().snapshot(0.1), [e.shard_hash for e in store.manifest])
    return store


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + 8, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_an_intact_store_verifies_clean(tmp_path, kind):
    url = str(tmp_path / "s.zarr") if kind == "local" else f"memory://verify-{uuid.uuid4().hex}"
    build(url)
    assert verify_store(url) == []
    assert "80 committed" in format_info(store_info(url))


def test_verify_catches_a_corrupted_row_chunk(tmp_path):
    url = tmp_path / "s.zarr"
    store = build(str(url))
    flip_bytes(url / "rows" / "c" / "1" / "0")  # rows [16, 32): the first shard's
    problems = verify_store(str(url))
    assert len(problems) == 1
    assert store.manifest[0].shard_hash in problems[0] and "rows chunk 1 (rows [16, 32))" in problems[0]
    with pytest.raises(Exception):  # noqa: B017 - which codec error is zarr's choice
        store.read_rows(16, 32)  # a damaged chunk fails loudly, never decodes to noise


def test_verify_catches_a_lost_chunk_that_would_read_as_zeros(tmp_path):
    url = tmp_path / "s.zarr"
    store = build(str(url))
    (url / "rows" / "c" / "3" / "0").unlink()  # rows [48, 64): the second shard's
    problems = verify_store(str(url))
    assert problems[0] == f"shard {store.manifest[1].shard_hash}: rows [40, 80) do not match their checksum"
    assert all(store.manifest[1].shard_hash in p for p in problems)  # and its provider sums no longer add up


def test_verify_catches_damaged_metadata_and_missing_aggregates(tmp_path):
    url = tmp_path / "s.zarr"
    store = build(str(url))
    flip_bytes(url / "meta" / "provider" / "c" / "0")
    shutil.rmtree(url / "shards" / store.manifest[1].shard_hash)
    problems = verify_store(str(url))
    assert any("metadata chunk 0" in p and store.manifest[0].shard_hash in p for p in problems)
    assert any("aggregates are missing" in p and store.manifest[1].shard_hash in p for p in problems)


def test_verify_catches_a_manifest_that_overclaims_rows(tmp_path):
    url = tmp_path / "s.zarr"
    build(str(url))
    meta_path = url / "manifest" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["entries"][1]["row_stop"] = 120
    meta["attributes"]["entries"][1]["row_count"] = 80
    meta_path.write_text(json.dumps(meta))
    problems = verify_store(str(url))
    assert problems and "manifest commits 120 rows" in problems[0]


def test_verify_reports_what_cannot_be_opened(tmp_path):
    assert "cannot open" in verify_store(str(tmp_path / "nothing.zarr"))[0]
    with pytest.raises(StoreError):
        store_info(str(tmp_path / "nothing.zarr"))
