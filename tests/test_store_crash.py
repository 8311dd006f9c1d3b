"""Crash safety with real processes killed by SIGKILL in the middle of a commit."""

from __future__ import annotations

import signal

import numpy as np

from storage import GradientStore, store_info, verify_store
from storage.faults import ENV_VAR, MANIFEST_WRITTEN, ROWS_WRITTEN
from tests.test_store_support import MODEL, SPEC, make_shard, run_child


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


def test_a_committer_killed_after_the_manifest_write_leaves_nothing_to_redo(tmp_path):
    url = str(tmp_path / "s.zarr")
    GradientStore.create(url, SPEC, MODEL, chunk_rows=16)
    stage_and_commit = {"url": url, "worker": "w0", "seeds": [3, 4], "commit": True}
    killed = run_child("stage", stage_and_commit, env={ENV_VAR: MANIFEST_WRITTEN})
    assert killed.returncode == -signal.SIGKILL

    store = GradientStore.open(url)
    assert len(store.manifest) == 1 and store.n_rows == 50
    assert len(store_info(url)["staged"]) == 2  # the committed one is still staged: killed before cleanup
    results = store.commit_staged()
    assert [r.status for r in results] == ["already_committed", "committed"]
    assert store.n_rows == 100 and store_info(url)["staged"] == []
    assert store.read_metadata().example_ids == make_shard(3)[2].example_ids + make_shard(4)[2].example_ids
    assert verify_store(url) == []
