"""Deployments as the UI uses them: `dataworth serve` registers them against a real Prefect API, a
run is started through the API with the form's JSON, and it completes with its report artifact.
And `dataworth server` itself: a Prefect API that listens on loopback only; and prefect.yaml."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import psutil
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
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL

from flows.deployments import build_deployments
from tasks.params import NightlyParams

from .flow_fixtures import SAMPLE_SHARDS, land, nightly_params

REPO = Path(__file__).resolve().parent.parent
DATAWORTH = Path(sys.executable).with_name("dataworth")


def wait_for(probe, timeout: float, what: str, log: Path):
    """Call `probe` until it returns something truthy; ObjectNotFound counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if found := probe():
                return found
        except ObjectNotFound:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; its log ends:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


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


def stop(process: subprocess.Popen) -> None:
    """End the process and its children (the flow runs it started): its whole session."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # nothing of it is left
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_the_server_listens_on_loopback_only_and_is_healthy(tmp_path):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(DATAWORTH), "server", "--port", str(port)], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    health = f"http://127.0.0.1:{port}/api/health"
    try:
        def healthy():
            assert server.poll() is None, f"the server exited:\n{tail(log)}"
            try:
                return httpx.get(health, timeout=2).json() is True
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, f"the health endpoint on port {port}", log)
        listening = {c.laddr.ip for c in psutil.net_connections("inet")
                     if c.laddr.port == port and c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}

        # A service manager stops the process it started: the server itself, not a wrapper over it.
        server.terminate()
        server.wait(timeout=30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(health, timeout=2)
    finally:
        stop(server)


def test_prefect_yaml_deploys_what_serve_does_with_valid_parameters():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    served = {(d.flow_name, d.name, d.entrypoint) for d in build_deployments(NightlyParams())}
    from_yaml = set()
    for deployment in deployments:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        flow.validate_parameters(deployment["parameters"])  # raises on a field the models lack
        from_yaml.add((flow.name, deployment["name"], deployment["entrypoint"]))
    assert from_yaml == served
