"""Which methods a task's evaluation compares.

`headline_methods` holds one row per question the evaluation answers (the peers a user would
pick instead, the old and the shipped defaults, dense projection at equal storage, exact
influence), at the task's base rank; `grid_methods` sweeps init x rank x Fisher estimator x
alpha x mode for choosing the defaults. LDS and leave-one-provider-out reuse the same retrains for
every method, so a large grid costs only scoring; brittleness retrains per method and query, so
it runs on `brittleness_methods`.

The defaults are chosen on the real tasks (`austen`, `breast-cancer`: data nobody here wrote);
`lm` and `classification` (the bundled sample, synthetic Gaussians) stay for tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass

from valuation.config import DEFAULT_MODE, FisherConfig, ProjectionConfig

from .brittleness import BrittlenessConfig
from .lds import LDSConfig
from .lopo import LOPOConfig
from .methods import FisherChoice, Gradients, Method
from .runner import EvalConfig

ALPHAS = (0.01, 0.1, 1.0, 10.0)
ENSEMBLE_SEEDS = (0, 1, 2, 3)  # four seeds at half the rank: the same storage as one seed
STABILITY_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class SuitePlan:
    base_rank: int  # the rank the headline comparisons use
    ranks: tuple[int, ...]  # the rank sweep of the grid
    checks: EvalConfig  # default sizes: a few minutes to tens of minutes on two CPU cores
    fishers: tuple[tuple[FisherChoice, int], ...] = (("empirical", 1), ("true", 1))  # (estimator, samples) of the grid
    peers: tuple[Gradients, ...] = ()  # kronfluence and lexical peers, where the task has what they need
    classifier: bool = False  # what the shipped FisherConfig()'s "auto" resolves for: exact, else sampled labels


SHIPPED = ProjectionConfig()
REAL_CHECKS = EvalConfig(checks=("lds", "lopo"))

PLANS = {
    # Jane Austen, six novels as providers; GPT-2 n_embd 64 fine-tuned from a pretrained base. A
    # retrain (fine-tune) takes ~10 s: LOPO with 3 seeds (21 retrains), LDS over 24 half-subsets.
    "austen": SuitePlan(
        base_rank=SHIPPED.rank_in, ranks=(8, 16, 32),
        checks=REAL_CHECKS.model_copy(update={"lds": LDSConfig(subsets=24, retrains=1),
                                              "lopo": LOPOConfig(retrains=3)}),
        fishers=(("empirical", 1), ("true", 1), ("true", 4)),
        peers=("tfidf", "bm25", "ekfac"),
    ),
    # Breast cancer, MLP 30-16-2 at a unique optimum: one retrain per subset measures it (~1 s).
    "breast-cancer": SuitePlan(
        base_rank=SHIPPED.rank_in, ranks=(4, 8, 16, 32),
        checks=REAL_CHECKS.model_copy(update={"lds": LDSConfig(subsets=100, retrains=1),
                                              "lopo": LOPOConfig(retrains=1)}),
        fishers=(("empirical", 1), ("true", 1), ("true", 8), ("exact", 1)),
        peers=("ekfac",),
        classifier=True,
    ),
    # MLP 10-16-4 on synthetic Gaussians (tests): rank 4 keeps 32 of 224 weights.
    "classification": SuitePlan(
        base_rank=4, ranks=(2, 4, 8, 16), classifier=True,
        checks=EvalConfig(lds=LDSConfig(subsets=48, retrains=2), lopo=LOPOConfig(retrains=2),
                          brittleness=BrittlenessConfig(top_k=10, queries=8, retrains=2)),
    ),
    # GPT-2 n_embd 32 on the bundled sample (tests and the demo).
    "lm": SuitePlan(
        base_rank=16, ranks=(4, 8, 16, 32),
        checks=EvalConfig(lds=LDSConfig(subsets=16, retrains=1), lopo=LOPOConfig(retrains=1),
                          brittleness=BrittlenessConfig(top_k=10, queries=3, retrains=1)),
    ),
}


def default_method(plan: SuitePlan) -> Method:
    """The library's defaults before this evidence (random init, empirical Fisher, alpha 0.1,
    relatif) at the task's base rank."""
    return Method(rank=plan.base_rank)


