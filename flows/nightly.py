"""The `nightly-valuation` flow: ingest, refresh the Fisher if due, measure stability if due, score, report."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from tasks.fisher import RefreshOutcome
from tasks.ingest import open_store
from tasks.params import NightlyParams
from tasks.planning import IngestSummary
from tasks.scoring import ScoreOutcome
from tasks.stability import stability_when_due

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
def nightly_valuation(params: NightlyParams = NightlyParams()) -> State:
    """Ingest the night's new shards, refresh the projected Fisher when due, measure the credit's
    stability when due, score the standing queries and publish the provider reports.

    A quarantined shard does not stop the night: good shards are committed and scored, and the
    run ends Failed with the reason so it shows in the UI.
    """
    logger = get_run_logger()
    ingest_state = ingest(params.ingest(), return_state=True)
    outcome = ingest_state.result(raise_on_failure=False)
    ingest_summary = outcome if isinstance(outcome, IngestSummary) else None
    store = open_store(params.workspace.store_url, read_only=True)
    if store is None or store.n_rows == 0:
        return Failed(message=f"no committed rows in {params.workspace.store_url} yet: nothing to score "
                      f"(ingestion: {ingest_state.message})")
    refreshed = refresh_fisher(params.refresh_fisher(), return_state=True)
    if refreshed.is_failed():
        return Failed(message=f"Fisher refresh: {refreshed.message}")
    # Before scoring, so tonight's report shows a measurement made for it; a failure costs the
    # report its fresh stability line (it keeps the last one), never the night.
    stability = stability_when_due(params, return_state=True)
    if stability.is_failed():
        logger.warning("stability: %s; the report shows the last measurement, if any", stability.message)
    scored_state = score(params.score(), return_state=True)
    if scored_state.is_failed():
        return Failed(message=f"scoring: {scored_state.message}")
    refresh, scored = refreshed.result(), scored_state.result()
    assert isinstance(refresh, RefreshOutcome) and isinstance(scored, ScoreOutcome)  # what completed runs return
    summary = NightlySummary(ingest_summary, refresh, scored)
    print(summary.summary())
    if not ingest_state.is_completed():
        logger.error("ingestion: %s", ingest_state.message)
        return Failed(message=f"ingestion: {ingest_state.message}; scored what was committed", data=summary)
    return Completed(message=scored.summary().splitlines()[-1], data=summary)
