"""Deployments of every flow, served from this process so the UI and the schedule can run them.

`dataworth serve` registers them and keeps serving; for work-pool deployments see prefect.yaml.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from tasks.params import NightlyParams

from .fisher import refresh_fisher
from .ingest import ingest
from .nightly import nightly_valuation
from .score import score

TAGS = ["dataworth"]


def build_deployments(params: NightlyParams, cron: str = "0 2 * * *", timezone: str = "UTC") -> list:
    """nightly-valuation on a cron (in `timezone`); the other flows on demand from the UI.

    `params` are every deployment's defaults (the UI form starts from them); the on-demand flows
    take their share of them, so all four work on the same workspace, landing and model.
    """
    def defaults(model) -> dict:
        # The API stores parameters as JSON; the UI validates edits against the model's schema.
        return {"params": model.model_dump(mode="json")}

    return [
        nightly_valuation.to_deployment(
            name="nightly",
            schedules=[Cron(cron, timezone=timezone)],
            parameters=defaults(params),
            description="Ingest new shards, refresh the Fisher if due, score the standing queries, report.",
            tags=TAGS,
        ),
        ingest.to_deployment(name="on-demand", tags=TAGS, parameters=defaults(params.ingest())),
        refresh_fisher.to_deployment(name="on-demand", tags=TAGS, parameters=defaults(params.refresh_fisher())),
        score.to_deployment(name="on-demand", tags=TAGS, parameters=defaults(params.score())),
    ]


def serve_deployments(params: NightlyParams, cron: str = "0 2 * * *", timezone: str = "UTC") -> None:
    """Register the deployments and run their flow runs in this process until interrupted."""
    serve(*build_deployments(params, cron, timezone))
