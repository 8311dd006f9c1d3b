"""LoGra's projected gradients equal brute-force projected per-example gradients.

Brute force: torch.func per-example gradients of the base weights, projected by the Kronecker
product (P_out kron P_in) vec(G), in float64. Tolerance: relative error below 1e-10.
"""

import torch
from torch.func import functional_call, grad, vmap

from valuation import ClassificationObjective, LoGra, ProjectionConfig
from valuation.objectives import CausalLMObjective

from .models import classification_batch, lm_batch, tiny_gpt2, tiny_mlp

REL_TOL = 1e-10


def kron_project(per_example_grads, projections, layout, kinds):
    """(P_out kron P_in) vec(G) per example, concatenated in layout order."""
    parts = []
    for spec in layout.modules:
        g = per_example_grads[spec.name]
        if kinds[spec.name] == "conv1d":  # Conv1D stores W as (d_in, d_out)
            g = g.transpose(1, 2)
        p_in, p_out = (p.to(torch.float64) for p in projections[spec.name])
        kron = torch.kron(p_out, p_in)  # rows: (o, i) pairs in row-major order
        parts.append(g.reshape(g.shape[0], -1) @ kron.T)
    return torch.cat(parts, dim=1)


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def brute_force_rows(model, names, loss_of_one, inputs):
    """Per-example weight gradients of `names` via vmap(grad(...)) over the leading dimension."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    tracked = {f"{n}.weight": params[f"{n}.weight"] for n in names}

    def loss(weights, *one):
        return loss_of_one({**params, **weights}, *one)

    grads = vmap(grad(loss), in_dims=(None,) + (0,) * len(inputs))(tracked, *inputs)
    return {n: grads[f"{n}.weight"] for n in names}


def test_mlp_projected_gradients_equal_kronecker_projection():
    model = tiny_mlp(dims=(6, 5, 3))
    batch = classification_batch(8, d_in=6, n_classes=3)
    logra = LoGra(model, ProjectionConfig(rank_in=3, rank_out=2, seed=7))
    rows = logra.log_batch(batch, ClassificationObjective()).rows
    projections, layout = logra.projections(), logra.layout
    logra.remove()

    def loss_of_one(params, x, y):
        logits = functional_call(model, params, (x[None],))
        return torch.nn.functional.cross_entropy(logits, y[None], reduction="sum")

    grads = brute_force_rows(model, layout.names, loss_of_one, (batch["inputs"], batch["labels"]))
    expected = kron_project(grads, projections, layout, {n: "linear" for n in layout.names})
    assert rows.dtype == torch.float64
    assert relative_error(rows, expected) < REL_TOL


def test_gpt2_projected_gradients_equal_kronecker_projection_with_padding():
    model = tiny_gpt2()
    batch = lm_batch([12, 7, 3, 9])
    logra = LoGra(model, ProjectionConfig(rank_in=5, rank_out=4, seed=3))
    rows = logra.log_batch(batch).rows
    projections, layout = logra.projections(), logra.layout
    kinds = {m.name: m.kind for m in layout.modules}
    logra.remove()
    assert set(kinds.values()) == {"conv1d"} and len(kinds) == 8

    objective = CausalLMObjective()

    def loss_of_one(params, ids, mask, labels):
        one = {"input_ids": ids[None], "attention_mask": mask[None], "labels": labels[None]}
        logits = functional_call(model, params, (), {"input_ids": ids[None], "attention_mask": mask[None]}).logits
        return objective.losses(logits, one).sum()

    # One example at a time through torch.func.grad: HF attention masking branches on data, so
    # vmap cannot trace it; the padded example still carries its padding.
    expected_parts = []
    for i in range(len(batch["example_ids"])):
        one = tuple(batch[k][i : i + 1] for k in ("input_ids", "attention_mask", "labels"))
        grads = brute_force_rows(model, layout.names, loss_of_one, one)
        expected_parts.append(kron_project(grads, projections, layout, kinds))
    expected = torch.cat(expected_parts)
    assert relative_error(rows, expected) < REL_TOL
