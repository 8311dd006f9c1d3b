"""The `refresh-fisher` flow: a new projected-Fisher snapshot when enough has changed."""

from __future__ import annotations

from prefect import flow
from prefect.states import Failed, State
from pydantic import NonNegativeFloat

from tasks.fisher import RefreshOutcome, refresh
from tasks.params import RefreshParams, RefreshPolicy, Workspace, param


@flow(name="refresh-fisher", log_prints=True)
def refresh_fisher(
    workspace: Workspace = param("workspace"),
    damping: NonNegativeFloat = param("damping"),
    policy: RefreshPolicy = param("refresh"),
) -> RefreshOutcome | State:
    """Sum the shards' Fisher partials, eigendecompose, damp, and recompute self-influence.

    Runs when rows added since the last snapshot pass the policy's fraction, when the snapshot
    is older than its maximum age, when the damping differs from the snapshot's, or when forced.
    """
    params = RefreshParams(**locals())  # the parameters as the task takes them
    state = refresh(params, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)  # its one-line reason becomes the run's, without a traceback
    outcome = state.result()
    print(outcome.summary())
    return outcome
