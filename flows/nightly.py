"""The `nightly-valuation` flow: ingest, refresh the Fisher if due, measure stability if due, score, report."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from tasks.fisher import RefreshOutcome
from tasks.ingest import open_store
from tasks.params import (
    ModelParams,
    NightlyParams,
    RefreshPolicy,
    StabilityPolicy,
    TopK,
    Workspace,
    flow_kwargs,
    param,
)
from tasks.planning import IngestSummary
from tasks.scoring import ScoreOutcome, republish_artifacts
from tasks.stability import stability_when_due
from tasks.store_settings import settings_conflict
from valuation.config import FisherConfig, InfluenceMode, ProjectionConfig

from .fisher import refresh_fisher
from .ingest import ingest
from .score import score


@dataclass
class NightlySummary:
    ingest: IngestSummary | None
    refresh: RefreshOutcome
    score: ScoreOutcome

    def summary(self) -> str:
        parts = [self.ingest.summary() if self.ingest else "ingest failed"]
        parts += [self.refresh.summary(), self.score.summary()]
        return "\n".join(parts)


@flow(name="nightly-valuation", log_prints=True)
def nightly_valuation(
    workspace: Workspace = param("workspace"),
    landing: str = param("landing"),
    queries: str = param("queries"),
    model: ModelParams = param("model"),
    projection: ProjectionConfig = param("projection"),
    fisher: FisherConfig = param("fisher"),
    calibration_examples: PositiveInt = param("calibration_examples"),
    refresh: RefreshPolicy = param("refresh"),
    stability: StabilityPolicy = param("stability"),
    max_shard_mb: PositiveFloat = param("max_shard_mb"),
    settle_seconds: NonNegativeFloat = param("settle_seconds"),
    generate_max_new_tokens: NonNegativeInt = param("generate_max_new_tokens"),
    mode: InfluenceMode = param("mode"),
    top_k: TopK = param("top_k"),
    dask_address: str | None = param("dask_address"),
) -> State:
    """Ingest the night's new shards, refresh the projected Fisher when due, measure the credit's
    stability when due, score the standing queries and publish the provider reports (on this run's
    Artifacts tab, and its `score` subflow's).

    A quarantined shard does not stop the night: good shards are committed and scored, and the
    run ends Failed with the reason so it shows in the UI. Projection or Fisher settings other
    than the existing store's stop it at once, before anything is done.
    """
    params = NightlyParams(**locals())  # the parameters as the subflows take them, before any other name exists
    logger = get_run_logger()
    existing = open_store(params.workspace.store_url, read_only=True)
    if existing is not None and (conflict := settings_conflict(existing, params)):
        logger.error(conflict)
        return Failed(message=conflict)
    ingest_state = ingest(**flow_kwargs(params.ingest()), return_state=True)
    outcome = ingest_state.result(raise_on_failure=False)
    ingest_summary = outcome if isinstance(outcome, IngestSummary) else None
    store = open_store(params.workspace.store_url, read_only=True)
    if store is None or store.n_rows == 0:
        return Failed(message=f"no committed rows in {params.workspace.store_url} yet: nothing to score "
                      f"(ingestion: {ingest_state.message})")
    refreshed = refresh_fisher(**flow_kwargs(params.refresh_fisher()), return_state=True)
    if refreshed.is_failed():
        return Failed(message=f"Fisher refresh: {refreshed.message}")
    # Before scoring, so tonight's report shows a measurement made for it; a failure costs the
    # report its fresh stability line (it keeps the last one), never the night.
    measured = stability_when_due(params, return_state=True)
    if measured.is_failed():
        logger.warning("stability: %s; the report shows the last measurement, if any", measured.message)
    scored_state = score(**flow_kwargs(params.score()), return_state=True)
    if scored_state.is_failed():
        return Failed(message=f"scoring: {scored_state.message}")
    refresh_outcome, scored = refreshed.result(), scored_state.result()
    assert isinstance(refresh_outcome, RefreshOutcome) and isinstance(scored, ScoreOutcome)  # completed runs' results
    # The run the operator opens is this one, not the subflow: its Artifacts tab shows the report too.
    republish_artifacts(scored, params.workspace)
    summary = NightlySummary(ingest_summary, refresh_outcome, scored)
    print(summary.summary())
    if not ingest_state.is_completed():
        logger.error("ingestion: %s", ingest_state.message)
        return Failed(message=f"ingestion: {ingest_state.message}; scored what was committed", data=summary)
    return Completed(message=scored.summary().splitlines()[-1], data=summary)
