"""With full-rank projections, LoGra influence equals brute-force exact damped-Fisher influence.

The model is small enough to build and invert each module's Fisher in the original parameter
space. LoGra's Fisher is block-diagonal across modules (as in the paper), so the brute force is
too. PCA init at full rank gives orthogonal projections, for which damping commutes with the
projection, so every mode must match at any damping. A Gaussian projection is invertible but not
orthogonal: it must match exactly without damping. Undamped cases use a squared-error objective,
since softmax cross-entropy makes the last layer's Fisher singular (output gradients sum to zero).
Tolerance: relative error below 1e-9.
"""

import pytest
import torch
from torch.func import functional_call, grad, vmap

from valuation import (
    ClassificationObjective,
    FisherPartial,
    LoGra,
    PreconditionedQueries,
    ProjectionConfig,
    influence_scores,
)

from .models import classification_batch, tiny_mlp

REL_TOL = 1e-9
DIMS = (4, 3, 2)


class SquaredErrorObjective(ClassificationObjective):
    """Regression onto one-hot targets: its Fisher is invertible with enough examples."""

    def losses(self, outputs, batch):
        classes = torch.arange(outputs.shape[1], device=outputs.device)
        targets = (batch["labels"][:, None] == classes).to(outputs.dtype)  # one_hot, vmap-safe
        return (outputs - targets).square().sum(dim=1)


def per_example_weight_grads(model, batch, objective):
    params = {k: v.detach() for k, v in model.named_parameters()}
    weights = {k: v for k, v in params.items() if k.endswith("weight")}

    def loss(w, x, y):
        outputs = functional_call(model, {**params, **w}, (x[None],))
        return objective.losses(outputs, {"labels": y[None]}).sum()

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(weights, batch["inputs"], batch["labels"])
    return [grads[k].reshape(len(batch["labels"]), -1) for k in sorted(grads)]


def exact_influence(train_blocks, query_blocks, alpha):
    """Per-module damped empirical Fisher, solved exactly; returns dot, self-influences."""
    dot = 0.0
    train_self = 0.0
    query_self = 0.0
    for train, query in zip(train_blocks, query_blocks):
        fisher = train.T @ train / train.shape[0]
        damping = alpha * torch.trace(fisher) / fisher.shape[0]  # alpha * mean eigenvalue
        h = fisher + damping * torch.eye(fisher.shape[0], dtype=fisher.dtype)
        dot = dot + query @ torch.linalg.solve(h, train.T)
        train_self = train_self + (train * torch.linalg.solve(h, train.T).T).sum(1)
        query_self = query_self + (query * torch.linalg.solve(h, query.T).T).sum(1)
    return {
        "dot": dot,
        "relatif": dot / train_self.sqrt()[None, :],
        "cosine": dot / train_self.sqrt()[None, :] / query_self.sqrt()[:, None],
    }


def logra_influence(model, train, queries, init, alpha, objective):
    config = ProjectionConfig(rank_in=max(DIMS), rank_out=max(DIMS), init=init, seed=5)
    if init == "pca":
        logra = LoGra.with_pca(model, config, [train], objective)
    else:
        logra = LoGra(model, config)
    train_rows = logra.log_batch(train, objective).rows
    query_rows = logra.log_batch(queries, objective).rows
    logra.remove()
    fisher = FisherPartial.zeros(logra.layout).update(train_rows).snapshot(alpha)
    pre = PreconditionedQueries.build(query_rows, fisher)
    self_inf = fisher.self_influence(train_rows)
    return {m: influence_scores(pre, train_rows, m, self_inf) for m in ("dot", "relatif", "cosine")}


@pytest.mark.parametrize(
    "init, alpha, objective",
    [
        ("pca", 0.1, ClassificationObjective()),
        ("pca", 3.0, ClassificationObjective()),
        ("pca", 0.1, SquaredErrorObjective()),
        ("pca", 0.0, SquaredErrorObjective()),
        ("random", 0.0, SquaredErrorObjective()),
    ],
    ids=["pca-0.1-ce", "pca-3-ce", "pca-0.1-se", "pca-0-se", "random-0-se"],
)
def test_full_rank_influence_equals_exact_damped_fisher(init, alpha, objective):
    model = tiny_mlp(dims=DIMS)
    train = classification_batch(40, d_in=DIMS[0], seed=11)
    queries = classification_batch(5, d_in=DIMS[0], seed=12)
    exact = exact_influence(
        per_example_weight_grads(model, train, objective),
        per_example_weight_grads(model, queries, objective),
        alpha,
    )
    got = logra_influence(model, train, queries, init, alpha, objective)
    for mode in ("dot", "relatif", "cosine"):
        err = ((got[mode] - exact[mode]).norm() / exact[mode].norm()).item()
        assert err < REL_TOL, f"{mode}: relative error {err:.2e}"


def test_sign_positive_means_helped():
    """A small step on a high-scoring example lowers the query loss more than on a low one."""
    model = tiny_mlp(dims=DIMS)
    train = classification_batch(40, d_in=DIMS[0], seed=11)
    query = classification_batch(1, d_in=DIMS[0], seed=12)
    objective = ClassificationObjective()
    scores = logra_influence(model, train, query, "pca", 0.1, objective)["dot"][0]

    def query_loss_after_step(index):
        step = tiny_mlp(dims=DIMS)
        one = slice(index, index + 1)
        losses = objective.losses(step(train["inputs"][one]), {"labels": train["labels"][one]})
        grads = torch.autograd.grad(losses.sum(), list(step.parameters()))
        with torch.no_grad():
            for p, g in zip(step.parameters(), grads):
                p -= 1e-3 * g
        return objective.losses(step(query["inputs"]), query).item()

    base = objective.losses(model(query["inputs"]), query).item()
    best, worst = scores.argmax().item(), scores.argmin().item()
    assert query_loss_after_step(best) < base < query_loss_after_step(worst)
