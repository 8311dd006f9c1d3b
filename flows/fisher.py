"""The `refresh-fisher` flow: a new projected-Fisher snapshot when enough has changed."""

from __future__ import annotations

from prefect import flow
from prefect.states import Failed, State

from tasks.fisher import RefreshOutcome, refresh
from tasks.params import RefreshParams


@flow(name="refresh-fisher", log_prints=True)
def refresh_fisher(params: RefreshParams = RefreshParams()) -> RefreshOutcome | State:
    """Sum the shards' Fisher partials, eigendecompose, damp, and recompute self-influence.

    Runs when rows added since the last snapshot pass the policy's fraction, when the snapshot
    is older than its maximum age, or when forced.
    """
    state = refresh(params, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)  # its one-line reason becomes the run's, without a traceback
    outcome = state.result()
    print(outcome.summary())
    return outcome
