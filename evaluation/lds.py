"""Linear datamodeling score (LDS, Park et al. 2023, "TRAK").

Draw M random subsets holding `fraction` of the training set, retrain on each (R seeds,
averaged), and record each query's loss. A method's prediction for a subset is the sum of its
scores over the subset's examples. Scores are positive where an example lowers the query's
loss, so the prediction should rank subsets like the *negated* loss: LDS for a query is
Spearman(sum of scores, -loss) across the M subsets; the reported LDS is its mean over queries.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from valuation.stats import mean_and_stderr, spearman_columns

from .retrain import OutcomeCache


class LDSConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    subsets: int = Field(default=32, ge=3, description="M: random training subsets")
    retrains: int = Field(default=1, ge=1, description="R: retrains per subset (seeds 0..R-1), averaged")
    fraction: float = Field(default=0.5, gt=0, lt=1, description="share of the training set in each subset")
    seed: int = Field(default=0, description="seed of the subset draws")


def lds_subsets(n_train: int, config: LDSConfig) -> np.ndarray:
    """M x N boolean membership of the random subsets (the same for the same config)."""
    rng = np.random.default_rng(config.seed)
    size = max(1, round(config.fraction * n_train))
    masks = np.zeros((config.subsets, n_train), dtype=bool)
    for m in range(config.subsets):
        masks[m, rng.choice(n_train, size=size, replace=False)] = True
    return masks


def lds_outcomes(cache: OutcomeCache, masks: np.ndarray, retrains: int) -> np.ndarray:
    """M x Q query losses, each averaged over the subset's retrains."""
    seeds = range(retrains)
    cache.run([(np.flatnonzero(mask), s) for mask in masks for s in seeds], desc="LDS retrains")
    return np.stack([cache.mean_losses(np.flatnonzero(mask), seeds) for mask in masks])


def lds_per_query(scores: np.ndarray, masks: np.ndarray, outcomes: np.ndarray) -> np.ndarray:
    """Spearman per query between each subset's summed scores and its negated loss."""
    predicted = masks.astype(np.float64) @ np.asarray(scores, dtype=np.float64).T  # M x Q
    return spearman_columns(predicted, -outcomes)


def run_lds(method_scores: Mapping[str, np.ndarray], cache: OutcomeCache, n_train: int, config: LDSConfig) -> dict:
    masks = lds_subsets(n_train, config)
    outcomes = lds_outcomes(cache, masks, config.retrains)
    results = {}
    for name, scores in method_scores.items():
        per_query = lds_per_query(scores, masks, outcomes)
        mean, stderr = mean_and_stderr(per_query)
        results[name] = {"lds": mean, "stderr": stderr, "per_query": per_query.tolist()}
    return {"config": config.model_dump(), "methods": results}
