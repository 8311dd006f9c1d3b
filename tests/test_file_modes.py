"""Files dataworth writes follow the process umask: with 077 the store (document snippets inside)
and the quarantine copies are the owner's alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from storage import GradientStore
from tasks.shards import discover_shards, quarantine, validate_shard

from .test_store_support import MODEL, SPEC, make_shard


@pytest.fixture
def private_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def modes(root: Path) -> set[int]:
    return {stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def test_the_store_follows_the_umask(tmp_path, private_umask):
    store = GradientStore.create(str(tmp_path / "s.zarr"), SPEC, MODEL, chunk_rows=16)
    shard_hash, rows, meta = make_shard(0, 20)
    store.commit_shard(shard_hash, rows, meta, spec=SPEC, model_fingerprint=MODEL)
    assert modes(tmp_path) <= {0o600, 0o700}


def test_quarantine_copies_follow_the_umask(tmp_path, private_umask):
    (tmp_path / "u.jsonl").write_bytes(b"{broken\n")
    [ref] = discover_shards(str(tmp_path)).shards
    quarantine(validate_shard(ref), tmp_path / "q")
    assert modes(tmp_path / "q") == {0o600, 0o700}
