"""Fisher partials of another estimator, or projections that are not the spec's, are refused."""

import pytest
import torch

from storage import GradientStore, RowsInvalidError
from storage.schema import fisher_identity
from valuation import FisherConfig

from .test_store_support import make_shard, make_spec

MODEL = {"fingerprint": "m1"}


def test_rows_with_another_fisher_estimator_are_refused_naming_both(tmp_path):
    fisher = FisherConfig(estimator="true", sample_seed=3, damping=0.5)
    store = GradientStore.create(str(tmp_path / "s.zarr"), make_spec(), MODEL, fisher=fisher)
    # All of the estimator's settings but the damping, whatever fields FisherConfig grows.
    assert store.attributes.fisher == FisherConfig(estimator="true", sample_seed=3).model_dump(exclude={"damping"})
    shard, rows, meta = make_shard(0)
    with pytest.raises(RowsInvalidError, match=r"sums the true Fisher.*come with the empirical Fisher"):
        store.commit_shard(shard, rows, meta, spec=make_spec(), model_fingerprint=MODEL,
                           fisher=FisherConfig(estimator="empirical"))
    with pytest.raises(RowsInvalidError, match="sample_seed: 3 vs 4"):
        store.stage("w0", spec=make_spec(), model_fingerprint=MODEL,
                    fisher=FisherConfig(estimator="true", sample_seed=4))
    result = store.commit_shard(shard, rows, meta, spec=make_spec(), model_fingerprint=MODEL,
                                fisher=FisherConfig(estimator="true", sample_seed=3, damping=0.1))
    assert result.committed and store.attributes.fisher_estimator == "true"


def test_the_fisher_identity_is_every_setting_but_the_damping_with_the_values_older_stores_used():
    sampled = FisherConfig(estimator="true")
    assert set(fisher_identity(sampled)) == set(FisherConfig.model_fields) - {"damping"}
    # Written before `samples` existed: one label per token then, whatever today's default is.
    assert fisher_identity({"estimator": "true", "sample_seed": 0}) == fisher_identity(sampled.model_copy(
        update={"samples": 1}))
    assert fisher_identity({"estimator": "true", "sample_seed": 0}) != fisher_identity(
        sampled.model_copy(update={"samples": 4}))
    newer = {"estimator": "true", "sample_seed": 0, "label_samples": 4}  # a field this version lacks
    assert fisher_identity(newer) != fisher_identity(sampled)


def test_sampled_label_settings_do_not_split_other_estimators(tmp_path):
    assert fisher_identity(FisherConfig(estimator="empirical", sample_seed=3, samples=8)) == {"estimator": "empirical"}
    store = GradientStore.create(str(tmp_path / "s.zarr"), make_spec(), MODEL, fisher=FisherConfig(estimator="exact"))
    shard, rows, meta = make_shard(0)
    result = store.commit_shard(shard, rows, meta, spec=make_spec(), model_fingerprint=MODEL,
                                fisher=FisherConfig(estimator="exact", sample_seed=9, samples=2))
    assert result.committed


def test_projection_matrices_must_be_the_specs(tmp_path):
    spec = make_spec()
    wrong = {m.name: (torch.zeros(m.k_in, m.d_in), torch.zeros(m.k_out, m.d_out)) for m in spec.layout.modules}
    with pytest.raises(RowsInvalidError, match="not the ones the projection spec describes"):
        GradientStore.create(str(tmp_path / "s.zarr"), spec, MODEL, projections=wrong)
    assert not (tmp_path / "s.zarr").exists()  # refused before anything was written


def test_an_identity_told_nothing_of_its_estimator_is_never_auto():
    """`auto` names no one estimator: a store created without a FisherConfig keeps the
    sampled-label identity it had before `auto` became the default."""
    assert fisher_identity(None)["estimator"] == "true"
    assert fisher_identity({"sample_seed": 0})["estimator"] == "true"
