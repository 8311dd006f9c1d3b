"""Measure how provider credit moves with the projection seed, for the reports' honesty note."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from scoring.queries import QuerySet
from scoring.stability import credit_stability, stability_key
from valuation.fingerprint import model_fingerprint
from valuation.pipeline import LoggingOptions

from .models import fitted_max_length, load_model, model_path
from .params import NightlyParams
from .shards import discover_shards, validate_shard


def measure_stability(params: NightlyParams, seeds: Sequence[int]) -> Path:
    """Log the landing shards' valid examples and the queries under each seed; save the result
    where the score task picks it up for reports made under the same projection, model and mode."""
    model, tokenizer = load_model(model_path(params.model, params.workspace))
    examples = [e for ref in discover_shards(params.landing).shards for e in validate_shard(ref).examples]
    if not examples:
        raise ValueError(f"no valid examples in {params.landing}")
    queries = QuerySet.load(params.queries).examples
    stability = credit_stability(
        model, tokenizer, examples, queries, projection=params.projection, variants=seeds,
        fisher=params.fisher, mode=params.mode,
        options=LoggingOptions(params.model.batch_size, fitted_max_length(params.model.max_length, model, tokenizer)),
    )
    key = stability_key(params.projection, model_fingerprint(model)["fingerprint"], params.mode)
    path = params.workspace.stability
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "stability": stability.model_dump()}, indent=2))
    print(f"Spearman of provider credit across {stability.varies}s {list(seeds)}: mean {stability.spearman_mean:.2f}, "
          f"min {stability.spearman_min:.2f}; shares moved by a median of {stability.share_spread_median:.1%}."
          f"\nsaved to {path}")
    return path
