"""The `score` flow: value a query set against the store and publish per-provider reports."""

from __future__ import annotations

from prefect import flow
from prefect.states import Failed, State
from pydantic import NonNegativeInt, PositiveInt

from tasks.params import ModelParams, ScoreParams, TopK, Workspace, param
from tasks.scoring import ScoreOutcome, score_and_report
from valuation.config import InfluenceMode


@flow(name="score", log_prints=True)
def score(
    workspace: Workspace = param("workspace"),
    queries: str = param("queries"),
    generate_max_new_tokens: NonNegativeInt = param("generate_max_new_tokens"),
    model: ModelParams = param("model"),
    mode: InfluenceMode = param("mode"),
    snapshot: int | None = param("snapshot"),
    top_k: TopK = param("top_k"),
    task_rows: PositiveInt = param("task_rows"),
    dask_address: str | None = param("dask_address"),
) -> ScoreOutcome | State:
    """Query gradients under the store's projection, preconditioned by a Fisher snapshot, scored
    with Dask over every stored row; reports as files and Prefect artifacts."""
    params = ScoreParams(**locals())  # the parameters as the task takes them
    state = score_and_report(params, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)  # its one-line reason becomes the run's, without a traceback
    outcome = state.result()
    print(outcome.summary())
    return outcome
