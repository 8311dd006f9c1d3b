"""LoGra's projected gradients equal brute-force projected per-example gradients, for every
registered module type.

Brute force: torch.func per-example gradients of the base weights, projected by the Kronecker
product (P_out kron P_in) vec(G), in float64. Tolerance: relative error below 1e-10.
Biases have gradients too; LoGra does not track them, so the brute force takes weights only.
"""

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from valuation import ClassificationObjective, LoGra, LoGraAdapter, ProjectionConfig
from valuation.layers import adapter_class
from valuation.objectives import CausalLMObjective

from .models import classification_batch, lm_batch, tiny_gpt2, tiny_mlp

REL_TOL = 1e-10
# Adding a module type means adding its exactness test here, and its kind to this set.
COVERED_KINDS = {"linear", "conv1d", "embedding", "conv2d"}


def weight_name(module_name):
    return f"{module_name}.weight" if module_name else "weight"


def kron_project(per_example_grads, projections, layout, model):
    """(P_out kron P_in) vec(G) per example, concatenated in layout order."""
    parts = []
    for spec in layout.modules:
        kind = adapter_class(model.get_submodule(spec.name))
        g = kind.weight_gradient(per_example_grads[spec.name])  # batch x d_out x d_in
        p_in, p_out = (p.to(torch.float64) for p in projections[spec.name])
        kron = torch.kron(p_out, p_in)  # rows: (o, i) pairs in row-major order
        parts.append(g.reshape(g.shape[0], -1) @ kron.T)
    return torch.cat(parts, dim=1)


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def brute_force_rows(model, names, loss_of_one, inputs, tie_weights=True):
    """Per-example weight gradients of `names` via vmap(grad(...)) over the leading dimension."""
    params = {k: v.detach() for k, v in model.named_parameters(remove_duplicate=tie_weights)}
    tracked = {weight_name(n): model.get_submodule(n).weight.detach() for n in names}

    def loss(weights, *one):
        return loss_of_one({**params, **weights}, *one)

    grads = vmap(grad(loss), in_dims=(None,) + (0,) * len(inputs))(tracked, *inputs)
    return {n: grads[weight_name(n)] for n in names}


def logged_and_expected(model, config, batch, objective, loss_of_one, inputs):
    logra = LoGra(model, config)
    rows = logra.log_batch(batch, objective).rows
    projections, layout = logra.projections(), logra.layout
    logra.remove()
    grads = brute_force_rows(model, layout.names, loss_of_one, inputs)
    return rows, kron_project(grads, projections, layout, model), layout


def classification_loss(model):
    def loss_of_one(params, x, y):
        logits = functional_call(model, params, (x[None],))
        return torch.nn.functional.cross_entropy(logits, y[None], reduction="sum")

    return loss_of_one


def test_every_registered_kind_has_an_exactness_test():
    assert set(LoGraAdapter.registry) == COVERED_KINDS


def test_mlp_projected_gradients_equal_kronecker_projection():
    model = tiny_mlp(dims=(6, 5, 3))
    batch = classification_batch(8, d_in=6, n_classes=3)
    rows, expected, layout = logged_and_expected(
        model, ProjectionConfig(init="random", rank_in=3, rank_out=2, seed=7), batch, ClassificationObjective(),
        classification_loss(model), (batch["inputs"], batch["labels"]),
    )
    assert [m.kind for m in layout.modules] == ["linear", "linear"]
    assert rows.dtype == torch.float64
    assert relative_error(rows, expected) < REL_TOL


def test_a_model_that_is_one_linear_layer_is_tracked_as_the_root_module():
    torch.manual_seed(0)
    model = nn.Linear(6, 4).to(torch.float64)
    batch = classification_batch(7, d_in=6, n_classes=4)
    rows, expected, layout = logged_and_expected(
        model, ProjectionConfig(init="random", rank_in=6, rank_out=4, seed=2), batch, ClassificationObjective(),
        classification_loss(model), (batch["inputs"], batch["labels"]),
    )
    assert layout.names == [""]
    assert relative_error(rows, expected) < REL_TOL


