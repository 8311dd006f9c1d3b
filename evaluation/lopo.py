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
    bootstrap: int = Field(default=1000, ge=10, description="resamples of the queries for the confidence intervals")


def provider_effects(cache: OutcomeCache, providers: Sequence[str], retrains: int) -> tuple[list[str], np.ndarray]:
    """(provider names, seeds x queries x providers rise in loss when the provider is left out,
    each seed's retrain without p against the same seed's retrain with everyone)."""
    names, index = group_index(providers)
    if len(names) < 2:
        raise ValueError("leave-one-provider-out needs at least two providers")
    everyone = np.arange(len(providers))
    without = [np.flatnonzero(index != p) for p in range(len(names))]
    cache.run([(keep, s) for keep in [everyone, *without] for s in range(retrains)],
              desc="leave-one-provider-out retrains")
    effects = [np.stack([cache.losses(keep, s) - cache.losses(everyone, s) for keep in without], axis=1)
               for s in range(retrains)]
    return names, np.stack(effects)


def bootstrap_interval(per_query: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean over queries, queries drawn with replacement."""
    finite = per_query[np.isfinite(per_query)]
    if finite.size < 2:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, finite.size, size=(resamples, finite.size))
    low, high = np.percentile(finite[draws].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def agreement(predicted: np.ndarray, actual: np.ndarray, resamples: int = 1000) -> dict:
    """How well a queries x providers credit matrix predicts the actual effects."""
    per_query = spearman_columns(predicted.T, actual.T)
    mean, stderr = mean_and_stderr(per_query)
    low, high = bootstrap_interval(per_query, resamples)
    return {
        "spearman": mean,
        "stderr": stderr,
        "ci_low": low,
        "ci_high": high,
        "spearman_pooled": spearman(predicted, actual),
        "top1": float(np.mean(predicted.argmax(axis=1) == actual.argmax(axis=1))),
        "per_query": per_query.tolist(),
    }


def noise_ceiling(effects: np.ndarray, resamples: int = 1000) -> dict | None:
    """What predicting one retrain's effects perfectly scores against the others: each seed's
    effects as the "prediction" of the mean of the other seeds', averaged over seeds (None with
    one seed). A method scored against the mean of all seeds can exceed it only by luck."""
    if effects.shape[0] < 2:
        return None
    held_out = [(effects[s], np.delete(effects, s, axis=0).mean(axis=0)) for s in range(effects.shape[0])]
    per_query = np.nanmean([spearman_columns(one.T, rest.T) for one, rest in held_out], axis=0)
    mean, stderr = mean_and_stderr(per_query)
    low, high = bootstrap_interval(per_query, resamples)
    return {
        "spearman": mean, "stderr": stderr, "ci_low": low, "ci_high": high,
        "spearman_pooled": float(np.mean([spearman(one, rest) for one, rest in held_out])),
        "top1": float(np.mean([one.argmax(axis=1) == rest.argmax(axis=1) for one, rest in held_out])),
        "per_query": per_query.tolist(),
    }


def run_lopo(
    method_scores: Mapping[str, np.ndarray], providers: Sequence[str], cache: OutcomeCache, config: LOPOConfig
) -> dict:
    names, effects = provider_effects(cache, providers, config.retrains)
    actual = effects.mean(axis=0)
    results = {name: agreement(credit_matrix(scores, providers)[1], actual, config.bootstrap)
               for name, scores in method_scores.items()}
    return {"config": config.model_dump(), "providers": names, "actual": actual.tolist(),
            "per_seed": effects.tolist(), "noise_ceiling": noise_ceiling(effects, config.bootstrap), "methods": results}
