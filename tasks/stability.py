"""Measure how provider credit moves when the projection is redrawn, for the reports' stability
line: nightly when it is due (tasks.params.StabilityPolicy), or on demand (`dataworth stability`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from prefect import task
from pydantic import ValidationError

from scoring.queries import QuerySet
from scoring.results import Stability
from scoring.stability import credit_stability, stability_key
from storage import GradientStore
from valuation.data import Example
from valuation.fingerprint import model_fingerprint
from valuation.pipeline import autocast_dtype_for, resolve_device

from .failures import fails_in_one_line
from .ingest import open_store
from .models import lm_fisher, load_model, logging_options, model_path
from .params import NightlyParams
from .shards import discover_shards, validate_shard
from .store_settings import store_special_tokens


def saved_stability(path: Path, key: dict) -> Stability | None:
    """The measurement saved at `path` if it was made for `key` (projection, model and mode)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        return Stability.model_validate(saved["stability"]) if saved.get("key") == key else None
    except (ValueError, KeyError, AttributeError, ValidationError):  # written by an older version, or torn
        return None


def store_key(store: GradientStore, params: NightlyParams) -> dict:
    return stability_key(store.spec.config, store.model_fingerprint["fingerprint"], params.mode,
                         store_special_tokens(store))


def latest_snapshot(store: GradientStore) -> int | None:
    versions = store.snapshot_versions()
    return max(versions) if versions else None


def stability_due(params: NightlyParams, store: GradientStore, now: datetime | None = None) -> str | None:
    """Why the nightly run should measure stability now; None when it is off or the saved one is fresh:
    made for this projection, model and mode, at the store's latest Fisher snapshot, recently enough."""
    policy = params.stability
    if not policy.enabled:
        return None
    saved = saved_stability(params.workspace.stability, store_key(store, params))
    if saved is None:
        return "no measurement for this projection, model and mode"
    snapshot = latest_snapshot(store)
    if saved.snapshot != snapshot:
        return f"measured at Fisher snapshot {saved.snapshot}, the store is at {snapshot}"
    age = (now or datetime.now(UTC)) - saved.measured_at
    if age > timedelta(hours=policy.max_age_hours):
        return f"measured {age.total_seconds() / 3600:.0f} hours ago (max_age_hours {policy.max_age_hours:g})"
    return None


def landing_examples(landing: str, limit: int | None = None) -> list[Example]:
    """The landing shards' valid examples; a seeded sample of `limit` of them when there are more."""
    examples = [e for ref in discover_shards(landing).shards for e in validate_shard(ref).examples]
    if not examples:
        raise ValueError(f"no valid examples in {landing}")
    if limit is not None and len(examples) > limit:
        keep = np.random.default_rng(0).choice(len(examples), size=limit, replace=False)
        examples = [examples[i] for i in sorted(keep.tolist())]
    return examples


def measure_stability(params: NightlyParams, variants: Sequence[int], *, snapshot: int | None = None,
                      max_examples: int | None = None) -> Stability:
    """Log the landing shards' examples and the queries under each variant; save the result where
    the score task picks it up for reports made under the same projection, model and mode."""
    model, tokenizer = load_model(model_path(params.model, params.workspace))
    device = resolve_device(params.model.device)
    model = model.to(device)
    examples = landing_examples(params.landing, max_examples)
    queries = QuerySet.load(params.queries).examples
    options = logging_options(params.model, model, tokenizer, autocast_dtype_for(device, params.model.precision))
    stability = credit_stability(
        model, tokenizer, examples, queries, projection=params.projection, variants=variants,
        fisher=lm_fisher(params.fisher), mode=params.mode, options=options, snapshot=snapshot,
        calibration_examples=params.calibration_examples,
    )
    key = stability_key(params.projection, model_fingerprint(model)["fingerprint"], params.mode,
                        params.model.special_tokens)
    path = params.workspace.stability
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")  # the score task reads the old file or the new one
    partial.write_text(json.dumps({"key": key, "stability": stability.model_dump(mode="json")}, indent=2))
    partial.replace(path)
    return stability


def measure_on_demand(params: NightlyParams, variants: Sequence[int]) -> str:
    """`dataworth stability`: measure now, at the store's latest snapshot if there is a store yet
    (so the nightly run counts the measurement as fresh)."""
    store = open_store(params.workspace.store_url, read_only=True)
    stability = measure_stability(params, variants, snapshot=latest_snapshot(store) if store else None)
    return f"{describe(stability)}\nsaved to {params.workspace.stability}"


def describe(stability: Stability) -> str:
    fitted = "" if stability.calibration_examples is None else f", PCA fitted on {stability.calibration_examples} each"
    return (f"Spearman of provider credit across {stability.redrawn(plural=True)} {stability.variants}: mean "
            f"{stability.spearman_mean:.2f}, min {stability.spearman_min:.2f}; shares moved by a median of "
            f"{stability.share_spread_median:.1%} ({stability.examples} examples{fitted}, {stability.queries} queries)")


@task(name="measure-stability")
@fails_in_one_line
def stability_when_due(params: NightlyParams) -> str:
    """The nightly's stability step: measure when due, else keep the saved measurement."""
    store = GradientStore.open(params.workspace.store_url, read_only=True)
    reason = stability_due(params, store)
    if reason is None:
        return "stability: " + ("off (stability.enabled)" if not params.stability.enabled else "the saved one is fresh")
    policy = params.stability
    stability = measure_stability(params, policy.variants, snapshot=latest_snapshot(store),
                                  max_examples=policy.max_examples)
    message = f"stability measured ({reason}): {describe(stability)}"
    print(message)
    return message
