"""Ingest runs over one workspace across time: the store, not anything remembered elsewhere,
decides what is committed."""

from __future__ import annotations

import json
import shutil

import pytest

from flows.ingest import ingest
from storage import GradientStore, store_info, verify_store
from tasks.params import flow_kwargs

from .flow_fixtures import SAMPLE_SHARDS, finished_upload, land, nightly_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def rows_of(*shards) -> int:
    return sum(len(s.read_text().splitlines()) for s in shards)


def test_a_restored_workspace_takes_the_shards_its_backup_lacks(tmp_path, sample_model_dir):
    params = nightly_params(tmp_path, sample_model_dir).ingest()
    land(params, SAMPLE_SHARDS[0])
    assert ingest(**flow_kwargs(params), return_state=True).is_completed()
    backup = tmp_path / "backup"
    shutil.copytree(params.workspace.path, backup)

    land(params, SAMPLE_SHARDS[1])
    assert ingest(**flow_kwargs(params), return_state=True).is_completed()
    shutil.rmtree(params.workspace.path)
    shutil.copytree(backup, params.workspace.path)  # same store URL, same creation time

    state = ingest(**flow_kwargs(params), return_state=True)
    assert state.is_completed(), state.message
    statuses = {o.name: o.status for o in state.result().outcomes}
    assert statuses == {SAMPLE_SHARDS[0].name: "skipped", SAMPLE_SHARDS[1].name: "committed"}
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    assert store.n_rows == rows_of(*SAMPLE_SHARDS[:2])
    assert verify_store(params.workspace.store_url) == []


def test_two_runs_from_two_landings_never_duplicate_an_example_id(tmp_path, sample_model_dir):
    """Run B validated its shard before run A committed a shard naming ten of its examples: the
    commit itself, under the lock, defers B's shard; the next run quarantines it line by line."""
    from prefect import flow

    from tasks.ingest import commit_shards, log_shard
    from tasks.shards import discover_shards, validate_shard

    params_a = nightly_params(tmp_path, sample_model_dir).ingest()
    landing_b = tmp_path / "landing-b"
    landing_b.mkdir()
    params_b = params_a.model_copy(update={"landing": str(landing_b)})
    land(params_a, SAMPLE_SHARDS[0])
    shared = [json.loads(line)["id"] for line in SAMPLE_SHARDS[0].read_text().splitlines()[:10]]
    lines = [json.loads(line) for line in SAMPLE_SHARDS[1].read_text().splitlines()]
    for record, example_id in zip(lines, shared):
        record["id"] = example_id
    (landing_b / "night-b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    finished_upload(landing_b / "night-b.jsonl")
    validated_b = validate_shard(discover_shards(str(landing_b)).shards[0])  # against the empty store
    assert validated_b.ok

    assert ingest(**flow_kwargs(params_a), return_state=True).is_completed()
    # Run B's commit of a shard it validated before A's commit (what the race does):
    url = params_a.workspace.store_url
    outcome = flow(name="run-b")(lambda: commit_shards([log_shard(validated_b, params_b, url)], url, 0)[0])()
    assert outcome.status == "deferred" and repr(shared[0]) in outcome.detail and "and 5 more" in outcome.detail
    assert SAMPLE_SHARDS[0].name in outcome.detail
    store = GradientStore.open(params_a.workspace.store_url, read_only=True)
    assert store.n_rows == rows_of(SAMPLE_SHARDS[0])

    again = ingest(**flow_kwargs(params_b), return_state=True)
    assert again.is_failed() and "night-b.jsonl" in again.message  # quarantined, the ids named per line
    ids = GradientStore.open(params_a.workspace.store_url, read_only=True).read_metadata().example_ids
    assert len(ids) == len(set(ids)) == rows_of(SAMPLE_SHARDS[0])
    assert verify_store(params_a.workspace.store_url) == []


def test_ingest_into_a_store_on_s3_logs_into_staging_and_commits_in_the_plans_order(tmp_path, sample_model_dir,
                                                                                  s3_url):
    """The flow against an S3 API: each shard logged into a staging group of its own task, then
    one committer (under the lease) publishes them in the night's order, whichever logger ended first."""
    params = nightly_params(tmp_path, sample_model_dir).ingest()
    params = params.model_copy(update={"workspace": params.workspace.model_copy(update={"store": s3_url})})
    land(params, *SAMPLE_SHARDS[:2])
    state = ingest(**flow_kwargs(params), return_state=True)
    assert state.is_completed(), state.message
    assert {o.status for o in state.result().outcomes} == {"committed"}
    store = GradientStore.open(s3_url, read_only=True)
    assert [e.name for e in store.manifest] == [s.name for s in SAMPLE_SHARDS[:2]]
    assert store.n_rows == rows_of(*SAMPLE_SHARDS[:2])
    assert store_info(s3_url)["staged"] == [] and verify_store(s3_url) == []
    assert not (params.workspace.path / "store.zarr").exists()  # the workspace keeps the rest, locally
