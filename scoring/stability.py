"""How much provider credit depends on chance in the projection.

The bootstrap band of a report resamples queries; it cannot see projection noise. This logs the
same corpus and queries under several variants of the projection and measures agreement of the
provider credits (Spearman over the query x provider credit matrix, for every pair of variants)
and the spread of each provider's share across them. A random projection's variants are its
seeds; PCA init has no seed, and what moves its credit is the data it is fitted on, so its
variants fit the PCA on different random halves of the examples (as evaluation.runner does).
With the sampled-label Fisher each variant also draws its own labels (`sample_seed` = variant):
they are chance in the credit as much as the projection is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import torch

from valuation import FisherConfig, LoGra, PreconditionedQueries, ProjectionConfig, influence_scores
from valuation.config import DEFAULT_MODE, InfluenceMode
from valuation.credit import credit_matrix, query_shares
from valuation.data import Example, SpecialTokens, providers_of
from valuation.pipeline import LoggingOptions, fit_pca, log_examples
from valuation.stats import spearman

from .results import Stability, Varies


def varies(projection: ProjectionConfig) -> Varies:
    return "calibration half" if projection.init == "pca" else "projection seed"


def calibration_size(examples: int, cap: int | None) -> int:
    """Examples a PCA variant is fitted on: half of them, at most `cap` (the store's
    calibration_examples), so the measurement redraws data of the size the store was fitted on."""
    half = max(1, examples // 2)
    return half if cap is None else min(half, cap)


def _variant(model, tokenizer, examples: Sequence[Example], projection: ProjectionConfig, variant: int,
             fisher: FisherConfig, options: LoggingOptions, calibration_examples: int | None) -> LoGra:
    """LoGra add-ons for one variant: the seed's random projection, or PCA fitted on the variant's half."""
    if projection.init != "pca":
        return LoGra(model, projection.model_copy(update={"seed": variant}))
    rng = np.random.default_rng(variant)
    half = sorted(rng.permutation(len(examples))[: calibration_size(len(examples), calibration_examples)].tolist())
    projections = fit_pca(model, tokenizer, [examples[i] for i in half], projection, options, fisher=fisher)
    return LoGra(model, projection, projections=projections)


def credit_under(logra: LoGra, tokenizer, examples: Sequence[Example], queries: Sequence[Example], *,
                 fisher: FisherConfig, mode: InfluenceMode, options: LoggingOptions) -> tuple[list[str], np.ndarray]:
    """(provider names, queries x providers credit) through `logra`'s add-ons, which it removes."""
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


def credit_stability(model, tokenizer, examples: Sequence[Example], queries: Sequence[Example], *,
                     projection: ProjectionConfig, variants: Sequence[int], fisher: FisherConfig | None = None,
                     mode: InfluenceMode = DEFAULT_MODE, options: LoggingOptions = LoggingOptions(),
                     snapshot: int | None = None, calibration_examples: int | None = None) -> Stability:
    """Stability of the credit under `variants` of `projection` (seeds, or calibration halves for PCA,
    each of at most `calibration_examples`), and of the sampled labels where the Fisher samples them."""
    if len(variants) < 2:
        raise ValueError("stability needs at least two variants (seeds)")
    fisher = (fisher or FisherConfig()).resolved(classifier=False)  # the pipeline logs language models
    redraws_labels = fisher.estimator == "true"
    fitted_on = calibration_size(len(examples), calibration_examples) if projection.init == "pca" else None
    credits = {}
    for variant in variants:
        drawn = fisher.model_copy(update={"sample_seed": variant}) if redraws_labels else fisher
        logra = _variant(model, tokenizer, examples, projection, variant, drawn, options, calibration_examples)
        names, credits[variant] = credit_under(logra, tokenizer, examples, queries, fisher=drawn, mode=mode,
                                               options=options)
    pairs = [spearman(credits[a], credits[b]) for a, b in itertools.combinations(variants, 2)]
    # The reports' headline share, so the spread is in the unit the page shows.
    shares = np.stack([query_shares(credits[v]) for v in variants])
    spread = shares.max(axis=0) - shares.min(axis=0)
    return Stability(
        varies=varies(projection), variants=list(variants),
        spearman_mean=float(np.mean(pairs)), spearman_min=float(np.min(pairs)),
        share_spread={name: float(s) for name, s in zip(names, spread)},
        share_spread_median=float(np.median(spread)),
        examples=len(examples), queries=len(queries), measured_at=datetime.now(UTC), snapshot=snapshot,
        calibration_examples=fitted_on, labels_redrawn=redraws_labels,
    )


def stability_key(projection: ProjectionConfig, model_fingerprint: str, mode: InfluenceMode,
                  special_tokens: SpecialTokens) -> dict:
    """What a stability measurement applies to: the projection without its seed, model, mode and
    the BOS/EOS setting the examples were tokenised with."""
    key = {"projection": projection.model_dump(exclude={"seed"}), "model": model_fingerprint, "mode": mode}
    if special_tokens != SpecialTokens():  # the default keeps the key of measurements saved before the setting
        key["special_tokens"] = special_tokens.model_dump()
    return key
