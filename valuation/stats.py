"""Rank statistics for the counterfactual checks, vectorised over columns.

Spearman's rho is Pearson's correlation of ranks, ties given their average rank (as
scipy.stats.spearmanr does). A constant column has no ranking, so its rho is NaN, not 0:
averaging it in as 0 would hide a broken retrain.
"""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1..n) down each column; tied values share the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return average_ranks(values[:, None])[:, 0]
    n, cols = values.shape
    order = np.argsort(values, axis=0, kind="stable")
    ranks = np.empty_like(values)
    for j in range(cols):
        sorted_col = values[order[:, j], j]
        # Start of each run of equal values, and the mean rank over the run.
        starts = np.flatnonzero(np.r_[True, sorted_col[1:] != sorted_col[:-1]])
        stops = np.r_[starts[1:], n]
        mean_rank = (starts + stops + 1) / 2.0
        ranks[order[:, j], j] = np.repeat(mean_rank, stops - starts)
    return ranks


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between a[:, j] and b[:, j] for every column j (NaN where either is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two matrices of one shape, got {a.shape} and {b.shape}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    denominator = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=0) / denominator, np.nan)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two vectors."""
    return float(spearman_columns(np.ravel(a)[:, None], np.ravel(b)[:, None])[0])


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error over the finite values (NaN, NaN if there are none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    stderr = finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else float("nan")
    return float(finite.mean()), float(stderr)
