"""KFAC covariances A = E[x x^T] and S = E[delta delta^T] of tracked modules, in one pass.

Used to initialise LoGra projections with PCA: the top eigenvectors keep the directions of
largest curvature, which damping would otherwise only soften (the paper's Lemma 1).

An output side wider than DENSE_FACTOR_MAX (an LM head's: the vocabulary) is never built: S of a
50,257-token head would be 20 GB. It is kept as a sketch Y = S Omega with a Gaussian Omega of
k_out + SKETCH_OVERSAMPLE columns (d x m numbers, accumulated as g^T (g Omega)), from which
`projection.pca_projection` takes the top eigenvectors (a single-pass Nystrom approximation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .config import FisherConfig
from .layers import tracked_class
from .objectives import Batch, Objective, fisher_losses, resolve_fisher
from .projection import seeded_generator

DENSE_FACTOR_MAX = 8192  # a wider output factor is sketched: 8,192^2 float64 is 0.5 GB
SKETCH_OVERSAMPLE = 16  # sketch columns beyond k_out: the top-k subspace converges with a few extra


@dataclass
class FactorSketch:
    """Y = S Omega of a factor S too wide to hold; divided by the token count like the dense ones."""

    omega: torch.Tensor  # d x m, Gaussian, seeded by the module's name
    y: torch.Tensor  # d x m

    def __truediv__(self, count: int) -> FactorSketch:
        return FactorSketch(self.omega, self.y / count)


def _sketch(name: str, d: int, k: int) -> FactorSketch:
    m = min(d, k + SKETCH_OVERSAMPLE)
    omega = torch.randn(d, m, generator=seeded_generator(0, name, "sketch"), dtype=torch.float64)
    return FactorSketch(omega, torch.zeros(d, m, dtype=torch.float64))


def kfac_covariances(
    model: nn.Module,
    targets: Mapping[str, nn.Module],
    batches: Iterable[Batch],
    objective: Objective,
    fisher: FisherConfig | None = None,
    ranks_out: Mapping[str, int] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor | FactorSketch]]:
    """(A, S) per module in float64, averaged over unmasked tokens.

    A is d_in x d_in, or its diagonal (a vector) where it is diagonal by construction (an
    embedding's one-hot inputs). S uses the labels of `fisher`'s estimator (sampled from the
    model, or every class; the data's when None or empirical); wider than DENSE_FACTOR_MAX it is
    a FactorSketch good for the top `ranks_out[name]` eigenvectors (default 64).
    """
    kinds = {n: tracked_class(m) for n, m in targets.items()}
    dims = {n: kinds[n].dims(m) for n, m in targets.items()}
    moments: dict[str, torch.Tensor] = {}  # A sums: matrix or diagonal, whichever the kind makes
    out_sums: dict[str, torch.Tensor | FactorSketch] = {
        n: _sketch(n, d_out, (ranks_out or {}).get(n, 64)) if d_out > DENSE_FACTOR_MAX
        else torch.zeros(d_out, d_out, dtype=torch.float64)
        for n, (_, d_out) in dims.items()
    }
    tokens = 0
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def unmasked(t: torch.Tensor) -> torch.Tensor:
        mask = state["mask"]
        if mask is not None and t.dim() >= 2 and t.shape[:2] == mask.shape:
            t = t[mask.bool()]
        elif mask is not None and t.dim() == 2 and t.shape[0] == mask.numel():
            t = t[mask.reshape(-1).bool()]  # batch and tokens flattened before the module (OPT's MLP)
        return t.detach().cpu()

    def add_output_grad(name: str, grad: torch.Tensor) -> None:
        g = unmasked(kinds[name].from_output(grad))
        g = g.reshape(-1, g.shape[-1]).to(torch.float64)
        total = out_sums[name]
        if isinstance(total, FactorSketch):
            total.y += g.T @ (g @ total.omega)
        else:
            total += g.T @ g

    def on_forward(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        rows = unmasked(kinds[name].kfac_inputs(module, inputs[0]))
        moment = kinds[name].input_moment(module, rows)
        moments[name] = moments[name] + moment if name in moments else moment
        if output.requires_grad:
            output.register_hook(partial(add_output_grad, name))
    weights = [m.get_parameter("weight") for m in targets.values()]
    was_trainable = [w.requires_grad for w in weights]
    handles = [m.register_forward_hook(partial(on_forward, n)) for n, m in targets.items()]
    try:
        for w in weights:
            w.requires_grad_(True)
        for batch in batches:
            mask = objective.attention_mask(batch)
            state["mask"] = mask
            outputs = objective.forward(model, batch)
            if fisher is None or resolve_fisher(fisher, objective).estimator == "empirical":
                torch.autograd.grad(objective.losses(outputs, batch).sum(), weights, allow_unused=True)
            else:
                draws = fisher_losses(objective, outputs, batch, fisher, batch.get("example_ids"))
                for i, draw in enumerate(draws):  # each draw's output gradients add to S
                    torch.autograd.grad(draw.sum(), weights, retain_graph=i < len(draws) - 1, allow_unused=True)
            tokens += int(mask.sum()) if mask is not None else outputs.shape[0]
    finally:
        for h in handles:
            h.remove()
        for w, trainable in zip(weights, was_trainable):
            w.requires_grad_(trainable)
    if tokens == 0:
        raise ValueError("no tokens seen: PCA initialisation needs at least one non-empty batch")
    # A module the data never reached has a zero factor (kept as a zero diagonal).
    zero = {n: torch.zeros(d_in, dtype=torch.float64) for n, (d_in, _) in dims.items()}
    return {n: (moments.get(n, zero[n]) / tokens, out_sums[n] / tokens) for n in targets}
