"""Properties LoGra must keep: invisible add-ons, padding and batch independence, clear errors."""

import subprocess
import sys

import pytest
import torch

from valuation import (
    BatchMeanLossWarning,
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
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if ".logra." not in n}
        return logits.detach(), grads

    before_logits, before_grads = outputs_and_grads()
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
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
    with LoGra(model, ProjectionConfig(init="random", modules=["*.mlp.*"])) as logra:
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
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=3))
    batched = logra.log_batch(batch).rows
    for i, n in enumerate(lengths):
        alone = single_rows(logra, batch, i, n)
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=TIGHT, atol=TIGHT)


def test_ignored_labels_change_nothing():
    """Extra attended tokens labelled -100 after the example do not change its gradient."""
    model = tiny_gpt2()
    batch = lm_batch([12])
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=3))
    full = logra.log_batch(batch).rows
    batch["labels"][0, 8:] = -100
    truncated = single_rows(logra, batch, 0, 8)
    ignored_tail = logra.log_batch(batch).rows
    torch.testing.assert_close(ignored_tail, truncated, rtol=TIGHT, atol=TIGHT)
    assert not torch.allclose(full, ignored_tail)


def test_fisher_partials_merged_shard_by_shard_equal_one_shot():
    model = tiny_gpt2()
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
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
    a = LoGra(tiny_gpt2(seed=0), ProjectionConfig(init="random", seed=4)).projections()
    b = LoGra(tiny_gpt2(seed=1, n_layer=3), ProjectionConfig(init="random", seed=4)).projections()
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
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=8, rank_out=8))
    exact = logra.log_batch(batch).rows
    mixed = logra.log_batch(batch, autocast_dtype=dtype, loss_scale=loss_scale).rows
    assert mixed.dtype == torch.float32
    assert ((mixed - exact).norm() / exact.norm()).item() < tolerance


def test_true_fisher_rows_use_sampled_labels_reproducibly():
    model = tiny_gpt2(dtype=torch.float32)
    batch = lm_batch([12, 7, 4])
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
    true = FisherConfig(estimator="true", samples=1, sample_seed=3)
    first = logra.log_batch(batch, fisher=true)
    again = logra.log_batch(batch, fisher=true)
    assert torch.equal(first.fisher_rows, again.fisher_rows)
    assert not torch.allclose(first.fisher_rows, first.rows)
    torch.testing.assert_close(first.rows, logra.log_batch(batch).rows)


def test_unknown_module_pattern_is_named():
    with pytest.raises(NoModulesMatchedError, match=r"\*\.mlp\.c_fcc.*transformer\.h\.0\.attn\.c_attn"):
        LoGra(tiny_gpt2(), ProjectionConfig(init="random", modules=["*.mlp.c_fcc"]))


def test_unsupported_module_type_is_named_with_the_registered_types():
    with pytest.raises(UnsupportedModuleError, match=r"'transformer\.ln_f' is a LayerNorm.*torch\.nn\.Linear, "
                       r"transformers Conv1D, torch\.nn\.Embedding, torch\.nn\.Conv2d"):
        LoGra(tiny_gpt2(), ProjectionConfig(init="random", modules=["transformer.ln_f"]))


def test_an_embedding_it_cannot_track_exactly_says_why():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4, max_norm=1.0), torch.nn.Linear(4, 2))
    with pytest.raises(UnsupportedModuleError, match=r"'0' is a Embedding.*max_norm"):
        LoGra(model, ProjectionConfig(init="random", modules=["0"]))
    assert LoGra(model, ProjectionConfig(init="random")).layout.names == ["1"]  # wildcards skip it


def test_no_trackable_module_lists_the_registered_types():
    with pytest.raises(NoModulesMatchedError, match=r"trackable modules \(torch\.nn\.Linear, transformers Conv1D, "
                       r"torch\.nn\.Embedding, torch\.nn\.Conv2d\) are: none"):
        LoGra(torch.nn.Sequential(torch.nn.Tanh()), ProjectionConfig(init="random"))


def test_wildcards_select_the_configured_kinds_and_exact_names_any_kind():
    model = tiny_gpt2()
    default = LoGra(model, ProjectionConfig(init="random")).layout.names
    assert "transformer.wte" not in default and len(default) == 8
    model = tiny_gpt2()
    with_embeddings = LoGra(model, ProjectionConfig(init="random", kinds=["conv1d", "embedding"])).layout.names
    assert with_embeddings[:2] == ["transformer.wte", "transformer.wpe"] and len(with_embeddings) == 10
    model = tiny_gpt2()
    named = LoGra(model, ProjectionConfig(init="random", modules=["transformer.wte", "*.mlp.*"])).layout.names
    assert named == ["transformer.wte", "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
                     "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"]
    with pytest.raises(ValueError, match=r"unknown module kind\(s\) \['lora'\]"):
        LoGra(tiny_gpt2(), ProjectionConfig(init="random", kinds=["linear", "lora"]))


