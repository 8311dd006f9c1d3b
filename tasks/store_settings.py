"""Settings that an existing store fixes: a run asking for others is refused, not silently ignored.

A store's rows are logged under one projection and its Fisher partials summed under one
estimator, so neither can change once rows exist: rows under another projection cannot be
compared with them, and Fisher sums of two estimators do not add up. A run whose parameters ask
for other values (an edit in the UI form, a CLI flag) would otherwise complete with the store's
own settings and say nothing.
"""

from __future__ import annotations

from storage import GradientStore
from storage.schema import fisher_identity
from valuation.config import FisherConfig, ProjectionConfig

from .models import lm_fisher


def _differences(mine: dict, theirs: dict) -> list[str]:
    return [f"{key} {mine.get(key)!r} (asked {theirs.get(key)!r})"
            for key in sorted(mine.keys() | theirs.keys()) if mine.get(key) != theirs.get(key)]


def settings_conflict(store: GradientStore, projection: ProjectionConfig, fisher: FisherConfig) -> str | None:
    """Why `projection` and `fisher` cannot apply to `store`, in one line, or None when they match it."""
    changed = [f"projection.{d}" for d in _differences(store.spec.config.model_dump(mode="json"),
                                                        projection.model_dump(mode="json"))]
    changed += [f"fisher.{d}" for d in _differences(fisher_identity(store.attributes.fisher),
                                                     fisher_identity(lm_fisher(fisher)))]
    if not changed:
        return None
    return (f"the store {store.url} was made with {', '.join(changed)}: an existing store keeps the projection "
            "and Fisher estimator it was made with: give a new workspace (workspace.root) for these settings, "
            "or set them back to keep this store")
