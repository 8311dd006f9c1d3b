"""Prefect tasks of the Fisher: decide whether a refresh is due, refresh, keep self-influence whole."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import get_run_logger, task

from scoring.normalization import normalize_rows, stored_normalization
from storage import GradientStore, StoreError

from .failures import fails_in_one_line
from .params import RefreshParams, RefreshPolicy
from .progress import RunProgress


@dataclass(frozen=True)
class RefreshOutcome:
    version: int | None
    refreshed: bool
    reason: str
    rows: int = 0

    def summary(self) -> str:
        what = f"refreshed to snapshot {self.version}" if self.refreshed else f"kept snapshot {self.version}"
        return f"Fisher {what}: {self.reason}"


def refresh_reason(store: GradientStore, policy: RefreshPolicy, now: datetime, damping: float) -> str | None:
    """Why a refresh is due now, or None if the latest snapshot still serves (a damping other than
    the snapshot's is an edit that applies only through a new snapshot, so it makes one due)."""
    if policy.force:
        return "forced"
    versions = store.snapshot_versions()
    if not versions:
        return "no snapshot yet"
    latest = store.load_snapshot(versions[-1])
    if not math.isclose(latest.fisher.alpha, damping):
        return f"damping {damping:g} differs from snapshot {latest.version}'s {latest.fisher.alpha:g}"
    new_rows = store.n_rows - latest.fisher.count
    if new_rows > policy.min_new_fraction * max(latest.fisher.count, 1):
        return f"{new_rows} new rows since snapshot {latest.version} (> {policy.min_new_fraction:.0%})"
    age_hours = (now - datetime.fromisoformat(latest.created_at)).total_seconds() / 3600
    if age_hours > policy.max_age_hours:
        return f"snapshot {latest.version} is {age_hours:.0f} h old (> {policy.max_age_hours:.0f} h)"
    return None


def has_normalized_sums(store: GradientStore, version: int) -> bool:
    try:
        store.provider_normalized_sums(version)
    except StoreError:
        return False
    return True


@task(name="refresh-fisher")
@fails_in_one_line
def refresh(params: RefreshParams) -> RefreshOutcome:
    """Refresh the snapshot when due; either way make sure every row has its self-influence."""
    logger = get_run_logger()
    store = GradientStore.open(params.workspace.store_url)
    if store.n_rows == 0:
        return RefreshOutcome(None, False, "the store has no rows yet")
    reason = refresh_reason(store, params.policy, datetime.now(UTC), params.damping)
    if reason:
        shards = [e.shard_hash for e in store.manifest]
        logger.info("Fisher refresh (%s): summing %d shards' partials and eigendecomposing", reason, len(shards))
        snapshot = store.fisher_partial(shards).snapshot(params.damping)
        version = store.save_snapshot(snapshot, shards)
        normalization = normalize_rows(store, snapshot, on_block=RunProgress(logger, "self-influence", store.n_rows,
                                                                             "rows"))
        store.save_self_influence(version, normalization.self_influence, normalization.provider_sums)
        logger.info("Fisher snapshot %d over %d rows: %s", version, snapshot.count, reason)
        return RefreshOutcome(version, True, reason, snapshot.count)
    latest = store.load_snapshot()
    covered = latest.self_influence_rows or 0
    if covered and not has_normalized_sums(store, latest.version):
        covered = 0  # a snapshot saved before provider sums existed: normalise every row again
    if covered < store.n_rows:
        # New rows under an old snapshot still need their normalisation for relatif scores.
        fresh = normalize_rows(store, latest.fisher, covered,
                               on_block=RunProgress(logger, "self-influence", store.n_rows - covered, "rows"))
        normalization = stored_normalization(store, latest.version) + fresh if covered else fresh
        store.save_self_influence(latest.version, normalization.self_influence, normalization.provider_sums)
        logger.info("self-influence of %d new rows under snapshot %d", store.n_rows - covered, latest.version)
    return RefreshOutcome(latest.version, False, "not due", latest.fisher.count)
