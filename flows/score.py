"""The `score` flow: value a query set against the store and publish per-provider reports."""

from __future__ import annotations

from prefect import flow
from prefect.states import Failed, State

from tasks.params import ScoreParams
from tasks.scoring import ScoreOutcome, score_and_report


@flow(name="score", log_prints=True)
def score(params: ScoreParams = ScoreParams()) -> ScoreOutcome | State:
    """Query gradients under the store's projection, preconditioned by a Fisher snapshot, scored
    with Dask over every stored row; reports as files and Prefect artifacts."""
    state = score_and_report(params, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)  # its one-line reason becomes the run's, without a traceback
    outcome = state.result()
    print(outcome.summary())
    return outcome
