"""Provider credit: influence summed over each provider's examples.

Credit is linear in the rows, so credit(q, p) = sum_{n in p} I(q, n) = q~ . (sum_{n in p} g~_n):
a provider's credit needs only its sum vector, never a scan of its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def group_index(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted distinct labels and, per item, the index of its label."""
    names, index = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    return names.tolist(), index


def credit_matrix(scores: np.ndarray, providers: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(provider names, queries x providers credit) from a queries x examples score matrix."""
    names, index = group_index(providers)
    credit = np.zeros((scores.shape[0], len(names)), dtype=np.float64)
    np.add.at(credit.T, index, np.asarray(scores, dtype=np.float64).T)
    return names, credit


@dataclass(frozen=True)
class ProviderSummary:
    provider: str
    share: float  # its share of the help, each query weighing the same (see query_shares)
    share_low: float  # bootstrap band over queries (5th percentile)
    share_high: float  # (95th percentile)
    net: float  # mean over queries of its credit over all providers' absolute credit there, in [-1, 1]
    queries_helped: int  # queries where its credit is positive
    queries_hurt: int  # ... negative
    total_credit: float  # raw: sum over queries of its credit (scale differs from query to query)
    positive_credit: float  # raw: sum over queries of max(credit, 0)
    examples: int


def query_shares(credit: np.ndarray) -> np.ndarray:
    """Per provider, its fraction of each query's positive credit, averaged over the queries that
    have any: every query weighs the same, whatever the scale of its gradient (a long query's
    credit is larger in every mode but cosine). Sums to 1 over providers (0 when no query has help)."""
    positive = np.clip(credit, 0.0, None)
    per_query = positive.sum(axis=1)
    helped = per_query > 0
    if not helped.any():
        return np.zeros(credit.shape[1])
    return (positive[helped] / per_query[helped, None]).mean(axis=0)


def net_shares(credit: np.ndarray) -> np.ndarray:
    """Per provider, its signed credit over all providers' absolute credit on each query, averaged
    over queries: +1 would be all of every query's credit, all helpful; below 0, on balance it
    raised the queries' losses. Weighted per query as query_shares is."""
    scale = np.abs(credit).sum(axis=1)
    some = scale > 0
    if not some.any():
        return np.zeros(credit.shape[1])
    return (credit[some] / scale[some, None]).mean(axis=0)


def summarise(
    credit: np.ndarray,
    names: Sequence[str],
    examples_per_provider: Sequence[int],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> list[ProviderSummary]:
    """Per-provider figures, with a bootstrap band of the share obtained by resampling queries
    (no gradient work: it sees which queries were asked, not the projection's noise)."""
    rng = np.random.default_rng(seed)
    n_queries = credit.shape[0]
    draws = rng.integers(0, n_queries, size=(bootstrap, n_queries))
    boot = np.stack([query_shares(credit[d]) for d in draws]) if n_queries else np.zeros((1, len(names)))
    low, high = np.percentile(boot, [5, 95], axis=0)
    share, net = query_shares(credit), net_shares(credit)
    return [
        ProviderSummary(
            provider=name,
            share=float(share[j]),
            share_low=float(low[j]),
            share_high=float(high[j]),
            net=float(net[j]),
            queries_helped=int((credit[:, j] > 0).sum()),
            queries_hurt=int((credit[:, j] < 0).sum()),
            total_credit=float(credit[:, j].sum()),
            positive_credit=float(np.clip(credit[:, j], 0, None).sum()),
            examples=int(examples_per_provider[j]),
        )
        for j, name in enumerate(names)
    ]
