"""How much provider credit depends on the random projection's seed.

The bootstrap band of a report resamples queries; it cannot see projection noise. This logs the
same corpus and queries under several seeds and measures agreement of the provider credits
(Spearman over the query x provider credit matrix, for every pair of seeds) and the spread of
each provider's share across seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from valuation import FisherConfig, LoGra, PreconditionedQueries, ProjectionConfig, influence_scores
from valuation.config import DEFAULT_MODE, InfluenceMode
from valuation.credit import credit_matrix, positive_shares
from valuation.data import Example, providers_of
from valuation.pipeline import LoggingOptions, log_examples
from valuation.stats import spearman

from .results import Stability


def credit_under_seed(model, tokenizer, examples: Sequence[Example], queries: Sequence[Example], *,
                      projection: ProjectionConfig, fisher: FisherConfig, mode: InfluenceMode,
                      options: LoggingOptions = LoggingOptions()) -> tuple[list[str], np.ndarray]:
    """(provider names, queries x providers credit) with the model's LoGra add-ons built from `projection`."""
    logra = LoGra(model, projection)
    try:
        train = log_examples(logra, tokenizer, examples, options, fisher=fisher)
        query = log_examples(logra, tokenizer, queries, options)
    finally:
        logra.remove()
    snapshot = train.fisher.snapshot(fisher.damping)
    rows = torch.from_numpy(train.rows)
    pre = PreconditionedQueries.build(torch.from_numpy(query.rows), snapshot)
    scores = influence_scores(pre, rows, mode, snapshot.self_influence(rows)).numpy()
    return credit_matrix(scores, providers_of(examples))


def seed_stability(model, tokenizer, examples: Sequence[Example], queries: Sequence[Example], *,
                   projection: ProjectionConfig, seeds: Sequence[int], fisher: FisherConfig | None = None,
                   mode: InfluenceMode = DEFAULT_MODE, options: LoggingOptions = LoggingOptions()) -> Stability:
    if len(seeds) < 2:
        raise ValueError("stability needs at least two seeds")
    fisher = fisher or FisherConfig()
    credits = {}
    for seed in seeds:
        names, credits[seed] = credit_under_seed(
            model, tokenizer, examples, queries,
            projection=projection.model_copy(update={"seed": seed}), fisher=fisher, mode=mode, options=options,
        )
    pairs = [spearman(credits[a], credits[b])
             for a, b in itertools.combinations(seeds, 2)]
    shares = np.stack([positive_shares(credits[s]) for s in seeds])
    spread = shares.max(axis=0) - shares.min(axis=0)
    widest = int(spread.argmax())
    note = (f"Across seeds, shares moved by up to {spread[widest]:.1%} ({names[widest]}); "
            f"median movement {np.median(spread):.1%}.")
    return Stability(seeds=list(seeds), spearman_mean=float(np.mean(pairs)),
                     spearman_min=float(np.min(pairs)), note=note)


def stability_key(projection: ProjectionConfig, model_fingerprint: str, mode: InfluenceMode) -> dict:
    """What a stability measurement applies to: the projection without its seed, model and mode."""
    return {"projection": projection.model_dump(exclude={"seed"}), "model": model_fingerprint, "mode": mode}
