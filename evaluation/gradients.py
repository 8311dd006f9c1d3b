"""Full per-example gradients and the baselines built on them: exact damped-Fisher influence,
plain gradient dot products and dense random projection (TRAK-style).

Gradients are taken one example at a time with autograd, independently of LoGra's add-ons, so
the baselines do not share LoGra's code path. They cover the weights of the modules LoGra
tracks (the same parameters), one block per module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from valuation.influence import safe_rsqrt
from valuation.layout import GradientLayout
from valuation.objectives import Batch, Objective
from valuation.projection import random_projection

Blocks = dict[str, torch.Tensor]  # module name -> examples x (d_out * d_in), float64


def single_examples(batches: Iterable[Batch]) -> Iterable[Batch]:
    """Each example of each batch as a batch of one (padding kept: it is masked out anyway)."""
    for batch in batches:
        size = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
        for i in range(size):
            yield {k: v[i : i + 1] for k, v in batch.items()}


def per_example_gradients(
    model: nn.Module, modules: Mapping[str, nn.Module], batches: Iterable[Batch], objective: Objective
) -> Blocks:
    """Flattened weight gradient of each tracked module, per example, in example order."""
    weights = [m.weight for m in modules.values()]
    was_trainable = [w.requires_grad for w in weights]
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    try:
        for w in weights:
            w.requires_grad_(True)
        for one in single_examples(batches):
            loss = objective.losses(objective.forward(model, one), one).sum()
            for name, g in zip(modules, torch.autograd.grad(loss, weights, allow_unused=True)):
                w = modules[name].weight
                parts[name].append(torch.zeros_like(w).flatten() if g is None else g.detach().flatten())
    finally:
        for w, trainable in zip(weights, was_trainable):
            w.requires_grad_(trainable)
    return {name: torch.stack(rows).to(torch.float64) for name, rows in parts.items()}


def exact_influence(train: Blocks, queries: Blocks, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries x train g_q^T (F + lambda)^-1 g_n, train self-influence) with the exact damped
    empirical Fisher of each module in its full parameter space, block-diagonal across modules.

    F = G^T G / N has rank at most N, so it is solved in example space (push-through identity):
    (F + lambda)^-1 G^T = N G^T (G G^T + N lambda)^-1. lambda = damping * mean eigenvalue of F
    = damping * trace(F) / D, as LoGra's Fisher does in its projected space.
    """
    if damping <= 0:
        raise ValueError("exact influence needs damping > 0: the Fisher of N < D examples is singular")
    dot, self_influence = 0.0, 0.0
    for name, g in train.items():
        n, d = g.shape
        kernel = g @ g.T
        lam = damping * kernel.trace() / (n * d)
        system = kernel + n * lam * torch.eye(n, dtype=g.dtype)
        solved = torch.linalg.solve(system, torch.cat([g @ queries[name].T, kernel], dim=1))
        n_queries = queries[name].shape[0]
        dot = dot + n * solved[:, :n_queries].T
        self_influence = self_influence + n * solved[:, n_queries:].diagonal()
    return dot, self_influence


def exact_scores(train: Blocks, queries: Blocks, damping: float, mode: str) -> torch.Tensor:
    dot, self_influence = exact_influence(train, queries, damping)
    return dot if mode == "dot" else dot * safe_rsqrt(self_influence)[None, :]


def gradient_dot(train: Blocks, queries: Blocks) -> torch.Tensor:
    """Plain g_q . g_n over all tracked weights: no Fisher at all."""
    return sum(queries[name] @ g.T for name, g in train.items())


class DenseProjection:
    """TRAK-style baseline: each module's flattened full per-example gradient times a dense
    Gaussian (k x D, N(0, 1/k)), with k the module's LoGra size: rows in LoGra's layout, at
    LoGra's storage, without its Kronecker structure. The matrices are built once: they are what
    the baseline costs in memory (k x D per module against LoGra's k_in x d_in + k_out x d_out)."""

    def __init__(self, layout: GradientLayout, weight_sizes: Mapping[str, int], seed: int, *,
                 device: torch.device | None = None, dtype: torch.dtype = torch.float64):
        self.matrices = {
            m.name: random_projection(seed, m.name, "dense", m.size, weight_sizes[m.name]).to(device, dtype)
            for m in layout.modules
        }

    @classmethod
    def for_blocks(cls, blocks: Blocks, layout: GradientLayout, seed: int) -> DenseProjection:
        return cls(layout, {name: g.shape[1] for name, g in blocks.items()}, seed)

    @property
    def nbytes(self) -> int:
        return sum(m.numel() * m.element_size() for m in self.matrices.values())

    def __call__(self, blocks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Rows (examples x K) from per-module gradients (examples x weight elements, any shape)."""
        return torch.cat([blocks[name].reshape(blocks[name].shape[0], -1) @ matrix.T
                          for name, matrix in self.matrices.items()], dim=1)
