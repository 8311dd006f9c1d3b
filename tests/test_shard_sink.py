"""A shard streamed into its staging group as it is logged, then committed: what ingestion does."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from storage import GradientStore, store_info, verify_store
from storage.faults import ENV_VAR, STAGED_CHUNK_WRITTEN
from storage.sink import ShardSink
from tests.test_store_support import MODEL, SPEC, logged_batches, make_shard, run_child, stream_shard
from valuation.config import FisherConfig
from valuation.sink import LogSession

FISHER = FisherConfig(estimator="true")  # what stream_shard logs under (stored sums need a resolved estimator)


def test_rows_reach_the_staging_group_while_logging_and_commit_whole(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=16, fisher=FISHER)
    shard_hash, rows, meta = make_shard(0, 70)
    sink = ShardSink(store, shard_hash, providers=dict(zip(meta.example_ids, meta.providers)), name="n.jsonl")
    sink.open(LogSession(SPEC, MODEL, {}, FISHER))
    staged = f"staging/{sink.worker_id}/{shard_hash}/rows"
    for i, logged in enumerate(logged_batches(0, 70, 10)):
        sink.write(logged)
        # Whole chunks are written as soon as they fill: the writer holds less than a chunk back.
        assert store.root()[staged].shape[0] >= 10 * (i + 1) - 15
    sink.close()
    assert sink.result is not None and sink.result.rows == 70 and store.n_rows == 0

    [result] = store.commit_staged([shard_hash])
    assert result.committed and (result.row_start, result.row_stop) == (0, 70)
    np.testing.assert_allclose(store.read_rows(), rows, rtol=2.0**-8)
    assert store.read_metadata().example_ids == meta.example_ids
    assert store.fisher_partial().count == 70 and store.provider_row_counts() == {
        p: meta.providers.count(p) for p in set(meta.providers)}
    assert store_info(url)["staged"] == [] and verify_store(url) == []


def test_a_failed_logging_drops_its_unfinished_group(tmp_path):
    store = GradientStore.create(str(tmp_path / "s.zarr"), SPEC, MODEL, chunk_rows=16, fisher=FISHER)
    shard_hash, _, meta = make_shard(0, 40)
    sink = ShardSink(store, shard_hash, providers="acme")
    sink.open(LogSession(SPEC, MODEL, {}, FISHER))
    sink.write(next(logged_batches(0, 40, 20)))
    sink.discard()
    assert list(store.root()["staging"][sink.worker_id].group_keys()) == []


@pytest.mark.slow  # a real process, killed
def test_a_logger_killed_mid_shard_leaves_the_store_intact_and_a_rerun_completes(tmp_path):
    url = str(tmp_path / "s.zarr")
    store = GradientStore.create(url, SPEC, MODEL, chunk_rows=16, fisher=FISHER)
    stream_shard(url, 0, 30, 8)
    before = store.refresh().manifest
    killed = run_child("stream", {"url": url, "seed": 1, "rows": 50, "batch": 8}, env={ENV_VAR: STAGED_CHUNK_WRITTEN})
    assert killed.returncode == -signal.SIGKILL

    store.refresh()
    assert store.manifest == before and store.n_rows == 30 and verify_store(url) == []
    unfinished = [g for _, worker in store.root()["staging"].groups() for _, g in worker.groups()]
    assert [g.attrs.get("ready") for g in unfinished] == [None] and store_info(url)["staged"] == []

    [result] = stream_shard(url, 1, 50, 8)  # the re-run, as another worker
    assert result.committed and store.refresh().n_rows == 80
    ids = store.read_metadata().example_ids
    assert len(ids) == len(set(ids)) == 80 and ids[30:] == make_shard(1, 50)[2].example_ids
    np.testing.assert_allclose(store.read_rows(30, 80), make_shard(1, 50)[1], rtol=2.0**-8)
    assert store.fisher_partial().count == 80 and verify_store(url) == []
