"""KFAC covariances A = E[x x^T] and S = E[delta delta^T] of tracked modules, in one pass.

Used to initialise LoGra projections with PCA: the top eigenvectors keep the directions of
largest curvature, which damping would otherwise only soften (the paper's Lemma 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

import torch
from torch import nn

from .objectives import Batch, Objective, example_generator
from .targets import module_dims


def kfac_covariances(
    model: nn.Module,
    targets: Mapping[str, nn.Module],
    batches: Iterable[Batch],
    objective: Objective,
    sampled_labels_seed: int | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(A, S) per module in float64, averaged over unmasked tokens.

    With `sampled_labels_seed`, S uses labels drawn from the model (true Fisher), else the data's.
    """
    stats = {
        n: [torch.zeros(d, d, dtype=torch.float64) for d in module_dims(m)] for n, m in targets.items()
    }
    tokens = 0
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def flat(t: torch.Tensor) -> torch.Tensor:
        mask = state["mask"]
        if t.dim() == 3 and mask is not None and mask.shape == t.shape[:2]:
            t = t[mask.bool()]
        return t.reshape(-1, t.shape[-1]).detach().to(device="cpu", dtype=torch.float64)

    def add_output_grad(name: str, grad: torch.Tensor) -> None:
        g = flat(grad)
        stats[name][1] += g.T @ g

    def on_forward(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = flat(inputs[0])
        stats[name][0] += x.T @ x
        if output.requires_grad:
            output.register_hook(partial(add_output_grad, name))

    weights = [m.weight for m in targets.values()]
    was_trainable = [w.requires_grad for w in weights]
    handles = [m.register_forward_hook(partial(on_forward, n)) for n, m in targets.items()]
    try:
        for w in weights:
            w.requires_grad_(True)
        for batch in batches:
            mask = objective.attention_mask(batch)
            state["mask"] = mask
            outputs = objective.forward(model, batch)
            if sampled_labels_seed is None:
                losses = objective.losses(outputs, batch)
            else:
                ids = batch.get("example_ids") or [str(i) for i in range(outputs.shape[0])]
                gens = [example_generator(sampled_labels_seed, i, outputs.device) for i in ids]
                losses = objective.sampled_losses(outputs, batch, gens)
            torch.autograd.grad(losses.sum(), weights, allow_unused=True)
            tokens += int(mask.sum()) if mask is not None else outputs.shape[0]
    finally:
        for h in handles:
            h.remove()
        for w, trainable in zip(weights, was_trainable):
            w.requires_grad_(trainable)
    if tokens == 0:
        raise ValueError("no tokens seen: PCA initialisation needs at least one non-empty batch")
    return {n: (a / tokens, s / tokens) for n, (a, s) in stats.items()}
