"""verify_store finds damage on disk: flipped bytes, lost chunks, missing aggregates."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

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
    assert problems == [f"shard {store.manifest[1].shard_hash}: rows [40, 80) do not match their checksum"]


def test_verify_catches_damaged_metadata_and_missing_totals(tmp_path):
    url = tmp_path / "s.zarr"
    store = build(str(url))
    flip_bytes(url / "meta" / "provider" / "c" / "0")
    (url / "totals" / store.committed.totals.group / "fisher" / "c" / "0").unlink()
    problems = verify_store(str(url))
    assert any("metadata chunk 0" in p and store.manifest[0].shard_hash in p for p in problems)
    assert any("totals t000000002 are missing or unreadable" in p and "checksum" in p for p in problems)
    with pytest.raises(StoreError, match="checksum"):
        store.fisher_partial()  # a lost chunk would read as zeros: refused, not summed


@pytest.mark.parametrize("column", ["example_id", "shard", "provider"])
def test_a_lost_metadata_chunk_is_refused_on_read_not_only_by_verify(tmp_path, column):
    url = tmp_path / "s.zarr"
    store = build(str(url))
    (url / "meta" / column / "c" / "3").unlink()  # rows [48, 64): the second shard's; reads as ""
    problems = verify_store(str(url))
    assert problems[0] == (f"shard {store.manifest[1].shard_hash}: metadata of rows [40, 80) does not match "
                           f"its checksum ({column})")
    reader = GradientStore.open(str(url), read_only=True)
    with pytest.raises(StoreError, match=f"the {column} metadata of shard {store.manifest[1].shard_hash}"):
        reader.read_metadata()
    if column == "provider":
        with pytest.raises(StoreError, match="run `dataworth store verify`"):
            reader.provider_codes()
    assert reader.read_metadata(0, 40).example_ids[0] == "s0-ex0"  # the intact shard still reads


def test_verify_checks_the_latest_snapshots_derived_arrays_against_the_rows(tmp_path):
    url = tmp_path / "s.zarr"
    store = build(str(url))
    snapshot = store.load_snapshot()
    values = snapshot.fisher.self_influence(torch.from_numpy(store.read_rows())).numpy()
    providers = np.asarray(store.read_metadata().providers)
    normalised = store.read_rows().astype(np.float64) / np.sqrt(values)[:, None]
    sums = {p: normalised[providers == p].sum(axis=0) for p in np.unique(providers)}
    store.save_self_influence(snapshot.version, values, sums)
    assert verify_store(str(url)) == []

    wrong = dict(sums, alice=sums["alice"] * 1.5)  # consistent checksum, wrong content
    store.save_self_influence(snapshot.version, values, wrong)
    assert verify_store(str(url)) == [f"Fisher snapshot {snapshot.version}: normalised sums: provider 'alice'"
                                      "'s sum does not match its rows"]
    store.save_self_influence(snapshot.version, values * 2, sums)
    assert any("self-influence differs from the rows'" in p for p in verify_store(str(url)))

    store.save_self_influence(snapshot.version, values, sums)
    derived = store.snapshot_attrs(snapshot.version)["derived"]["group"]
    flip_bytes(url / "snapshots" / "v000001" / "derived" / derived / "self_influence" / "c" / "0")
    problems = verify_store(str(url))
    assert len(problems) == 1 and "Fisher snapshot 1 is unreadable" in problems[0]
    with pytest.raises(StoreError):
        store.provider_normalized_sums()


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
