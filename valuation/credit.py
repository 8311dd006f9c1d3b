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
    total_credit: float  # sum over queries of the provider's credit
    positive_credit: float  # sum over queries of max(credit, 0): what it contributed where it helped
    share: float  # its fraction of all providers' positive credit
    share_low: float  # bootstrap band over queries (5th percentile)
    share_high: float  # (95th percentile)
    examples: int


def positive_shares(credit: np.ndarray) -> np.ndarray:
    positive = np.clip(credit, 0.0, None).sum(axis=0)
    total = positive.sum()
    return positive / total if total > 0 else np.zeros_like(positive)


def summarise(
    credit: np.ndarray,
    names: Sequence[str],
    examples_per_provider: Sequence[int],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> list[ProviderSummary]:
    """Per-provider figures, with a bootstrap band of the share obtained by resampling queries."""
    rng = np.random.default_rng(seed)
    n_queries = credit.shape[0]
    draws = rng.integers(0, n_queries, size=(bootstrap, n_queries))
    boot = np.stack([positive_shares(credit[d]) for d in draws]) if n_queries else np.zeros((1, len(names)))
    low, high = np.percentile(boot, [5, 95], axis=0)
    share = positive_shares(credit)
    return [
        ProviderSummary(
            provider=name,
            total_credit=float(credit[:, j].sum()),
            positive_credit=float(np.clip(credit[:, j], 0, None).sum()),
            share=float(share[j]),
            share_low=float(low[j]),
            share_high=float(high[j]),
            examples=int(examples_per_provider[j]),
        )
        for j, name in enumerate(names)
    ]
