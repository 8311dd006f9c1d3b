"""Stores of schema 1 (a Fisher partial per shard) are refused with the command that upgrades
them, and the upgrade keeps every row and sums the partials exactly.

tests/data/store_schema1.zarr was written by the schema-1 code (commit b581979): three shards
of make_shard(0, 20), (1, 13), (2, 25), FisherConfig(sample_seed=3) (then the empirical Fisher), one snapshot with
self-influence and normalised provider sums.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from storage import GradientStore, StoreFormatError, verify_store
from storage.migrate import migrate_store
from tests.test_store_support import MODEL, SPEC, make_shard
from valuation import FisherConfig

LEGACY = Path(__file__).parent / "data" / "store_schema1.zarr"


@pytest.fixture
def legacy(tmp_path) -> str:
    url = tmp_path / "store.zarr"
    shutil.copytree(LEGACY, url)
    return str(url)


def legacy_partials(url: str) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Sum of the per-shard Fisher partials and provider sums, read straight from the old layout."""
    root = zarr.open_group(url, mode="r")
    fisher, providers, count = 0.0, {}, 0
    for entry in root["manifest"].attrs["entries"]:
        shard = root["shards"][entry["shard_hash"]]
        fisher = fisher + shard["fisher"][...]
        count += shard.attrs["fisher_count"]
        for i, name in enumerate(shard.attrs["providers"]):
            providers[name] = providers.get(name, 0.0) + shard["provider_sums"][i]
    return fisher, providers, count


def test_a_schema_1_store_is_refused_naming_the_migration(legacy):
    with pytest.raises(StoreFormatError, match=f"run `dataworth store migrate --store {legacy}`"):
        GradientStore.open(legacy)
    assert "schema 1" in verify_store(legacy)[0]


def test_the_cli_migrates_a_store(legacy, capsys):
    from flows.cli import main

    assert main(["store", "info", "--store", legacy]) == 2
    assert "dataworth store migrate --store" in capsys.readouterr().err
    assert main(["store", "migrate", "--store", legacy]) == 0
    assert "schema 1 -> 2" in capsys.readouterr().out
    assert main(["store", "verify", "--store", legacy]) == 0


def test_migration_sums_the_per_shard_partials_and_keeps_every_row(legacy):
    fisher, providers, count = legacy_partials(legacy)
    before = zarr.open_group(legacy, mode="r")
    rows_before = before["rows"][...]
    ids_before = before["meta"]["example_id"][...].tolist()

    notes = migrate_store(legacy)
    assert "schema 1 -> 2" in notes[0] and "3 shard(s)" in notes[0]
    assert any("snapshot 1: self-influence dropped" in n for n in notes)

    store = GradientStore.open(legacy)
    # The empirical Fisher's identity is its estimator alone: the sampled-label seed meant nothing to it.
    assert store.attributes.schema_version == 2 and store.attributes.fisher == {"estimator": "empirical"}
    total = store.fisher_partial()
    flat = np.concatenate([total.sums[m.name].numpy().ravel() for m in store.layout.modules])
    assert total.count == count == 58
    assert np.abs(flat - fisher).max() <= 1e-12 * np.abs(fisher).max()
    for name, vector in store.provider_sums().items():
        assert np.abs(vector - providers[name]).max() <= 1e-12 * np.abs(providers[name]).max()
    assert "shards" not in store.root()
    np.testing.assert_array_equal(store.root()["rows"][...], rows_before)
    assert store.read_metadata().example_ids == ids_before
    assert store.load_snapshot(1).fisher.count == 58 and store.load_snapshot(1).self_influence_rows is None
    assert verify_store(legacy) == []
    assert migrate_store(legacy) == [f"{legacy} is already at schema 2"]

    # and it takes new shards as any store does
    result = store.commit_shard(*make_shard(5, 10), spec=SPEC, model_fingerprint=MODEL,
                                fisher=FisherConfig(estimator="empirical", sample_seed=3))
    assert result.committed and store.fisher_partial().count == 68 and verify_store(legacy) == []
