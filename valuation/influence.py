"""Influence of training rows on query rows, from projected gradients.

Sign convention: a positive score means the training example helped, i.e. up-weighting it
lowers the query's loss (score = g_query^T (F + lambda)^-1 g_train).
Modes:
- dot:     g_q^T H^-1 g_n
- relatif: dot / sqrt(g_n^T H^-1 g_n), which damps outliers with large gradients (l-RelatIF)
- cosine:  dot / (sqrt(g_q^T H^-1 g_q) sqrt(g_n^T H^-1 g_n)), the cosine in the H^-1 metric
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import InfluenceMode
from .fisher import FisherSnapshot


def safe_rsqrt(values: torch.Tensor) -> torch.Tensor:
    # A row with zero self-influence has zero dot products too; keep its score at zero.
    roots = values.clamp_min(0.0).sqrt()
    return torch.where(roots > 0, 1.0 / roots, torch.zeros_like(roots))


@dataclass
class PreconditionedQueries:
    """Queries ready to score: H^-1 g_q and their self-influence g_q^T H^-1 g_q."""

    rows: torch.Tensor
    self_influence: torch.Tensor

    @classmethod
    def build(cls, query_rows: torch.Tensor, fisher: FisherSnapshot) -> PreconditionedQueries:
        pre = fisher.precondition(query_rows)
        raw = query_rows.detach().to(device="cpu", dtype=torch.float64)
        return cls(pre, (raw * pre).sum(dim=1))


def influence_scores(
    queries: PreconditionedQueries,
    train_rows: torch.Tensor,
    mode: InfluenceMode = "dot",
    train_self_influence: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores (n_queries x n_train) in float64."""
    train = train_rows.detach().to(device="cpu", dtype=torch.float64)
    scores = queries.rows @ train.T
    if mode == "dot":
        return scores
    if train_self_influence is None:
        raise ValueError(f"mode {mode!r} needs the training rows' self-influence")
    scores = scores * safe_rsqrt(train_self_influence.to(torch.float64))[None, :]
    if mode == "relatif":
        return scores
    if mode == "cosine":
        return scores * safe_rsqrt(queries.self_influence)[:, None]
    raise ValueError(f"unknown influence mode {mode!r}; use dot, cosine or relatif")


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest scores per query (most helpful first) and their column indices."""
    k = min(k, scores.shape[1])
    return torch.topk(scores, k, dim=1)
