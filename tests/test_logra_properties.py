"""Properties LoGra must keep: invisible add-ons, padding and batch independence, clear errors."""

import pytest
import torch

from valuation import (
    FisherConfig,
    FisherPartial,
    LoGra,
    NoModulesMatchedError,
    NonFiniteGradientError,
    ProjectionConfig,
    ProjectionMismatchError,
    UnsupportedModuleError,
)
from valuation.objectives import CausalLMObjective

from .models import lm_batch, tiny_gpt2

TIGHT = 1e-10  # float64


def test_zero_bottleneck_leaves_outputs_and_base_gradients_unchanged():
    model = tiny_gpt2()
    batch = lm_batch([12, 5, 9])
    objective = CausalLMObjective()

    def outputs_and_grads():
        model.zero_grad()
        logits = objective.forward(model, batch)
        objective.losses(logits, batch).sum().backward()
        grads = {n.replace(".base.", "."): p.grad.clone() for n, p in model.named_parameters()
                 if ".logra." not in n}
        return logits.detach(), grads

    before_logits, before_grads = outputs_and_grads()
    logra = LoGra(model, ProjectionConfig(rank_in=4, rank_out=4))
    with logra.recording(batch["attention_mask"]):
        after_logits, after_grads = outputs_and_grads()
    logra.remove()
    assert torch.equal(before_logits, after_logits)
    assert before_grads.keys() == after_grads.keys()
    for name in before_grads:
        torch.testing.assert_close(after_grads[name], before_grads[name], rtol=0, atol=1e-14)


def test_remove_restores_the_model_exactly():
    model = tiny_gpt2()
    keys = list(model.state_dict())
    modules = [type(m) for m in model.modules()]
    with LoGra(model, ProjectionConfig(modules=["*.mlp.*"])) as logra:
        assert len(logra.adapters) == 4
        assert any("logra" in k for k in model.state_dict())
    assert list(model.state_dict()) == keys
    assert [type(m) for m in model.modules()] == modules


def single_rows(logra, batch, index, length):
    """The example alone, unpadded."""
    one = {k: batch[k][index : index + 1, :length] for k in ("input_ids", "attention_mask", "labels")}
    one["example_ids"] = [batch["example_ids"][index]]
    return logra.log_batch(one).rows


def test_padding_and_batch_composition_change_nothing():
    model = tiny_gpt2()
    lengths = [12, 3, 7, 12, 5, 9, 1, 10]
    batch = lm_batch(lengths)
    logra = LoGra(model, ProjectionConfig(rank_in=4, rank_out=3))
    batched = logra.log_batch(batch).rows
    for i, n in enumerate(lengths):
        alone = single_rows(logra, batch, i, n)
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=TIGHT, atol=TIGHT)


def test_ignored_labels_change_nothing():
    """Extra attended tokens labelled -100 after the example do not change its gradient."""
    model = tiny_gpt2()
    batch = lm_batch([12])
    logra = LoGra(model, ProjectionConfig(rank_in=4, rank_out=3))
    full = logra.log_batch(batch).rows
    batch["labels"][0, 8:] = -100
    truncated = single_rows(logra, batch, 0, 8)
    ignored_tail = logra.log_batch(batch).rows
    torch.testing.assert_close(ignored_tail, truncated, rtol=TIGHT, atol=TIGHT)
    assert not torch.allclose(full, ignored_tail)


def test_fisher_partials_merged_shard_by_shard_equal_one_shot():
    model = tiny_gpt2()
    logra = LoGra(model, ProjectionConfig(rank_in=4, rank_out=4))
    shards = [logra.log_batch(lm_batch([12, 6, 9], seed=s)).rows for s in range(4)]
    merged = FisherPartial.zeros(logra.layout)
    for rows in shards:
        merged = merged + FisherPartial.zeros(logra.layout).update(rows)
    one_shot = FisherPartial.zeros(logra.layout).update(torch.cat(shards))
    assert merged.count == one_shot.count == 12
    for name in one_shot.sums:
        torch.testing.assert_close(merged.sums[name], one_shot.sums[name], rtol=1e-12, atol=1e-12)
    a, b = merged.snapshot(0.1), one_shot.snapshot(0.1)
    for name in a.eigvals:
        torch.testing.assert_close(a.eigvals[name], b.eigvals[name], rtol=1e-10, atol=1e-12)


