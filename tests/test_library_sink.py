"""Rows from your own training code into a GradientStore: the sink protocol, its store adapter
and the Hugging Face Trainer callback, end to end on a tiny model."""

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

from storage import CodecConfig, GradientStore, verify_store
from storage.sink import StoreSink
from valuation import (
    ClassificationObjective,
    FisherConfig,
    Influence,
    ListSink,
    LoGra,
    ProjectionConfig,
    RecordedRows,
    log_into_sink,
)
from valuation.hf import LoGraCallback

from .models import classification_batch, lm_batch, tiny_gpt2

CONFIG = ProjectionConfig(init="random", rank_in=4, rank_out=4, seed=2)
PROVIDERS = {f"doc-{i}": "acme" if i % 3 else "globex" for i in range(12)}


def named_batches(n_batches=3, size=4):
    batches = []
    for b in range(n_batches):
        batch = lm_batch([12, 7, 9, 4][:size], seed=b)
        batch["example_ids"] = [f"doc-{b * size + i}" for i in range(size)]
        batches.append(batch)
    return batches


def test_store_sink_keeps_rows_ids_providers_and_fisher(tmp_path):
    model = tiny_gpt2()
    batches = named_batches()
    memory = ListSink()
    log_into_sink(model, batches, memory, CONFIG)
    sink = StoreSink(str(tmp_path / "store.zarr"), providers=PROVIDERS, codec=CodecConfig(precision="float32"),
                     shard_rows=5)
    log_into_sink(model, batches, sink, CONFIG)

    store = GradientStore.open(str(tmp_path / "store.zarr"))
    assert [r.status for r in sink.results] == ["committed", "committed"]  # 8 rows, then the last 4
    meta = store.read_metadata()
    assert meta.example_ids == memory.ids == [f"doc-{i}" for i in range(12)]
    assert meta.providers == [PROVIDERS[i] for i in meta.example_ids]
    assert meta.n_tokens.tolist() == [11, 6, 8, 3] * 3
    np.testing.assert_allclose(store.read_rows(), memory.rows.numpy(), rtol=1e-6, atol=1e-7)
    for name, total in store.fisher_partial().sums.items():
        np.testing.assert_allclose(total, memory.fisher().sums[name], rtol=1e-5, atol=1e-8)
    assert store.spec.fingerprint == memory.session.spec.fingerprint

    # The same logging again commits nothing new: shards are known by the ids they hold.
    again = StoreSink(str(tmp_path / "store.zarr"), providers=PROVIDERS, shard_rows=5)
    log_into_sink(model, batches, again, CONFIG)
    assert [r.status for r in again.results] == ["already_committed", "already_committed"]
    assert store.refresh().n_rows == 12


def test_store_sink_refuses_rows_it_cannot_keep(tmp_path):
    model = tiny_gpt2()
    unnamed = [{k: v for k, v in named_batches(1)[0].items() if k != "example_ids"}]
    with pytest.raises(Exception, match="rows without example ids cannot be stored"):
        log_into_sink(model, unnamed, StoreSink(str(tmp_path / "a.zarr"), providers="acme"), CONFIG)
    with pytest.raises(Exception, match=r"example 'doc-0' has no provider"):
        log_into_sink(model, named_batches(1), StoreSink(str(tmp_path / "b.zarr"), providers={}), CONFIG)
    log_into_sink(model, named_batches(1), StoreSink(str(tmp_path / "c.zarr"), providers="acme"), CONFIG,
                  fisher=FisherConfig(estimator="empirical"))
    with pytest.raises(Exception, match="sums the empirical Fisher"):
        log_into_sink(model, named_batches(1), StoreSink(str(tmp_path / "c.zarr"), providers="acme"), CONFIG,
                      fisher=FisherConfig(estimator="true"))
    assert [m.name for m in model.modules() if "LoGra" in type(m).__name__] == []  # add-ons always removed


class Examples(torch.utils.data.Dataset):
    """What a Trainer sees: input_ids, attention_mask, labels (it drops other columns anyway)."""

    def __init__(self, batches):
        self.items = [{k: b[k][i] for k in ("input_ids", "attention_mask", "labels")}
                      for b in batches for i in range(len(b["example_ids"]))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_trainer_callback_logs_every_example_after_training(tmp_path):
    model = tiny_gpt2(dtype=torch.float32)
    batches = named_batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sink = StoreSink(str(tmp_path / "store.zarr"), providers=PROVIDERS, codec=CodecConfig(precision="float32"))
    callback = LoGraCallback(batches, sink, CONFIG)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    Trainer(model=model, args=args, train_dataset=Examples(batches), callbacks=[callback]).train()

    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it trained
    assert callback.logra is not None and not callback.logra.adapters  # and the add-ons are gone
    store = GradientStore.open(str(tmp_path / "store.zarr"))
    assert store.read_metadata().example_ids == [f"doc-{i}" for i in range(12)]
    # The rows are the trained model's per-example gradients: the same as logging it directly.
    with LoGra(model.eval(), CONFIG) as logra:
        direct = torch.cat([logra.log_batch(b).rows for b in batches])
    np.testing.assert_allclose(store.read_rows(), direct.numpy(), rtol=1e-5, atol=1e-6)

    # And they score: the store's rows, ids and Fisher are all one needs.
    stored = RecordedRows(torch.from_numpy(store.read_rows()), store.read_metadata().example_ids)
    best = Influence(store.fisher_partial().snapshot(0.1)).top_k(direct[:2], stored, k=3, mode="relatif")
    assert len(best.ids) == 2 and all(i in PROVIDERS for row in best.ids for i in row)


def test_a_one_layer_model_with_pca_projections_round_trips_through_a_store(tmp_path):
    """The root module is named "" in the layout; its PCA matrices still get a node in the store."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).to(torch.float64)
    batch = classification_batch(6, d_in=4, n_classes=3)
    batch["example_ids"] = [f"e{i}" for i in range(6)]
    url = str(tmp_path / "store.zarr")
    logra = log_into_sink(model, [batch], StoreSink(url, providers="acme"),
                          ProjectionConfig(rank_in=4, rank_out=3, init="pca"), objective=ClassificationObjective())
    store = GradientStore.open(url)
    assert store.layout.names == [""] and store.n_rows == 6
    assert store.spec.matrices_sha256 == logra.spec.matrices_sha256
    assert store.attributes.calibration["examples"] == 6  # what the PCA was fitted on, recorded
    assert verify_store(url) == []