class BagOfEmbeddings(nn.Module):
    """Token ids -> embeddings (padding id 0 gets no gradient) -> summed -> linear classifier."""

    def __init__(self, vocab=11, dim=5, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        return self.head(torch.tanh(self.embed(ids)).sum(dim=1))


def test_embedding_projected_gradients_equal_kronecker_projection_with_a_padding_id():
    torch.manual_seed(3)
    model = BagOfEmbeddings().to(torch.float64)
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 11, (6, 7), generator=gen)
    ids[:, 5:] = 0  # padding, and a repeated token in every row
    ids[:, 1] = ids[:, 0]
    batch = {"inputs": ids, "labels": torch.randint(0, 3, (6,), generator=gen)}
    config = ProjectionConfig(init="random", modules=["embed", "head"], rank_in=4, rank_out=3, seed=1)
    rows, expected, layout = logged_and_expected(
        model, config, batch, ClassificationObjective(), classification_loss(model), (ids, batch["labels"]),
    )
    assert [(m.kind, m.d_in, m.d_out, m.k_in, m.k_out) for m in layout.modules] == [
        ("embedding", 11, 5, 4, 3), ("linear", 5, 3, 4, 3)]
    assert relative_error(rows, expected) < REL_TOL


def lm_loss(model, tie_weights=True):
    objective = CausalLMObjective()

    def loss_of_one(params, ids, mask, labels):
        one = {"input_ids": ids[None], "attention_mask": mask[None], "labels": labels[None]}
        logits = functional_call(
            model, params, (), {"input_ids": ids[None], "attention_mask": mask[None]}, tie_weights=tie_weights
        ).logits
        return objective.losses(logits, one).sum()

    return loss_of_one


def per_example_lm_rows(model, batch, layout, projections, tie_weights=True):
    # One example at a time through torch.func.grad: HF attention masking branches on data, so
    # vmap cannot trace it; the padded example still carries its padding.
    parts = []
    for i in range(len(batch["example_ids"])):
        one = tuple(batch[k][i : i + 1] for k in ("input_ids", "attention_mask", "labels"))
        grads = brute_force_rows(model, layout.names, lm_loss(model, tie_weights), one, tie_weights)
        parts.append(kron_project(grads, projections, layout, model))
    return torch.cat(parts)


def test_gpt2_projected_gradients_equal_kronecker_projection_with_padding():
    model = tiny_gpt2()
    batch = lm_batch([12, 7, 3, 9])
    logra = LoGra(model, ProjectionConfig(init="random", rank_in=5, rank_out=4, seed=3))
    rows = logra.log_batch(batch).rows
    projections, layout = logra.projections(), logra.layout
    logra.remove()
    assert {m.kind for m in layout.modules} == {"conv1d"} and len(layout.modules) == 8
    assert relative_error(rows, per_example_lm_rows(model, batch, layout, projections)) < REL_TOL


def test_tied_input_embedding_and_lm_head_are_each_exact():
    """GPT-2 ties lm_head.weight to transformer.wte.weight. LoGra tracks the two uses as two
    blocks (the embedding: vocabulary in, the head: vocabulary out, both k_out x k_in); the brute
    force unties them so each gets its own gradient, whose sum is the tied parameter's."""
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    batch = lm_batch([12, 7, 3, 9])
    config = ProjectionConfig(init="random", modules=["transformer.wte", "lm_head"], exclude=[],
                              rank_in=6, rank_out=5, seed=9)
    logra = LoGra(model, config)
    rows = logra.log_batch(batch).rows
    projections, layout = logra.projections(), logra.layout
    logra.remove()
    assert [(m.kind, m.d_in, m.d_out, m.size) for m in layout.modules] == [
        ("embedding", 48, 16, 30), ("linear", 16, 48, 30)]
    expected = per_example_lm_rows(model, batch, layout, projections, tie_weights=False)
    assert relative_error(rows, expected) < REL_TOL


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 2, padding="same", padding_mode="reflect", dilation=1)
        self.head = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv2(torch.tanh(self.conv1(x)))).flatten(1))


def test_conv2d_projected_gradients_equal_kronecker_projection():
    torch.manual_seed(5)
    model = TinyCNN().to(torch.float64)
    gen = torch.Generator().manual_seed(6)
    batch = {"inputs": torch.randn(5, 2, 6, 6, generator=gen, dtype=torch.float64),
             "labels": torch.randint(0, 3, (5,), generator=gen)}
    rows, expected, layout = logged_and_expected(
        model, ProjectionConfig(init="random", rank_in=7, rank_out=3, seed=4), batch, ClassificationObjective(),
        classification_loss(model), (batch["inputs"], batch["labels"]),
    )
    assert [(m.name, m.kind, m.d_in, m.d_out) for m in layout.modules] == [
        ("conv1", "conv2d", 18, 3), ("conv2", "conv2d", 12, 4), ("head", "linear", 36, 3)]
    assert relative_error(rows, expected) < REL_TOL
