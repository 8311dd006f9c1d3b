"""Deployments of every flow, served from this process so the UI and the schedule can run them.

`dataworth serve` registers them and keeps serving; for work-pool deployments see prefect.yaml.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from .fisher import refresh_fisher
from .ingest import ingest
from .nightly import nightly_valuation
from .params import IngestParams, NightlyParams, RefreshParams, ScoreParams, Workspace
from .score import score

TAGS = ["dataworth"]


def build_deployments(workspace: Workspace, cron: str = "0 2 * * *", timezone: str = "UTC") -> list:
    """nightly-valuation on a cron (in `timezone`); the other flows on demand from the UI."""
    as_json = {"mode": "json"}
    return [
        nightly_valuation.to_deployment(
            name="nightly",
            schedules=[Cron(cron, timezone=timezone)],
            parameters={"params": NightlyParams(workspace=workspace).model_dump(**as_json)},
            description="Ingest new shards, refresh the Fisher if due, score the standing queries, report.",
            tags=TAGS,
        ),
        ingest.to_deployment(name="on-demand", tags=TAGS,
                             parameters={"params": IngestParams(workspace=workspace).model_dump(**as_json)}),
        refresh_fisher.to_deployment(name="on-demand", tags=TAGS,
                                     parameters={"params": RefreshParams(workspace=workspace).model_dump(**as_json)}),
        score.to_deployment(name="on-demand", tags=TAGS,
                            parameters={"params": ScoreParams(workspace=workspace).model_dump(**as_json)}),
    ]


def serve_deployments(workspace: Workspace, cron: str = "0 2 * * *", timezone: str = "UTC") -> None:
    """Register the deployments and run their flow runs in this process until interrupted."""
    serve(*build_deployments(workspace, cron, timezone))
