"""The Fisher estimators against brute force: the exact expectation over classes, several
sampled labels, and what the estimators refuse."""

import pytest
import torch
from torch import nn

from valuation import ClassificationObjective, FisherConfig, FisherPartial, LoGra, ProjectionConfig
from valuation.objectives import CausalLMObjective, content_keys

from .models import lm_batch, tiny_gpt2


def classifier_and_batch(classes: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, classes)).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, classes, (6,))
    return model, {"inputs": x, "labels": y, "example_ids": [f"e{i}" for i in range(6)]}


def projected(grad: torch.Tensor, p_in: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    return (p_out.double() @ grad @ p_in.double().T).flatten()


def test_exact_fisher_is_the_expectation_over_classes():
    model, batch = classifier_and_batch()
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=3, rank_out=2))
    logged = logra.log_batch(batch, ClassificationObjective(), fisher=FisherConfig(estimator="exact"))
    projections = logra.projections()
    layers = {"0": model[0], "2": model[2]}
    logra.remove()
    assert logged.fisher_rows.shape == (6, 3, logra.layout.total)

    brute = torch.zeros(logra.layout.total, logra.layout.total, dtype=torch.float64)
    for i in range(6):
        log_p = model(batch["inputs"][i : i + 1])[0].log_softmax(-1)
        for c in range(3):
            grads = torch.autograd.grad(-log_p[c], [layers[n].weight for n in layers], retain_graph=True)
            row = torch.cat([projected(g, *projections[n]) for n, g in zip(layers, grads)])
            brute += log_p[c].exp().item() * torch.outer(row, row)
    partial = FisherPartial.zeros(logra.layout).update(logged.fisher_rows)
    assert partial.count == 6
    got = torch.block_diag(*[partial.sums[m.name] for m in logra.layout.modules])
    offsets = logra.layout.offsets
    mask = torch.zeros_like(brute, dtype=torch.bool)  # the Fisher is block-diagonal per module
    for start, stop in offsets.values():
        mask[start:stop, start:stop] = True
    torch.testing.assert_close(got, torch.where(mask, brute, 0.0), rtol=1e-10, atol=1e-12)


def test_several_sampled_labels_average_reproducibly_and_count_examples_once():
    model = tiny_gpt2(dtype=torch.float32)
    batch = lm_batch([12, 7, 4])
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
    four = FisherConfig(estimator="true", samples=4, sample_seed=3)
    first = logra.log_batch(batch, fisher=four)
    again = logra.log_batch(batch, fisher=four)
    one = logra.log_batch(batch, fisher=FisherConfig(estimator="true", samples=1, sample_seed=3))
    logra.remove()
    assert first.fisher_rows.shape == (3, 4, logra.layout.total)
    assert torch.equal(first.fisher_rows, again.fisher_rows)
    # The first draw is the one-sample draw, weighted 1/sqrt(4).
    torch.testing.assert_close(first.fisher_rows[:, 0] * 2, one.fisher_rows, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(first.fisher_rows[:, 0], first.fisher_rows[:, 1])
    assert FisherPartial.zeros(logra.layout).update(first.fisher_rows).count == 3


def test_exact_fisher_needs_a_classifier():
    logra = LoGra(tiny_gpt2(), ProjectionConfig(init="random", rank_in=2, rank_out=2))
    with pytest.raises(ValueError, match="exact Fisher needs an objective with a class_losses"):
        logra.log_batch(lm_batch([5, 4]), CausalLMObjective(), fisher=FisherConfig(estimator="exact"))
    logra.remove()


def test_the_default_estimator_is_exact_for_a_classifier_and_sampled_labels_for_a_language_model():
    assert FisherConfig().estimator == "auto"
    assert FisherConfig().resolved(classifier=True).estimator == "exact"
    assert FisherConfig().resolved(classifier=False) == FisherConfig(estimator="true", samples=8)
    model, batch = classifier_and_batch()
    with LoGra(model, ProjectionConfig(init="random", rank_in=3, rank_out=2)) as logra:
        auto = logra.log_batch(batch, ClassificationObjective())
        exact = logra.log_batch(batch, ClassificationObjective(), fisher=FisherConfig(estimator="exact"))
    torch.testing.assert_close(auto.fisher_rows, exact.fisher_rows, rtol=0, atol=0)
    batch = lm_batch([5, 3])
    with LoGra(tiny_gpt2(), ProjectionConfig(init="random", rank_in=2, rank_out=2)) as logra:
        auto = logra.log_batch(batch)
        sampled = logra.log_batch(batch, fisher=FisherConfig(estimator="true", samples=8))
    torch.testing.assert_close(auto.fisher_rows, sampled.fisher_rows, rtol=0, atol=0)


def test_a_store_records_the_estimator_auto_stood_for(tmp_path):
    from storage import GradientStore
    from storage.schema import fisher_identity
    from storage.sink import StoreSink
    from valuation import log_into_sink

    with pytest.raises(ValueError, match="'auto' must be resolved for the model's objective"):
        fisher_identity(FisherConfig())
    model, batch = classifier_and_batch()
    url = str(tmp_path / "store.zarr")
    log_into_sink(model, [batch], StoreSink(url, providers="acme"), ProjectionConfig(rank_in=3, rank_out=2),
                  objective=ClassificationObjective())
    assert GradientStore.open(url).attributes.fisher == {"estimator": "exact"}


@pytest.mark.parametrize("named", [True, False], ids=["example ids", "no ids"])
def test_sampled_labels_follow_each_example_not_its_batch(named):
    """The same examples, batched together or one at a time (so padded to other widths), draw the
    same labels: each example's id, or without ids its content, seeds its draws over its own
    tokens, so neither its place in a batch nor the batch's padding moves them."""
    model = tiny_gpt2(dtype=torch.float32)
    together = {k: v for k, v in lm_batch([12, 7, 4]).items() if k != "example_ids"}
    ids = ["a", "b", "c"] if named else None
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
    fisher = FisherConfig(estimator="true", samples=2, sample_seed=5)
    batched = logra.log_batch(together, ids=ids, fisher=fisher).fisher_rows
    alone = []
    for row, length in enumerate([12, 7, 4]):
        one = {k: v[row : row + 1, :length] for k, v in together.items()}
        alone.append(logra.log_batch(one, ids=ids[row : row + 1] if ids else None, fisher=fisher).fisher_rows)
    reordered = {k: v[[2, 0, 1]] for k, v in together.items()}
    permuted = logra.log_batch(reordered, ids=[ids[i] for i in (2, 0, 1)] if ids else None, fisher=fisher).fisher_rows
    logra.remove()
    torch.testing.assert_close(torch.cat(alone), batched, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(permuted, batched[[2, 0, 1]], rtol=1e-4, atol=1e-6)


def test_without_ids_the_content_names_tell_examples_apart_and_ignore_padding():
    batch = {k: v for k, v in lm_batch([12, 7, 7]).items() if k != "example_ids"}
    keys = content_keys(batch, 3)
    narrow = content_keys({k: v[1:2, :7] for k, v in batch.items()}, 1)
    assert len(set(keys)) == 3 and narrow == keys[1:2]
    _, labelled = classifier_and_batch()
    relabelled = {**labelled, "labels": labelled["labels"].flip(0)}
    assert content_keys(labelled, 6) != content_keys(relabelled, 6)
