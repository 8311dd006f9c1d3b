"""The store on a real S3 API (moto's server on loopback): creation, commits, staging, and the
committer lease that takes the file lock's place there."""

from __future__ import annotations

import json
import os
import signal

import pytest
import s3fs

from storage import GradientStore, StoreLockedError, store_info, verify_store
from storage.faults import ENV_VAR, STAGED_CHUNK_WRITTEN
from storage.location import StoreLocation
from storage.lock import committer_lock
from storage.staging import _staging_groups
from tests.test_store_concurrency import check_all_rows_once
from tests.test_store_support import MODEL, SPEC, make_shard, run_child


def lease_state(url: str) -> dict:
    return json.loads(s3fs.S3FileSystem(skip_instance_cache=True).cat_file(url + ".lease"))


def test_a_store_on_s3_creates_commits_stages_and_verifies(s3_url):
    store = GradientStore.create(s3_url, SPEC, MODEL, chunk_rows=8)
    assert store.commit_shard(*make_shard(0, 30), spec=SPEC, model_fingerprint=MODEL).committed
    area = store.stage("w0", spec=SPEC, model_fingerprint=MODEL)
    assert area.write_shard(*make_shard(1, 20)).status == "staged"
    assert len(store_info(s3_url)["staged"]) == 1
    assert [r.status for r in store.commit_staged()] == ["committed"]
    reopened = GradientStore.open(s3_url)
    assert reopened.n_rows == 50 and store_info(s3_url)["staged"] == []
    assert reopened.read_metadata().example_ids == make_shard(0, 30)[2].example_ids + make_shard(1, 20)[2].example_ids
    assert verify_store(s3_url) == []
    # Every commit went through the lease (no file lock on S3): three takes, each token one more.
    state = lease_state(s3_url)
    assert state["released"] and state["token"] == 3


def test_a_held_lease_gives_a_clear_error_and_a_killed_holder_is_taken_over(s3_url):
    GradientStore.create(s3_url, SPEC, MODEL, chunk_rows=8)
    location = StoreLocation(s3_url, lease_seconds=1.0)
    holder = run_child("hold_lock", {"url": s3_url, "seconds": 60, "lease_seconds": 1.0}, wait=False)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError) as err:
            with committer_lock(location, timeout=0):
                pass
        assert s3_url in str(err.value) and f"pid {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.communicate()
    # Killed, it renews no more: one lease time later the lease is taken over, the token grows.
    taken = lease_state(s3_url)["token"] + 1
    with committer_lock(location, timeout=10):
        state = lease_state(s3_url)
    assert state["token"] == taken and not state["released"] and state["holder"].startswith(f"pid {os.getpid()} ")


def test_a_frozen_committer_is_fenced_off_when_it_wakes(s3_url):
    """A holder that stops (a frozen VM) loses its lease to the next committer; when it runs
    again its fence refuses any further write instead of writing beside the new holder."""
    GradientStore.create(s3_url, SPEC, MODEL, chunk_rows=8)
    holder = run_child("hold_lock", {"url": s3_url, "seconds": 60, "lease_seconds": 1.0}, wait=False)
    try:
        assert holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGSTOP)
        with committer_lock(StoreLocation(s3_url, lease_seconds=1.0), timeout=10):
            holder.send_signal(signal.SIGCONT)
            lost = holder.stdout.readline()
    finally:
        holder.kill()
        holder.communicate()
    assert lost.startswith("lost:") and "lost its lease" in lost


def test_two_workers_staging_and_committing_at_once_on_s3_lose_and_duplicate_nothing(s3_url):
    """Two worker processes each stage their shards (one shard by both) and commit at once: the
    lease lets one committer through at a time and every row lands exactly once."""
    store = GradientStore.create(s3_url, SPEC, MODEL, chunk_rows=8)
    workers = {"w0": [0, 1], "w1": [1, 2]}
    children = [run_child("stage", {"url": s3_url, "worker": w, "seeds": seeds, "rows": 30, "commit": True},
                          wait=False) for w, seeds in workers.items()]
    outputs = [child.communicate(timeout=300)[0] for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    store.commit_staged()  # what a worker staged after the other's commit had listed the staging groups
    check_all_rows_once(store, range(3))
    assert store_info(s3_url)["staged"] == []


def test_a_worker_killed_mid_logging_leaves_the_store_intact_and_a_rerun_takes_every_shard_once(s3_url):
    store = GradientStore.create(s3_url, SPEC, MODEL, chunk_rows=8)
    store.commit_shard(*make_shard(0, 30), spec=SPEC, model_fingerprint=MODEL)
    killed = run_child("stage", {"url": s3_url, "worker": "w0", "seeds": [1, 2], "rows": 30, "commit": True},
                       env={ENV_VAR: STAGED_CHUNK_WRITTEN})
    assert killed.returncode == -signal.SIGKILL  # a real SIGKILL, after the first chunk of its first shard

    assert store.commit_staged() == []  # its half-written group is not ready: nothing takes it
    assert store.refresh().n_rows == 30 and verify_store(s3_url) == []
    rerun = run_child("stage", {"url": s3_url, "worker": "w1", "seeds": [1, 2], "rows": 30, "commit": True})
    assert rerun.returncode == 0, rerun.stderr
    check_all_rows_once(store, range(3))
    # The dead worker's group stays out of everything until the committer's stale sweep drops it.
    assert [(w, h) for w, h, _ in _staging_groups(store.root())] == [("w0", make_shard(1, 30)[0])]
