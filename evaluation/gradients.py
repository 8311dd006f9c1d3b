"""Full per-example gradients and the baselines built on them: exact damped-Fisher influence,
plain gradient dot products and dense random projection (TRAK-style).

Gradients are taken one example at a time with autograd, independently of LoGra's add-ons, so
the baselines do not share LoGra's code path. They cover the weights of the modules LoGra
tracks (the same parameters), one block per module.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import cast

import torch
from torch import nn

from valuation.config import FisherConfig
from valuation.influence import safe_rsqrt
from valuation.layout import GradientLayout
from valuation.objectives import Batch, Objective, fisher_losses
from valuation.projection import random_projection

Blocks = dict[str, torch.Tensor]  # module name -> examples x (d_out * d_in), float64


def single_examples(batches: Iterable[Batch]) -> Iterable[Batch]:
    """Each example of each batch as a batch of one (padding kept: it is masked out anyway)."""
    for batch in batches:
        size = len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
        for i in range(size):
            yield {k: v[i : i + 1] for k, v in batch.items()}


def per_example_gradients(
    model: nn.Module, modules: Mapping[str, nn.Module], batches: Iterable[Batch], objective: Objective,
    fisher: FisherConfig | None = None,
) -> Blocks:
    """Flattened weight gradient of each tracked module, per example, in example order: of the
    data-label loss (examples x weights), or with a drawing `fisher` estimator of each of its
    draws (examples x draws x weights, the draws' weights folded in as LoGra does)."""
    weights = [cast(torch.Tensor, m.weight) for m in modules.values()]
    was_trainable = [w.requires_grad for w in weights]
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    drawing = fisher if fisher is not None and fisher.estimator != "empirical" else None
    drawn = drawing is not None
    try:
        for w in weights:
            w.requires_grad_(True)
        for one in single_examples(batches):
            outputs = objective.forward(model, one)
            losses = (fisher_losses(objective, outputs, one, drawing, one.get("example_ids")) if drawing is not None
                      else [objective.losses(outputs, one)])
            draws: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
            for i, loss in enumerate(losses):
                grads = torch.autograd.grad(loss.sum(), weights, allow_unused=True, retain_graph=i < len(losses) - 1)
                for name, w, g in zip(modules, weights, grads):
                    draws[name].append(torch.zeros_like(w).flatten() if g is None else g.detach().flatten())
            for name in modules:
                parts[name].append(torch.stack(draws[name]) if drawn else draws[name][0])
    finally:
        for w, trainable in zip(weights, was_trainable):
            w.requires_grad_(trainable)
    return {name: torch.stack(rows).to(torch.float64) for name, rows in parts.items()}


def exact_influence(
    train: Blocks, queries: Blocks, damping: float, fisher: Blocks | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries x train g_q^T (F + lambda)^-1 g_n, train self-influence) with the exact damped
    Fisher of each module in its full parameter space, block-diagonal across modules.

    F = H^T H / N (H: the train gradients for the empirical Fisher, else the `fisher` draws of
    every example, N x draws x D) has rank at most the number of rows of H, so it is solved in
    that space (push-through identity); for H = G: (F + lambda)^-1 G^T = N G^T (G G^T + N lambda)^-1,
    else (F + lambda)^-1 v = (v - H^T (H H^T + N lambda)^-1 H v) / lambda. lambda = damping *
    mean eigenvalue of F = damping * trace(F) / D, as LoGra's Fisher does in its projected space.
    """
    if damping <= 0:
        raise ValueError("exact influence needs damping > 0: the Fisher of N < D examples is singular")
    dot, self_influence = torch.zeros(()), torch.zeros(())  # broadcast up to queries x train, train
    for name, g in train.items():
        n, d = g.shape
        q = queries[name]
        if fisher is None:
            kernel = g @ g.T
            lam = damping * kernel.trace() / (n * d)
            system = kernel + n * lam * torch.eye(n, dtype=g.dtype)
            solved = torch.linalg.solve(system, torch.cat([g @ q.T, kernel], dim=1))
            dot = dot + n * solved[:, : q.shape[0]].T
            self_influence = self_influence + n * solved[:, q.shape[0]:].diagonal()
            continue
        h = fisher[name].reshape(-1, d)
        lam = damping * h.square().sum() / (n * d)
        system = h @ h.T + n * lam * torch.eye(h.shape[0], dtype=h.dtype)
        hq, hg = h @ q.T, h @ g.T
        solved = torch.linalg.solve(system, torch.cat([hq, hg], dim=1))
        dot = dot + (g @ q.T - hg.T @ solved[:, : q.shape[0]]).T / lam
        self_influence = self_influence + (g.square().sum(dim=1) - (hg * solved[:, q.shape[0]:]).sum(dim=0)) / lam
    return dot, self_influence


def exact_scores(
    train: Blocks, queries: Blocks, damping: float, mode: str, fisher: Blocks | None = None
) -> torch.Tensor:
    dot, self_influence = exact_influence(train, queries, damping, fisher)
    return dot if mode == "dot" else dot * safe_rsqrt(self_influence)[None, :]


def _total(parts: Iterable[torch.Tensor]) -> torch.Tensor:
    return functools.reduce(torch.add, parts)


def plain_scores(train: Blocks, queries: Blocks, mode: str = "dot") -> torch.Tensor:
    """Plain g_q . g_n over all tracked weights, no Fisher; relatif divides by |g_n|, cosine by
    |g_q| too."""
    dot = _total(queries[name] @ g.T for name, g in train.items())
    if mode == "dot":
        return dot
    train_norm = _total(g.square().sum(dim=1) for g in train.values())
    scores = dot * safe_rsqrt(train_norm)[None, :]
    if mode == "cosine":
        scores = scores * safe_rsqrt(_total(q.square().sum(dim=1) for q in queries.values()))[:, None]
    return scores


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