def test_a_module_shared_by_the_batch_is_refused_by_name():
    """GPT-2's position embedding sees one row of positions for the whole batch: no per-example gradient."""
    logra = LoGra(tiny_gpt2(), ProjectionConfig(init="random", modules=["transformer.wpe", "*"]))
    with pytest.raises(ValueError, match=r"'transformer\.wpe' saw a batch of 1 where the attention mask has 3 rows"):
        logra.log_batch(lm_batch([12, 7, 4]))


def test_a_subclass_that_changes_forward_is_not_taken_for_its_base_type():
    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Renamed(torch.nn.Linear):
        pass

    model = torch.nn.Sequential(Scaled(3, 3), Renamed(3, 2))
    assert LoGra(model, ProjectionConfig(init="random")).layout.names == ["1"]


def test_a_second_logra_on_the_same_model_is_refused():
    model = tiny_gpt2()
    first = LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
    with pytest.raises(ValueError, match="already carries LoGra add-ons"):
        LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4))
    first.remove()
    LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4)).remove()


# --- example ids travel with the rows ----------------------------------------------------------


def test_example_ids_come_back_with_the_rows():
    model = tiny_gpt2()
    batch = lm_batch([12, 7, 4])
    objective = CausalLMObjective()
    with LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4)) as logra:
        logged = logra.log_batch(batch)
        assert logged.ids == ["ex0", "ex1", "ex2"]  # from batch["example_ids"]
        assert logged.n_tokens.tolist() == [11, 6, 3]
        assert logra.log_batch(batch, ids=["a", "b", "c"]).ids == ["a", "b", "c"]
        unnamed = {k: v for k, v in batch.items() if k != "example_ids"}
        assert logra.log_batch(unnamed).ids is None

        with logra.recording(batch["attention_mask"], example_ids=["x", "y", "z"]):
            losses = objective.losses(objective.forward(model, batch), batch)
        torch.autograd.grad(losses.sum(), logra.bottlenecks)
        rows, ids = logra.pop_rows()
        assert ids == ["x", "y", "z"]
        torch.testing.assert_close(rows, logged.rows, rtol=TIGHT, atol=TIGHT)

        with pytest.raises(ValueError, match="2 example ids were given"):
            with logra.recording(example_ids=["x", "y"]):
                objective.forward(model, unnamed)


def test_backward_through_the_models_mean_loss_warns_and_rows_are_one_nth():
    model = tiny_gpt2()
    batch = lm_batch([12, 7, 4])
    with LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4)) as logra:
        summed = logra.log_batch(batch).rows
        with logra.recording(batch["attention_mask"], batch["example_ids"]):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        with pytest.warns(BatchMeanLossWarning, match=r"1/N of its example's gradient"):
            torch.autograd.grad(out.loss, logra.bottlenecks)
        mean_rows, _ = logra.pop_rows()
    n_tokens = (batch["labels"][:, 1:] != -100).sum()
    # transformers computes its loss in float32 even for a float64 model, hence not 1e-10.
    assert ((mean_rows * n_tokens - summed).norm() / summed.norm()).item() < 1e-5


def test_summed_losses_do_not_warn(recwarn):
    model = tiny_gpt2()
    batch = lm_batch([12, 7, 4])
    with LoGra(model, ProjectionConfig(init="random", rank_in=4, rank_out=4)) as logra:
        with logra.recording(batch["attention_mask"]):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            losses = CausalLMObjective().losses(out.logits, batch)
        torch.autograd.grad(losses.sum(), logra.bottlenecks)
    assert not [w for w in recwarn if issubclass(w.category, BatchMeanLossWarning)]


def test_mismatched_projection_configs_are_refused_naming_both():
    model = tiny_gpt2()
    store_side = LoGra(model, ProjectionConfig(init="random", rank_in=4, seed=1))
    store_side.remove()
    query_side = LoGra(model, ProjectionConfig(init="random", rank_in=8, seed=2))
    with pytest.raises(ProjectionMismatchError) as err:
        store_side.spec.check_compatible(query_side.spec)
    message = str(err.value)
    assert store_side.spec.fingerprint in message and query_side.spec.fingerprint in message
    assert "rank_in: 4 vs 8" in message and "seed: 1 vs 2" in message


def test_non_finite_gradients_name_module_and_example():
    model = tiny_gpt2(dtype=torch.float32)
    batch = lm_batch([12, 7, 4])
    logra = LoGra(model, ProjectionConfig(init="random", modules=["transformer.h.1.mlp.c_proj"]))
    with torch.no_grad():
        model.transformer.h[1].mlp.c_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match=r"transformer\.h\.1\.mlp\.c_proj.*ex0, ex1, ex2"):
        logra.log_batch(batch)


def test_import_valuation_imports_no_transformers_and_nothing_above_it():
    """Conv1D is detected lazily: a model made of it has imported transformers already."""
    code = ("import sys, valuation; "
            "print([m for m in ('transformers', 'prefect', 'zarr', 'dask', 'storage') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_default_pca_init_without_data_says_how_to_build_it():
    with pytest.raises(ValueError, match=r"^init='pca' \(the default\) needs calibration data: build with "
                       r"LoGra\.with_pca"):
        LoGra(tiny_gpt2())
