"""Crash safety with real processes killed by SIGKILL in the middle of a commit."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
import zarr

from storage import GradientStore, StoreExistsError, StoreNotFoundError, store_info, verify_store
from storage.faults import CREATED, ENV_VAR, MANIFEST_WRITTEN, ROWS_WRITTEN, SELF_INFLUENCE_WRITING
from tests.test_store_support import MODEL, SPEC, make_shard, run_child


@pytest.mark.slow  # real processes, killed or racing
def test_a_commit_killed_before_its_manifest_entry_is_redone_without_duplicates(tmp_path):
    url = str(tmp_path / "s.zarr")
    GradientStore.create(url, SPEC, MODEL, chunk_rows=16)
    ok = run_child("commit", {"url": url, "seeds": [0], "rows": 50})
    assert ok.returncode == 0, ok.stderr
    killed = run_child("commit", {"url": url, "seeds": [1, 2], "rows": 50}, env={ENV_VAR: ROWS_WRITTEN})
    assert killed.returncode == -signal.SIGKILL

    # The killed shard's rows are on disk but invisible: an uncommitted tail, not a problem.
    store = GradientStore.open(url, lock_timeout=0)  # the kernel released the dead process's lock
    assert store.n_rows == 50 and len(store.manifest) == 1
    assert store_info(url)["uncommitted_tail_rows"] == 50
    assert verify_store(url) == []
    assert store.fisher_partial().count == 50 and sum(store.provider_row_counts().values()) == 50

    rerun = run_child("commit", {"url": url, "seeds": [0, 1, 2], "rows": 50, "lock_timeout": 0})
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("already committed") == 1 and rerun.stdout.count(": committed") == 2
    store.refresh()
    assert store.n_rows == 150 and store_info(url)["uncommitted_tail_rows"] == 0
    ids = store.read_metadata().example_ids
    assert len(ids) == len(set(ids)) == 150
    assert [e.row_start for e in store.manifest] == [0, 50, 100]
    expected = np.concatenate([make_shard(seed, 50)[1] for seed in range(3)])
    np.testing.assert_allclose(store.read_rows(), expected, rtol=2.0**-8)
    assert store.fisher_partial().count == 150
    assert verify_store(url) == []


@pytest.mark.slow  # real processes, killed or racing
def test_a_committer_killed_after_the_manifest_write_leaves_nothing_to_redo(tmp_path):
    url = str(tmp_path / "s.zarr")
    GradientStore.create(url, SPEC, MODEL, chunk_rows=16)
    stage_and_commit = {"url": url, "worker": "w0", "seeds": [3, 4], "commit": True}
    killed = run_child("stage", stage_and_commit, env={ENV_VAR: MANIFEST_WRITTEN})
    assert killed.returncode == -signal.SIGKILL

    store = GradientStore.open(url)
    assert len(store.manifest) == 2 and store.n_rows == 100  # one manifest write published both
    assert len(store_info(url)["staged"]) == 2  # still staged: killed before cleanup
    assert list(store.root()["totals"].group_keys()) == ["t000000002"]
    results = store.commit_staged()
    assert [r.status for r in results] == ["already_committed", "already_committed"]
    assert store.n_rows == 100 and store_info(url)["staged"] == []
    assert store.read_metadata().example_ids == make_shard(3)[2].example_ids + make_shard(4)[2].example_ids
    assert verify_store(url) == []


@pytest.mark.slow  # real processes, killed or racing
def test_a_create_killed_half_way_is_finished_by_the_next_create(tmp_path):
    url = str(tmp_path / "s.zarr")
    killed = run_child("create", {"url": url}, env={ENV_VAR: CREATED})
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "s.zarr" / "rows").exists()  # arrays written, identity not
    with pytest.raises(StoreNotFoundError, match="never finished"):
        GradientStore.open(url)
    store = GradientStore.open_or_create(url, SPEC, MODEL)  # what the ingest flow does
    assert store.commit_shard(*make_shard(0, 30), spec=SPEC, model_fingerprint=MODEL).committed
    assert GradientStore.open(url).n_rows == 30 and verify_store(url) == []


def test_a_schema_1_create_killed_before_its_identity_is_finished_too(tmp_path):
    """Code before the creating mark left a bare group with the store's nodes and no attributes."""
    url = str(tmp_path / "s.zarr")
    root = zarr.open_group(str(url), mode="w")
    for name in ("manifest", "shards", "snapshots", "staging"):
        root.create_group(name)
    with pytest.raises(StoreNotFoundError, match="never finished"):
        GradientStore.open(url)
    assert GradientStore.create(url, SPEC, MODEL).n_rows == 0


def test_a_group_that_is_not_a_store_is_never_overwritten(tmp_path):
    url = str(tmp_path / "other.zarr")
    zarr.open_group(url, mode="w", attributes={"owner": "someone else"}).create_group("data")
    with pytest.raises(StoreExistsError):
        GradientStore.create(url, SPEC, MODEL)
    assert zarr.open_group(url, mode="r").attrs["owner"] == "someone else"


@pytest.mark.slow  # real processes, killed or racing
def test_a_kill_while_self_influence_is_written_keeps_the_last_complete_set(tmp_path):
    """Derived arrays are committed with their snapshot: a kill leaves the previous set, which
    verify accepts and the next refresh extends, instead of a half-written one read as valid."""
    url = str(tmp_path / "s.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=16)
    store.commit_shard(*make_shard(0, 40), spec=SPEC, model_fingerprint=MODEL)
    version = store.save_snapshot(store.fisher_partial().snapshot(0.1), [e.shard_hash for e in store.manifest])
    assert run_child("derive", {"url": url}).returncode == 0
    store.commit_shard(*make_shard(1, 40), spec=SPEC, model_fingerprint=MODEL)

    killed = run_child("derive", {"url": url}, env={ENV_VAR: SELF_INFLUENCE_WRITING})
    assert killed.returncode == -signal.SIGKILL
    assert verify_store(url) == []  # the first 40 rows' set is still the committed one, and intact
    assert store.load_snapshot().self_influence_rows == 40

    recovery = run_child("derive", {"url": url})
    assert recovery.returncode == 0, recovery.stderr
    assert verify_store(url) == []
    snapshot = store.load_snapshot(version)
    assert snapshot.self_influence_rows == 80
    expected = snapshot.fisher.self_influence(torch.from_numpy(store.read_rows())).numpy()
    np.testing.assert_allclose(store.self_influence(), expected, rtol=1e-12)
