"""Ingest runs over one workspace across time: the store, not anything remembered elsewhere,
decides what is committed."""

from __future__ import annotations

import shutil

import pytest

from flows.ingest import ingest
from storage import GradientStore, verify_store

from .flow_fixtures import SAMPLE_SHARDS, land, nightly_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def rows_of(*shards) -> int:
    return sum(len(s.read_text().splitlines()) for s in shards)


def test_a_restored_workspace_takes_the_shards_its_backup_lacks(tmp_path, sample_model_dir):
    params = nightly_params(tmp_path, sample_model_dir).ingest()
    land(params, SAMPLE_SHARDS[0])
    assert ingest(params, return_state=True).is_completed()
    backup = tmp_path / "backup"
    shutil.copytree(params.workspace.path, backup)

    land(params, SAMPLE_SHARDS[1])
    assert ingest(params, return_state=True).is_completed()
    shutil.rmtree(params.workspace.path)
    shutil.copytree(backup, params.workspace.path)  # same store URL, same creation time

    state = ingest(params, return_state=True)
    assert state.is_completed(), state.message
    statuses = {o.name: o.status for o in state.result().outcomes}
    assert statuses == {SAMPLE_SHARDS[0].name: "skipped", SAMPLE_SHARDS[1].name: "committed"}
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    assert store.n_rows == rows_of(*SAMPLE_SHARDS[:2])
    assert verify_store(params.workspace.store_url) == []
