"""Deployments as the UI uses them: `dataworth server` on a port of its own, `dataworth serve`
registering the deployments, a run started through the API with one field changed as the UI's form
sends it, completing with the report on its own page (screenshots in tests/output/ui/); and
prefect.yaml. (`dataworth server` itself: tests/test_server.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.exceptions import PrefectHTTPStatusError
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.deployments import build_deployments
from tasks.params import NightlyParams, StabilityPolicy

from .browser import Page, find_browser
from .flow_fixtures import SAMPLE_SHARDS, land, nightly_params
from .processes import DATAWORTH, REPO, dataworth_server, free_port, stop, tail, wait_for

SCREENSHOTS = Path(__file__).parent / "output" / "ui"  # kept after the run (tests/output is git-ignored)


@pytest.fixture
def served_api(tmp_path):
    """The API URL of a `dataworth server` of this test's own."""
    with dataworth_server(tmp_path) as server:
        yield server.api


@pytest.mark.slow
def test_a_run_started_like_the_ui_with_one_field_changed_shows_its_report(tmp_path, sample_model_dir,
                                                                          served_api):
    """What an operator does: open the served nightly deployment on a server of its own port, start a
    run changing one field, and read the report on that run's page."""
    api = served_api
    ui = api.removesuffix("/api")
    assert httpx.get(f"{ui}/ui-settings", timeout=5).json()["api_url"] == api  # the UI talks to this server
    # Stability measurements are tested elsewhere (tests/test_flows.py): off here, through the file.
    params = nightly_params(tmp_path, sample_model_dir, stability=StabilityPolicy(enabled=False))
    (tmp_path / "night.json").write_text(json.dumps({"stability": {"enabled": False}, "mode": "cosine"}))
    land(params, SAMPLE_SHARDS[0])
    reports_port = free_port()
    # The runner otherwise looks for new runs every 10 s.
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serving = subprocess.Popen(
            [str(DATAWORTH), "serve", "--params", str(tmp_path / "night.json"), "--mode", params.mode,  # flag wins
             "--workspace", params.workspace.root, "--landing", params.landing, "--model", params.model.name_or_path,
             "--timezone", "Europe/Berlin", "--reports-port", str(reports_port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployments = {
                name: wait_for(partial(client.read_deployment_by_name, name), 120, f"deployment {name}", log)
                for name in ("nightly-valuation/nightly", "ingest/ingest-on-demand",
                             "refresh-fisher/refresh-fisher-on-demand", "score/score-on-demand")
            }
            deployment = deployments["nightly-valuation/nightly"]
            # The form starts from the served defaults, one field per parameter.
            assert deployment.parameters == params.model_dump(mode="json")
            assert deployment.enforce_parameter_schema and deployment.parameter_openapi_schema["properties"]["mode"]
            assert deployments["score/score-on-demand"].parameters["model"] == params.model.model_dump()
            [schedule] = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/Berlin")

            # A run given one field, as the UI, `prefect deployment run --param` or an automation
            # sends it: validated against the schema, merged over the deployment's other defaults.
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployment.id, parameters={"top_k": 0})
            assert refused.value.response.status_code in (409, 422)
            flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"mode": "relatif"})
            final = wait_for(
                lambda: (state := client.read_flow_run(flow_run.id).state).is_final() and state,
                300, "the flow run to finish", log,
            )
            assert final.is_completed(), f"{final.name}: {final.message}\n{tail(log)}"
            ran_with = client.read_flow_run(flow_run.id).parameters
            assert ran_with["mode"] == "relatif" and ran_with["workspace"] == params.workspace.model_dump()
            [report] = params.workspace.reports.glob("*/report.json")
            assert json.loads(report.read_text())["provenance"]["influence_mode"] == "relatif"

            # The report is on the run the operator opened, not only on its `score` subflow.
            artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))}
            key = params.workspace.key
            assert {f"{kind}-{key}" for kind in ("provider-credit", "valuation-report", "valuation-report-html")
                    } <= set(artifacts)
            credit = artifacts[f"provider-credit-{key}"]
            landed = {json.loads(line)["provider"] for line in SAMPLE_SHARDS[0].read_text().splitlines()}
            assert {row["provider"] for row in json.loads(credit.data)} == landed  # stored as JSON text
            assert "# Data contribution report" in artifacts[f"valuation-report-{key}"].data
            # The HTML report's link opens from a browser on this host (file:// links do not).
            link = re.fullmatch(r"\[.*\]\((.*)\)", artifacts[f"valuation-report-html-{key}"].data).group(1)
            assert link.startswith(f"http://127.0.0.1:{reports_port}/")
            assert "<h1>Data contribution report</h1>" in httpx.get(link, timeout=10).text

        if browser := find_browser():  # what the operator sees: the form, the run's Artifacts tab, the report
            shutil.rmtree(SCREENSHOTS, ignore_errors=True)
            SCREENSHOTS.mkdir(parents=True)
            with Page(browser, tmp_path / "chromium") as page:
                page.open(f"{ui}/deployments/deployment/{deployment.id}/run", "top_k")
                page.screenshot(SCREENSHOTS / "deployment-form.png")
                page.open(f"{ui}/runs/flow-run/{flow_run.id}", "Subflow Runs")
                page.click("Artifacts", then=f"provider-credit-{key}")
                page.screenshot(SCREENSHOTS / "run-artifacts.png")
                report_artifact = artifacts[f"valuation-report-{key}"].id
                page.open(f"{ui}/artifacts/artifact/{report_artifact}", "Data contribution report")
                page.screenshot(SCREENSHOTS / "report-artifact.png")

        # A service manager's SIGTERM stops the serving process, and the reports server with it.
        serving.terminate()
        serving.wait(timeout=30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(link, timeout=2)
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
