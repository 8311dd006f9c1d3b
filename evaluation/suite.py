"""Which methods a task's evaluation compares.

`headline_methods` holds one row per question the evaluation answers (init, estimator, ensemble,
mode, dense projection, exact, no Fisher), all at the task's base rank and alpha 0.1;
`grid_methods` sweeps init x rank x alpha x mode for choosing the defaults. LDS and
leave-one-provider-out reuse the same retrains for every method, so a large grid costs only
scoring; brittleness retrains per method and query, so it runs on `brittleness_methods`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .brittleness import BrittlenessConfig
from .lds import LDSConfig
from .lopo import LOPOConfig
from .methods import Method
from .runner import EvalConfig

ALPHAS = (0.001, 0.01, 0.1, 1.0, 10.0)
ENSEMBLE_SEEDS = (0, 1, 2, 3)  # four seeds at half the rank: the same storage as one seed


@dataclass(frozen=True)
class SuitePlan:
    base_rank: int  # the rank the headline comparisons use
    ranks: tuple[int, ...]  # the rank sweep of the grid
    checks: EvalConfig  # default sizes: a few minutes on two CPU cores


PLANS = {
    # MLP 10-16-4: rank 16 is full rank (16x10 and 4x16 blocks), rank 4 keeps 32 of 224 weights.
    # A retrain takes ~0.15 s, so the checks can afford two seeds everywhere.
    "classification": SuitePlan(
        base_rank=4, ranks=(2, 4, 8, 16),
        checks=EvalConfig(lds=LDSConfig(subsets=48, retrains=2), lopo=LOPOConfig(retrains=2),
                          brittleness=BrittlenessConfig(top_k=10, queries=8, retrains=2)),
    ),
    # GPT-2 n_embd 32: rank 16 is the production default (2,048 of 24,576 tracked weights).
    # A retrain takes ~4.5 s: 16 subsets, one seed, three brittleness queries (~45 retrains).
    "lm": SuitePlan(
        base_rank=16, ranks=(4, 8, 16, 32),
        checks=EvalConfig(lds=LDSConfig(subsets=16, retrains=1), lopo=LOPOConfig(retrains=1),
                          brittleness=BrittlenessConfig(top_k=10, queries=3, retrains=1)),
    ),
}


def default_method(plan: SuitePlan) -> Method:
    """The production default (random init, empirical Fisher, alpha 0.1, relatif) at the task's
    base rank."""
    return Method(rank=plan.base_rank)


def recommended_method(plan: SuitePlan) -> Method:
    """What docs/evaluation.md recommends from this evidence: sampled-label Fisher, dot."""
    return default_method(plan).model_copy(update={"fisher": "true", "mode": "dot"})


def headline_methods(plan: SuitePlan) -> list[Method]:
    base = default_method(plan)
    return [
        Method(gradients="full", mode="relatif"),
        Method(gradients="full", mode="dot"),
        Method(gradients="full", fisher="none", mode="dot"),
        base,
        base.model_copy(update={"mode": "dot"}),
        base.model_copy(update={"init": "pca"}),
        base.model_copy(update={"init": "pca", "mode": "dot"}),
        base.model_copy(update={"fisher": "true"}),
        recommended_method(plan),
        base.model_copy(update={"rank": max(1, plan.base_rank // 2), "seeds": ENSEMBLE_SEEDS}),
        base.model_copy(update={"gradients": "dense"}),
        base.model_copy(update={"gradients": "dense", "mode": "dot"}),
    ]


def grid_methods(plan: SuitePlan) -> list[Method]:
    """Every alpha and mode for: each init x rank with the empirical Fisher, each rank with the
    sampled-label Fisher; at the base rank, PCA with the sampled-label Fisher, the seed ensemble
    and the dense projection; and exact influence."""
    base = default_method(plan)
    variants = [
        base.model_copy(update={"init": init, "rank": rank, "fisher": fisher})
        for init, fisher in (("random", "empirical"), ("pca", "empirical"), ("random", "true"))
        for rank in plan.ranks
    ]
    variants += [
        base.model_copy(update={"init": "pca", "fisher": "true"}),
        base.model_copy(update={"rank": max(1, plan.base_rank // 2), "seeds": ENSEMBLE_SEEDS}),
        base.model_copy(update={"gradients": "dense"}),
        Method(gradients="full"),
    ]
    # Modes innermost: the two modes of one alpha share a Fisher eigendecomposition (see Scorer).
    return [v.model_copy(update={"mode": mode, "damping": alpha})
            for v in variants for alpha in ALPHAS for mode in ("relatif", "dot")]


def brittleness_methods(plan: SuitePlan) -> list[Method]:
    base = default_method(plan)
    return [
        base,
        base.model_copy(update={"init": "pca"}),
        base.model_copy(update={"mode": "dot"}),
        base.model_copy(update={"gradients": "dense"}),
        base.model_copy(update={"fisher": "true"}),
        recommended_method(plan),
        Method(gradients="full", mode="relatif"),
        Method(gradients="full", fisher="none", mode="dot"),
    ]


def all_methods(plan: SuitePlan) -> list[Method]:
    """Headline, then grid, each method once."""
    seen: dict[str, Method] = {}
    for method in headline_methods(plan) + grid_methods(plan):
        seen.setdefault(method.name, method)
    return list(seen.values())
