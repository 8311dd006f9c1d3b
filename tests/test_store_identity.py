"""Fisher partials of another estimator, or projections that are not the spec's, are refused."""

import pytest
import torch

from storage import GradientStore, RowsInvalidError
from valuation import FisherConfig

from .test_store_support import make_shard, make_spec

MODEL = {"fingerprint": "m1"}


def test_rows_with_another_fisher_estimator_are_refused_naming_both(tmp_path):
    store = GradientStore.create(str(tmp_path / "s.zarr"), make_spec(), MODEL, fisher=FisherConfig(estimator="true"))
    shard, rows, meta = make_shard(0)
    with pytest.raises(RowsInvalidError, match=r"sums the true Fisher.*come with the empirical Fisher"):
        store.commit_shard(shard, rows, meta, spec=make_spec(), model_fingerprint=MODEL, fisher=FisherConfig())
    result = store.commit_shard(shard, rows, meta, spec=make_spec(), model_fingerprint=MODEL,
                                fisher=FisherConfig(estimator="true"))
    assert result.committed and store.attributes.fisher_estimator == "true"


def test_projection_matrices_must_be_the_specs(tmp_path):
    spec = make_spec()
    wrong = {m.name: (torch.zeros(m.k_in, m.d_in), torch.zeros(m.k_out, m.d_out)) for m in spec.layout.modules}
    with pytest.raises(RowsInvalidError, match="not the ones the projection spec describes"):
        GradientStore.create(str(tmp_path / "s.zarr"), spec, MODEL, projections=wrong)
    assert not (tmp_path / "s.zarr").exists()  # refused before anything was written
