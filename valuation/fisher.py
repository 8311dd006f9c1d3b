"""Projected Fisher per module: mergeable partial sums, eigendecomposition, damping.

F_m = (1/N) sum_n g_n g_n^T over the module's block of each row (block-diagonal across modules,
as in the paper). Partial sums add up shard by shard. A snapshot keeps F_m = Q diag(L) Q^T and
the damping lambda_m = alpha * mean(L), and applies (F_m + lambda_m)^-1 through the eigenbasis;
no inverse is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import GradientLayout


@dataclass
class FisherPartial:
    """Sum over rows of g g^T per module (float64) and how many rows went in."""

    layout: GradientLayout
    sums: dict[str, torch.Tensor]
    count: int = 0

    @classmethod
    def zeros(cls, layout: GradientLayout) -> FisherPartial:
        sums = {m.name: torch.zeros(m.size, m.size, dtype=torch.float64) for m in layout.modules}
        return cls(layout, sums, 0)

    def update(self, rows: torch.Tensor) -> FisherPartial:
        """Add examples x K rows, or examples x draws x K (an example's draws are summed, and it
        counts once: the weights of its draws are already in the rows)."""
        rows = rows.detach().to(device="cpu", dtype=torch.float64)
        examples = rows.shape[0]
        rows = rows.reshape(-1, rows.shape[-1])
        for spec, cols in self.layout.slices():
            block = rows[:, cols]
            self.sums[spec.name] += block.T @ block
        self.count += examples
        return self

    def __add__(self, other: FisherPartial) -> FisherPartial:
        if other.layout != self.layout:
            raise ValueError("cannot merge Fisher partial sums of different gradient layouts")
        sums = {n: self.sums[n] + other.sums[n] for n in self.sums}
        return FisherPartial(self.layout, sums, self.count + other.count)

    def snapshot(self, damping: float) -> FisherSnapshot:
        if self.count == 0:
            raise ValueError("cannot build a Fisher from zero rows")
        eigvals, eigvecs, lambdas = {}, {}, {}
        for name, total in self.sums.items():
            fisher = total / self.count
            vals, vecs = torch.linalg.eigh((fisher + fisher.T) / 2)
            vals = vals.clamp_min(0.0)  # round-off makes tiny negative eigenvalues
            eigvals[name], eigvecs[name] = vals, vecs
            lambdas[name] = damping * vals.mean().item()
        return FisherSnapshot(self.layout, eigvals, eigvecs, lambdas, damping, self.count)


@dataclass
class FisherSnapshot:
    layout: GradientLayout
    eigvals: dict[str, torch.Tensor]
    eigvecs: dict[str, torch.Tensor]
    lambdas: dict[str, float]
    alpha: float
    count: int

    def _inverse_eigvals(self, name: str) -> torch.Tensor:
        shifted = self.eigvals[name] + self.lambdas[name]
        # A module whose gradients were all zero has nothing to precondition: map it to zero.
        return torch.where(shifted > 0, 1.0 / shifted, torch.zeros_like(shifted))

    def precondition(self, rows: torch.Tensor) -> torch.Tensor:
        """(F + lambda)^-1 applied to each row, module by module, in float64."""
        rows = rows.detach().to(device="cpu", dtype=torch.float64)
        out = torch.empty_like(rows)
        for spec, cols in self.layout.slices():
            q = self.eigvecs[spec.name]
            out[:, cols] = ((rows[:, cols] @ q) * self._inverse_eigvals(spec.name)) @ q.T
        return out

    def self_influence(self, rows: torch.Tensor) -> torch.Tensor:
        """g^T (F + lambda)^-1 g per row, summed over modules."""
        rows = rows.detach().to(device="cpu", dtype=torch.float64)
        total = torch.zeros(rows.shape[0], dtype=torch.float64)
        for spec, cols in self.layout.slices():
            coords = rows[:, cols] @ self.eigvecs[spec.name]
            total += (coords.square() * self._inverse_eigvals(spec.name)).sum(dim=1)
        return total
