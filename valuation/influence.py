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
from typing import Protocol

import torch

from .config import DEFAULT_MODE, InfluenceMode
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
    mode: InfluenceMode = DEFAULT_MODE,
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


class HasRows(Protocol):
    rows: torch.Tensor


Rows = torch.Tensor | HasRows  # a tensor, or anything carrying .rows (and .ids): LoggedBatch, RecordedRows


def _rows_and_ids(rows: Rows) -> tuple[torch.Tensor, list[str] | None]:
    if isinstance(rows, torch.Tensor):
        return rows, None
    return rows.rows, getattr(rows, "ids", None)


@dataclass
class TopK:
    """The k most helpful training examples per query, best first."""

    scores: torch.Tensor  # queries x k, float64
    indices: torch.Tensor  # queries x k, row positions in the training rows
    ids: list[list[str]] | None  # queries x k training example ids, when the rows carried ids
    query_ids: list[str] | None


class Influence:
    """Influence of training rows on query rows under one Fisher snapshot:

        influence = Influence(fisher)
        scores = influence.scores(queries, train, mode="relatif")   # queries x train, float64
        best = influence.top_k(queries, train, k=5)                  # .ids: the examples, best first

    `queries` and `train` are row tensors or anything carrying `.rows` (and `.ids`), such as a
    LoggedBatch. The self-influence that relatif and cosine need is computed here.
    """

    def __init__(self, fisher: FisherSnapshot):
        self.fisher = fisher

    def self_influence(self, rows: Rows) -> torch.Tensor:
        """g^T (F + lambda)^-1 g per row, float64."""
        return self.fisher.self_influence(_rows_and_ids(rows)[0])

    def scores(self, queries: Rows, train: Rows, mode: InfluenceMode = DEFAULT_MODE) -> torch.Tensor:
        """queries x train scores; positive means the training example helped."""
        query_rows, _ = _rows_and_ids(queries)
        train_rows, _ = _rows_and_ids(train)
        width = self.fisher.layout.total
        for side, rows in (("query", query_rows), ("train", train_rows)):
            if rows.dim() != 2 or rows.shape[1] != width:
                raise ValueError(f"{side} rows have shape {tuple(rows.shape)}; this Fisher's rows are N x {width}")
        pre = PreconditionedQueries.build(query_rows, self.fisher)
        train_self = None if mode == "dot" else self.fisher.self_influence(train_rows)
        return influence_scores(pre, train_rows, mode, train_self)

    def top_k(self, queries: Rows, train: Rows, k: int = 10, mode: InfluenceMode = DEFAULT_MODE) -> TopK:
        """The k highest-scoring training examples per query, with their ids when `train` has them."""
        _, query_ids = _rows_and_ids(queries)
        _, train_ids = _rows_and_ids(train)
        values, indices = top_k(self.scores(queries, train, mode), k)
        ids = [[train_ids[i] for i in row] for row in indices.tolist()] if train_ids is not None else None
        return TopK(values, indices, ids, query_ids)
