"""Deployments as the UI uses them: `dataworth serve` registers them against a real Prefect API, a
run is started through the API with the form's JSON, and it completes with its report artifact;
and prefect.yaml. (`dataworth server` itself: tests/test_server.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from functools import partial

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)
from prefect.exceptions import PrefectHTTPStatusError
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL

from flows.deployments import build_deployments
from tasks.params import NightlyParams

from .flow_fixtures import SAMPLE_SHARDS, land, nightly_params
from .processes import DATAWORTH, REPO, stop, tail, wait_for


def run_and_its_subflows(client, flow_run_id) -> list:
    # nightly-valuation calls `score` as a subflow, so the report artifact belongs to that child.
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
    )
    return [flow_run_id, *(child.id for child in children)]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_served_deployment_runs_from_the_api_like_the_ui(tmp_path, sample_model_dir):
    params = nightly_params(tmp_path, sample_model_dir)
    land(params, SAMPLE_SHARDS[0])
    # The runner otherwise looks for new runs every 10 s.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serving = subprocess.Popen(
            [str(DATAWORTH), "serve", "--workspace", params.workspace.root, "--landing", params.landing,
             "--model", params.model.name_or_path, "--timezone", "Europe/Berlin"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        with get_client(sync_client=True) as client:
            deployments = {
                name: wait_for(partial(client.read_deployment_by_name, name), 60, f"deployment {name}", log)
                for name in ("nightly-valuation/nightly", "ingest/on-demand", "refresh-fisher/on-demand",
                             "score/on-demand")
            }
            deployment = deployments["nightly-valuation/nightly"]
            # The form starts from the served defaults.
            assert deployment.parameters == {"params": params.model_dump(mode="json")}
            assert deployment.enforce_parameter_schema and deployment.parameter_openapi_schema["properties"]["params"]
            assert deployments["score/on-demand"].parameters["params"]["model"] == params.model.model_dump()
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/Berlin")

            # What the UI's form sends: the whole model as JSON, validated against its schema.
            form = params.model_dump(mode="json")
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployment.id, parameters={"params": form | {"top_k": 0}})
            assert refused.value.response.status_code in (409, 422)

            flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": form | {"top_k": 3}})
            final = wait_for(
                lambda: (state := client.read_flow_run(flow_run.id).state).is_final() and state,
                75, "the flow run to finish", log,
            )
            assert final.is_completed(), f"{final.name}: {final.message}\n{tail(log)}"
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["provider-credit"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=run_and_its_subflows(client, flow_run.id)),
            ))
            [credit] = artifacts
            landed = {json.loads(line)["provider"] for line in SAMPLE_SHARDS[0].read_text().splitlines()}
            assert {row["provider"] for row in json.loads(credit.data)} == landed  # stored as JSON text
    finally:
        stop(serving)


def test_prefect_yaml_deploys_what_serve_does_with_valid_parameters():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    served = {(d.flow_name, d.name, d.entrypoint) for d in build_deployments(NightlyParams())}
    from_yaml = set()
    for deployment in deployments:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        flow.validate_parameters(deployment["parameters"])  # raises on a field the models lack
        from_yaml.add((flow.name, deployment["name"], deployment["entrypoint"]))
    assert from_yaml == served