def test_random_projection_is_reproducible_from_seed_and_name():
    a = LoGra(tiny_gpt2(seed=0), ProjectionConfig(seed=4)).projections()
    b = LoGra(tiny_gpt2(seed=1, n_layer=3), ProjectionConfig(seed=4)).projections()
    for name in a:
        assert torch.equal(a[name][0], b[name][0]) and torch.equal(a[name][1], b[name][1])


@pytest.mark.parametrize(
    "dtype, loss_scale, tolerance",
    [(torch.bfloat16, 1.0, 0.05), (torch.float16, 1024.0, 0.01)],  # 8 and 11 mantissa bits
    ids=["bf16", "fp16"],
)
def test_autocast_keeps_float32_statistics_close(dtype, loss_scale, tolerance):
    model = tiny_gpt2(dtype=torch.float32)
    batch = lm_batch([12, 7, 4])
    logra = LoGra(model, ProjectionConfig(rank_in=8, rank_out=8))
    exact = logra.log_batch(batch).rows
    mixed = logra.log_batch(batch, autocast_dtype=dtype, loss_scale=loss_scale).rows
    assert mixed.dtype == torch.float32
    assert ((mixed - exact).norm() / exact.norm()).item() < tolerance


def test_true_fisher_rows_use_sampled_labels_reproducibly():
    model = tiny_gpt2(dtype=torch.float32)
    batch = lm_batch([12, 7, 4])
    logra = LoGra(model, ProjectionConfig(rank_in=4, rank_out=4))
    true = FisherConfig(estimator="true", sample_seed=3)
    first = logra.log_batch(batch, fisher=true)
    again = logra.log_batch(batch, fisher=true)
    assert torch.equal(first.fisher_rows, again.fisher_rows)
    assert not torch.allclose(first.fisher_rows, first.rows)
    torch.testing.assert_close(first.rows, logra.log_batch(batch).rows)


def test_unknown_module_pattern_is_named():
    with pytest.raises(NoModulesMatchedError, match=r"\*\.mlp\.c_fcc.*transformer\.h\.0\.attn\.c_attn"):
        LoGra(tiny_gpt2(), ProjectionConfig(modules=["*.mlp.c_fcc"]))


def test_unsupported_module_type_is_named():
    with pytest.raises(UnsupportedModuleError, match=r"'transformer\.wte' is a Embedding"):
        LoGra(tiny_gpt2(), ProjectionConfig(modules=["transformer.wte"]))


def test_mismatched_projection_configs_are_refused_naming_both():
    model = tiny_gpt2()
    store_side = LoGra(model, ProjectionConfig(rank_in=4, seed=1))
    store_side.remove()
    query_side = LoGra(model, ProjectionConfig(rank_in=8, seed=2))
    with pytest.raises(ProjectionMismatchError) as err:
        store_side.spec.check_compatible(query_side.spec)
    message = str(err.value)
    assert store_side.spec.fingerprint in message and query_side.spec.fingerprint in message
    assert "rank_in: 4 vs 8" in message and "seed: 1 vs 2" in message


def test_non_finite_gradients_name_module_and_example():
    model = tiny_gpt2(dtype=torch.float32)
    batch = lm_batch([12, 7, 4])
    logra = LoGra(model, ProjectionConfig(modules=["transformer.h.1.mlp.c_proj"]))
    with torch.no_grad():
        model.transformer.h[1].mlp.c_proj.base.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match=r"transformer\.h\.1\.mlp\.c_proj.*ex0, ex1, ex2"):
        logra.log_batch(batch)
