"""Leave-one-provider-out: do the providers' credits predict what losing each provider does?

For each provider p, retrain without p's examples (R seeds, averaged): the actual effect on query
q is loss_without_p(q) - loss_with_everyone(q), positive when p helped. A method predicts it by
p's credit, the sum of its scores over p's examples. Reported per method: Spearman across
providers for each query (mean over queries), Spearman over all (query, provider) pairs, and
top-1 agreement: the share of queries whose most-credited provider is the one whose removal
hurt most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from valuation.credit import credit_matrix, group_index
from valuation.stats import mean_and_stderr, spearman, spearman_columns

from .retrain import OutcomeCache


class LOPOConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    retrains: int = Field(default=1, ge=1, description="retrains per provider (seeds 0..R-1), averaged")


def provider_effects(cache: OutcomeCache, providers: Sequence[str], retrains: int) -> tuple[list[str], np.ndarray]:
    """(provider names, queries x providers rise in loss when the provider is left out)."""
    names, index = group_index(providers)
    if len(names) < 2:
        raise ValueError("leave-one-provider-out needs at least two providers")
    seeds = range(retrains)
    everyone = np.arange(len(providers))
    without = [np.flatnonzero(index != p) for p in range(len(names))]
    cache.run([(keep, s) for keep in [everyone, *without] for s in seeds], desc="leave-one-provider-out retrains")
    base = cache.mean_losses(everyone, seeds)
    return names, np.stack([cache.mean_losses(keep, seeds) - base for keep in without], axis=1)


def agreement(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """How well a queries x providers credit matrix predicts the actual effects."""
    per_query = spearman_columns(predicted.T, actual.T)
    mean, stderr = mean_and_stderr(per_query)
    return {
        "spearman": mean,
        "stderr": stderr,
        "spearman_pooled": spearman(predicted, actual),
        "top1": float(np.mean(predicted.argmax(axis=1) == actual.argmax(axis=1))),
        "per_query": per_query.tolist(),
    }


def run_lopo(
    method_scores: Mapping[str, np.ndarray], providers: Sequence[str], cache: OutcomeCache, config: LOPOConfig
) -> dict:
    names, actual = provider_effects(cache, providers, config.retrains)
    results = {name: agreement(credit_matrix(scores, providers)[1], actual) for name, scores in method_scores.items()}
    return {"config": config.model_dump(), "providers": names, "actual": actual.tolist(), "methods": results}
