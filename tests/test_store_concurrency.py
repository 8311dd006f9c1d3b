"""Several processes on one store at once: nothing lost, nothing duplicated, a clear lock error."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from storage import GradientStore, StoreLockedError, verify_store
from tests.test_store_support import MODEL, SPEC, make_shard, run_child


def expected_rows(seeds) -> dict[str, np.ndarray]:
    return {make_shard(seed, 30)[2].example_ids[0]: make_shard(seed, 30)[1] for seed in seeds}


def check_all_rows_once(store: GradientStore, seeds) -> None:
    store.refresh()
    meta = store.read_metadata()
    assert len(meta.example_ids) == len(set(meta.example_ids)) == 30 * len(seeds)
    assert len(store.manifest) == len(seeds)
    rows = store.read_rows()
    for entry in store.manifest:  # each shard's rows landed intact and in order
        first_id = meta.example_ids[entry.row_start]
        np.testing.assert_allclose(rows[entry.row_start:entry.row_stop], expected_rows(seeds)[first_id], rtol=2.0**-8)
    assert verify_store(store.url) == []


@pytest.mark.slow  # real processes, killed or racing
def test_parallel_loggers_stage_while_a_committer_commits(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=8)
    workers = {f"w{i}": [10 * i + j for j in range(3)] for i in range(3)}
    children = [
        run_child("stage", {"url": url, "worker": w, "seeds": s, "rows": 30}, wait=False) for w, s in workers.items()
    ]
    while any(child.poll() is None for child in children):
        store.commit_staged()  # races the workers: only shards marked ready may move
    for child in children:
        child.communicate()
    assert all(child.returncode == 0 for child in children)
    store.commit_staged()
    check_all_rows_once(store, [seed for seeds in workers.values() for seed in seeds])


@pytest.mark.slow  # real processes, killed or racing
def test_two_ingestion_runs_at_once_serialise_on_the_lock(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=8)
    runs = [
        run_child("commit", {"url": url, "seeds": seeds, "rows": 30}, wait=False)
        for seeds in ([0, 1, 2, 3], [2, 3, 4, 5])
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert sum(out.count(": committed") for out in outputs) == 6  # seeds 2 and 3 went in once
    check_all_rows_once(store, range(6))


@pytest.mark.slow  # real processes, killed or racing
def test_two_commits_racing_with_the_same_example_ids_let_one_in(tmp_path):
    """Two ingestions from two landing directories validated against the same (empty) store:
    uniqueness is checked again under the lock, so the second shard is refused, not appended."""
    url = str(tmp_path / "s.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=8)
    start_at = time.time() + 2.0
    runs = [run_child("commit", {"url": url, "seeds": [seed], "rows": 10, "ids_of": 9, "start_at": start_at},
                      wait=False) for seed in (1, 2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert sum(out.count(": committed") for out in outputs) == 1
    refused = next(out for out in outputs if out.startswith("refused"))
    assert "'s9-ex0'" in refused and "are in committed shard" in refused and "nothing was written" in refused
    store.refresh()
    ids = store.read_metadata().example_ids
    assert store.n_rows == 10 and sorted(ids) == sorted(f"s9-ex{i}" for i in range(10))
    assert verify_store(url) == []


@pytest.mark.slow  # real processes, killed or racing
def test_a_held_lock_gives_a_clear_error_and_dies_with_its_holder(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=8)
    holder = run_child("hold_lock", {"url": url, "seconds": 60}, wait=False)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waiting = GradientStore.open(url, lock_timeout=0.3)
        with pytest.raises(StoreLockedError) as err:
            waiting.commit_shard(*make_shard(0, 30), spec=SPEC, model_fingerprint=MODEL)
        assert url in str(err.value) and f"pid {holder.pid}" in str(err.value) and "0.3 s" in str(err.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate()
    assert store.commit_shard(*make_shard(0, 30), spec=SPEC, model_fingerprint=MODEL).committed