def previous_flow_method(plan: SuitePlan) -> Method:
    """The flows' defaults before this evidence: one sampled label per example, dot."""
    return default_method(plan).model_copy(update={"fisher": "true", "mode": "dot"})


def recommended_method(plan: SuitePlan) -> Method:
    """The shipped defaults (valuation.config), at the task's base rank: FisherConfig()'s "auto" is
    the exact Fisher on a classifier task, sampled labels on a language model."""
    fisher = FisherConfig().resolved(classifier=plan.classifier)
    estimator: FisherChoice = "exact" if fisher.estimator == "exact" else "true"
    samples = fisher.samples if estimator == "true" else 1
    return Method(rank=plan.base_rank, init=SHIPPED.init, fisher=estimator, samples=samples,
                  damping=fisher.damping, mode=DEFAULT_MODE)


def headline_methods(plan: SuitePlan) -> list[Method]:
    base, chosen = default_method(plan), recommended_method(plan)
    full = [Method(gradients="full", fisher="none", mode="dot"), Method(gradients="full", fisher="none", mode="cosine"),
            Method(gradients="full", mode="relatif"), Method(gradients="full", mode="dot")]
    if chosen.fisher == "exact":
        full.append(Method(gradients="full", fisher="exact", mode="dot", damping=chosen.damping))
    peers = [Method(gradients=p) for p in plan.peers]
    variants = [
        base,
        base.model_copy(update={"mode": "dot"}),
        previous_flow_method(plan),
        chosen,
        chosen.model_copy(update={"mode": "relatif"}),
        chosen.model_copy(update={"init": "random" if chosen.init == "pca" else "pca"}),
        chosen.model_copy(update={"gradients": "dense", "init": "random"}),
        base.model_copy(update={"rank": max(1, plan.base_rank // 2), "seeds": ENSEMBLE_SEEDS}),
    ]
    if not plan.classifier:  # a language model: does tracking its (tied) head and embedding move credit?
        variants += [chosen.model_copy(update={"embeddings": e}) for e in ("head", "both")]
    if chosen.fisher == "true" and chosen.samples > 1:  # does half the sampled labels' cost buy as good credit?
        variants.append(chosen.model_copy(update={"samples": chosen.samples // 2}))
    return _unique([*peers, *full, *variants])


def grid_methods(plan: SuitePlan) -> list[Method]:
    """Every alpha and mode for: each init x rank x Fisher estimator of the plan; exact influence
    (empirical Fisher; with the exact one where the plan has it); the dense projection at the
    base rank with each estimator."""
    base = default_method(plan)
    variants = [
        base.model_copy(update={"init": init, "rank": rank, "fisher": fisher, "samples": samples})
        for init in ("random", "pca") for rank in plan.ranks for fisher, samples in plan.fishers
    ]
    variants += [base.model_copy(update={"gradients": "dense", "fisher": f, "samples": n}) for f, n in plan.fishers]
    variants += [Method(gradients="full", fisher=f) for f, _ in plan.fishers if f in ("empirical", "exact")]
    # Modes innermost: the two modes of one alpha share a Fisher eigendecomposition (see Scorer).
    return [v.model_copy(update={"mode": mode, "damping": alpha})
            for v in variants for alpha in ALPHAS for mode in ("relatif", "dot")]


def brittleness_methods(plan: SuitePlan) -> list[Method]:
    base = default_method(plan)
    return _unique([
        base,
        base.model_copy(update={"init": "pca"}),
        base.model_copy(update={"mode": "dot"}),
        base.model_copy(update={"gradients": "dense"}),
        previous_flow_method(plan),
        recommended_method(plan),
        Method(gradients="full", mode="relatif"),
        Method(gradients="full", fisher="none", mode="dot"),
    ])


def _unique(methods: list[Method]) -> list[Method]:
    seen: dict[str, Method] = {}
    for method in methods:
        seen.setdefault(method.name, method)
    return list(seen.values())


def all_methods(plan: SuitePlan) -> list[Method]:
    """Headline, then grid, each method once."""
    return _unique(headline_methods(plan) + grid_methods(plan))
