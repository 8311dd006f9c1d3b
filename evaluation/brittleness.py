"""Brittleness: remove the k examples a method names as most helpful to a query, retrain, and
see how much the query's loss rises, against removing k examples at random.

A method that finds the examples the query really depends on makes the loss rise much more than
a random removal does. Each (method, query) pair costs R retrains, so only a few evenly spaced
queries are tested.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from valuation.stats import mean_and_stderr

from .retrain import OutcomeCache

RANDOM = "random"


class BrittlenessConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    top_k: int = Field(default=10, ge=1, description="examples removed per query")
    queries: int = Field(default=4, ge=1, description="queries tested, evenly spaced over the query set")
    retrains: int = Field(default=1, ge=1, description="retrains per removal (seeds 0..R-1), averaged")
    seed: int = Field(default=0, description="seed of the random removals")


def tested_queries(n_queries: int, count: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_queries - 1, num=min(count, n_queries)).round().astype(int))


def removals(
    method_scores: Mapping[str, np.ndarray], queries: np.ndarray, n_train: int, config: BrittlenessConfig
) -> dict[str, dict[int, np.ndarray]]:
    """Per method (and the random control), per query: the training indices to remove."""
    k = min(config.top_k, n_train - 1)
    chosen = {
        name: {int(q): np.argsort(-np.asarray(scores[q]), kind="stable")[:k] for q in queries}
        for name, scores in method_scores.items()
    }
    rng = np.random.default_rng(config.seed)
    chosen[RANDOM] = {int(q): rng.choice(n_train, size=k, replace=False) for q in queries}
    return chosen


def run_brittleness(
    method_scores: Mapping[str, np.ndarray], cache: OutcomeCache, n_train: int, n_queries: int,
    config: BrittlenessConfig,
) -> dict:
    seeds = range(config.retrains)
    everyone = np.arange(n_train)
    queries = tested_queries(n_queries, config.queries)
    chosen = removals(method_scores, queries, n_train, config)
    kept = {name: {q: np.setdiff1d(everyone, removed) for q, removed in per_query.items()}
            for name, per_query in chosen.items()}
    jobs = [(everyone, s) for s in seeds] + [
        (keep, s) for per_query in kept.values() for keep in per_query.values() for s in seeds
    ]
    cache.run(jobs, desc="brittleness retrains")
    base = cache.mean_losses(everyone, seeds)
    rises = {name: np.array([cache.mean_losses(keep, seeds)[q] - base[q] for q, keep in per_query.items()])
             for name, per_query in kept.items()}
    results = {}
    for name, rise in rises.items():
        mean, stderr = mean_and_stderr(rise)
        results[name] = {
            "loss_rise": mean,
            "stderr": stderr,
            "per_query": rise.tolist(),
            "beats_random": float(np.mean(rise > rises[RANDOM])),
        }
    return {"config": config.model_dump(), "queries": queries.tolist(), "base_loss": base[queries].tolist(),
            "methods": results}
