"""Deployments of every flow, served from this process so the UI and the schedule can run them.

`dataworth serve` registers them and keeps serving; for work-pool deployments see prefect.yaml.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import serve
from prefect.schedules import Cron, Schedule

from tasks.params import NightlyParams

from .fisher import refresh_fisher
from .ingest import ingest
from .nightly import nightly_valuation
from .score import score

TAGS = ["dataworth"]
# One name per deployment, so the UI's deployment list tells them apart without the flow's name.
NAMES = {"nightly-valuation": "nightly", "ingest": "ingest-on-demand", "refresh-fisher": "refresh-fisher-on-demand",
         "score": "score-on-demand"}


def nightly_schedule(cron: str, timezone: str) -> Schedule:
    """The nightly cron in `timezone`, or a one-line ValueError naming which of the two is wrong."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {timezone!r} is not an IANA name (e.g. UTC, Europe/Berlin)") from None
    try:
        return Cron(cron, timezone=timezone)
    except ValueError:
        raise ValueError(f"cron {cron!r} is not a cron expression (minute hour day month weekday, "
                         "e.g. '0 2 * * *')") from None


def build_deployments(params: NightlyParams, cron: str = "0 2 * * *", timezone: str = "UTC") -> list:
    """nightly-valuation on a cron (in `timezone`); the other flows on demand from the UI.

    `params` are every deployment's defaults (the UI form starts from them); the on-demand flows
    take their share of them, so all four work on the same workspace, landing and model. Each
    field is a parameter of its own, so a run given `{"mode": "relatif"}` keeps the rest.
    """
    def defaults(model) -> dict:
        # The API stores parameters as JSON; the UI validates edits against the flow's schema.
        return model.model_dump(mode="json")

    return [
        nightly_valuation.to_deployment(
            name=NAMES["nightly-valuation"],
            schedules=[nightly_schedule(cron, timezone)],
            parameters=defaults(params),
            description="Ingest new shards, refresh the Fisher if due, score the standing queries, report.",
            tags=TAGS,
        ),
        ingest.to_deployment(name=NAMES["ingest"], tags=TAGS, parameters=defaults(params.ingest()),
                             description="Log and commit the landing location's new shards now."),
        refresh_fisher.to_deployment(name=NAMES["refresh-fisher"], tags=TAGS,
                                     parameters=defaults(params.refresh_fisher()),
                                     description="Recompute the Fisher snapshot when due (or forced)."),
        score.to_deployment(name=NAMES["score"], tags=TAGS, parameters=defaults(params.score()),
                            description="Score a query set against the store and publish its report."),
    ]


def serve_deployments(params: NightlyParams, cron: str = "0 2 * * *", timezone: str = "UTC") -> None:
    """Register the deployments and run their flow runs in this process until interrupted."""
    serve(*build_deployments(params, cron, timezone))
